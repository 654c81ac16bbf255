"""The backfill's memory budget: reservations never exceed the limit, nothing deadlocks, chunk sizes
follow the measured bytes per block."""

from __future__ import annotations

import asyncio
import random

import pytest

from indexer.backfill.load import MemoryBudget

pytestmark = pytest.mark.unit


async def test_concurrent_reservations_never_hold_more_than_the_limit() -> None:
    budget = MemoryBudget(1000)
    held = 0  # counted here, independently of the budget's own bookkeeping
    most = 0
    rng = random.Random(7)
    costs = [rng.randint(50, 400) for _ in range(200)]

    async def chunk(cost: int) -> None:
        nonlocal held, most
        await budget.reserve(cost)
        held += cost
        most = max(most, held)
        await asyncio.sleep(rng.random() / 1000)
        held -= cost
        await budget.release(cost)

    await asyncio.wait_for(asyncio.gather(*(chunk(c) for c in costs)), 30)
    assert most <= 1000 and held == 0 and budget.in_use == 0
    assert most >= 1000 - 400  # and the budget is used, not serialised


async def test_a_chunk_larger_than_the_limit_runs_alone() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []

    async def chunk(name: str, cost: int, hold: float) -> None:
        await budget.reserve(cost)
        order.append(f"+{name}")
        await asyncio.sleep(hold)
        order.append(f"-{name}")
        await budget.release(cost)

    await asyncio.wait_for(
        asyncio.gather(chunk("a", 60, 0.02), chunk("big", 250, 0.02), chunk("c", 60, 0.02)), 5
    )
    big = order.index("+big")
    assert order[big + 1] == "-big"  # nothing else held while the oversized chunk was
    assert order.index("-a") < big


async def test_the_chunk_whose_turn_it_is_is_granted_even_over_the_limit() -> None:
    """Later chunks hold the budget while they wait for an earlier one's enrichment turn: the
    earlier one must get in, or nothing moves."""
    budget = MemoryBudget(100)
    await budget.reserve(90)  # a later chunk, fetched, waiting for its turn
    await asyncio.wait_for(budget.reserve(50, lambda: True), 1)
    assert budget.in_use == 140 and budget.peak == 140
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(budget.reserve(50), 0.05)  # not its turn: waits


def test_chunk_size_follows_the_bytes_per_block() -> None:
    budget = MemoryBudget(256 * 2**20, expansion=4.0)
    budget.observe(10, 10 * 2**20)  # 1 MB of answers per block
    assert budget.cost(1) == 4 * 2**20
    assert budget.chunk_blocks(50, 2) == 32  # 128 MB per chunk / 4 MB per block
    assert budget.chunk_blocks(50, 32) == 2
    assert budget.chunk_blocks(50, 1000) == 1  # never below one block
    budget.observe(1, 3 * 2**20)  # a larger block raises the estimate at once
    assert budget.block_bytes == 3 * 2**20
    budget.observe(1, 2**20)  # smaller ones lower it slowly
    assert budget.block_bytes == pytest.approx(0.8 * 3 * 2**20 + 0.2 * 2**20)
