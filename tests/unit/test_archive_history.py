"""History for a replay, and how a chunk of minutes is split into buckets, on hand-written records."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from archive.history import Step, history
from archive.layout import Stream, Target
from archive.source import Bucket, split_minutes
from archive.writer import write_bucket
from records import Block, DexTrade, Pool, Token, Trade, kinds
from records.batch import Batch
from tests import every_kind

pytestmark = pytest.mark.unit

T0 = every_kind.BLOCK.timestamp - every_kind.BLOCK.timestamp % 60  # a minute's start
US = 1_000_000


def _block(n: int, ts: int) -> Block:
    return dataclasses.replace(every_kind.BLOCK, number=n, hash=f"0x{n:064x}", timestamp=ts)


def _trade(block: Block, log_index: int) -> DexTrade:
    return dataclasses.replace(
        every_kind.TRADE, block_number=block.number, block_hash=block.hash, log_index=log_index
    )


def _cex(at_s: float, trade_id: str) -> Trade:
    at = int(at_s * 1_000_000)
    return Trade("okx", "ETH-USDT", Decimal("3000.5"), Decimal("1"), "buy", trade_id, None, None, None, at)


def test_split_minutes_gives_each_minute_what_it_names() -> None:
    a, b = _block(1, T0 + 10), _block(2, T0 + 70)
    trade_a, trade_b = _trade(a, 0), _trade(b, 0)
    created = dataclasses.replace(every_kind.POOL_RECORD, created_block_number=2, created_block_hash=b.hash)
    named_only = next(p for p in every_kind.POOLS if p.address != created.address)
    trade_a = dataclasses.replace(trade_a, pool_address=named_only.address)
    batch = Batch(
        "t",
        [a, b],
        {DexTrade: [trade_a, trade_b], Pool: [created, named_only], Token: list(every_kind.TOKENS)},
    )
    first, second = split_minutes(batch, {1: T0 // 60, 2: T0 // 60 + 1})
    assert (first.minute, first.first_block, first.last_block) == (T0 // 60, 1, 1)
    assert first.records[Block] == [a] and first.records[DexTrade] == [trade_a]
    assert first.records[Pool] == [named_only]  # named by the trade, created elsewhere
    tokens = {t.address for t in every_kind.TOKENS}
    named_a = {trade_a.token_bought_address, trade_a.token_sold_address} & tokens
    assert {t.address for t in first.records[Token]} == named_a  # a named-only pool names no tokens
    # created in the minute, plus the pool its trade names (every_kind's trade names the other pool)
    assert trade_b.pool_address == named_only.address
    assert second.records[Pool] == sorted([created, named_only], key=lambda p: p.address)
    named_b = {
        trade_b.token_bought_address,
        trade_b.token_sold_address,
        created.token0,
        created.token1,
    } & tokens
    assert {t.address for t in second.records[Token]} == named_b


async def test_history_interleaves_venues_by_event_time(tmp_path: Path) -> None:
    target = Target(str(tmp_path))
    minute = T0 // 60
    a, b = _block(1, T0 + 12), _block(2, T0 + 24)
    chain = {k.record: [] for k in kinds.BATCH_KINDS} | {
        Block: [a, b],
        DexTrade: [_trade(a, 0), _trade(b, 3)],
    }
    write_bucket(target, Stream("chain", "devnet"), Bucket(minute, chain, 1, 2))
    early, between, same = _cex(T0 + 5, "1"), _cex(T0 + 20, "2"), _cex(T0 + 20, "3")
    write_bucket(target, Stream("cex", "okx"), Bucket(minute, {Trade: [early, between, same]}))
    write_bucket(target, Stream("cex", "okx"), Bucket(minute + 1, {Trade: [_cex(T0 + 61, "4")]}))
    steps: list[Step] = [
        s async for s in history(target, None, first_us=T0 * US, end_us=(T0 + 60) * US, confirmations=0)
    ]
    assert [(s.time_us, s.block.number if s.block else None, [t.trade_id for t in s.cex]) for s in steps] == [  # type: ignore[attr-defined]
        ((T0 + 5) * 1_000_000, None, ["1"]),
        ((T0 + 12) * 1_000_000, 1, []),
        ((T0 + 20) * 1_000_000, None, ["2", "3"]),  # one arrival moment: one step, in stored order
        ((T0 + 24) * 1_000_000, 2, []),
    ]
    assert steps[1].records[DexTrade] == [_trade(a, 0)] and steps[3].records[DexTrade] == [_trade(b, 3)]
    only_trades = [
        s
        async for s in history(
            target,
            None,
            first_us=T0 * US,
            end_us=(T0 + 120) * US,
            confirmations=0,
            types=frozenset({"trade"}),
        )
    ]
    assert [t.trade_id for s in only_trades for t in s.cex] == ["1", "2", "3", "4"]  # type: ignore[attr-defined]
    assert all(s.block is None for s in only_trades)
