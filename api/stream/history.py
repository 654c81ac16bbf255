"""History through the live hub: ``dexnode replay`` feeds a ``Hub`` with recorded steps (chain blocks with
their records, CEX record batches) in event-time order, so clients of ``/ws`` get the live protocol's
messages and cursors for a past time range (tardis-machine's replay, for chain and CEX together).

The steps come from whoever composes the replay (the CLI reads the Parquet archive, then Postgres past
it); this module only paces them and hands them to the hub the way live sources do:
``Hub.publish_blocks`` for a block (then its finality: a replayed block is final) and ``Hub.publish_cex``
for exchange records. A replay hub has no store to catch up from (``HistoryStore``): a client
subscribes, then receives the replay as it plays.

Pacing: at ``speed`` S a step whose event time is t seconds after the first step's is handed over t/S
seconds after the start; without a speed, as fast as the clients read (the replay waits while any
client's queue is more than half full, instead of disconnecting it as a slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from api.stream.events import BlockEvent, Ref, ReorgEvent
from api.stream.hub import Hub
from api.stream.protocol import Cursor
from records import Block, Record

log = logging.getLogger("dexnode.api.replay")

PAUSE_SECONDS = 0.002  # how often a full-speed replay looks at the clients' queues again


class Step(Protocol):
    """One moment of history: a block with its records, or a batch of exchange records."""

    @property
    def time_us(self) -> int: ...  # event time, µs since the epoch

    @property
    def block(self) -> Block | None: ...

    @property
    def records(self) -> Mapping[type[Record], Sequence[Record]]: ...  # the block's records, by class

    @property
    def cex(self) -> Sequence[Record]: ...  # exchange records, in arrival order


class HistoryStore:
    """``api.stream.subscription.Store`` for a replay hub: nothing to catch up from (a subscription
    with a cursor or ``from_block`` gets what the replay plays from then on)."""

    async def tip(self) -> Ref | None:
        return None

    async def read(self, first: int, last: int, channel: str) -> list[BlockEvent]:
        return []

    async def canonical(self, numbers: list[int]) -> dict[int, str]:
        return {}

    async def rejoin(self, cursor: Cursor) -> ReorgEvent | None:
        return None


@dataclass
class PlayStats:
    steps: int = 0
    blocks: int = 0
    cex_records: int = 0
    seconds: float = 0.0
    messages: int = 0  # messages queued for clients
    first_us: int | None = None
    last_us: int | None = None
    waits: int = field(default=0)  # pauses for slow readers


def subscription_count(hub: Hub) -> int:
    return sum(len(c.subscriptions) + len(getattr(c, "cex_subscriptions", {})) for c in hub.clients)


async def wait_for_subscriptions(hub: Hub, count: int) -> None:
    """Until ``count`` subscriptions exist across the hub's clients (the replay starts then)."""
    # polled: the hub announces no subscription events, and a replay waits for its clients only once
    while subscription_count(hub) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _queued(hub: Hub) -> int:
    return max((c.queue.qsize() for c in hub.clients), default=0)


async def play(hub: Hub, steps: AsyncIterator[Step], *, speed: float | None = None) -> PlayStats:
    """Hand ``steps`` to the hub in order, paced by their event times (``speed`` x real time)."""
    stats = PlayStats()
    started = time.monotonic()
    room = max(1, hub.limits.queue_messages // 2)
    async for step in steps:
        if stats.first_us is None:
            stats.first_us = step.time_us
        if speed is not None:
            due = started + (step.time_us - stats.first_us) / 1e6 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        while _queued(hub) > room:  # the slowest client sets the pace rather than being disconnected
            stats.waits += 1
            await asyncio.sleep(PAUSE_SECONDS)
        before = sum(c.queue.qsize() for c in hub.clients)
        if step.block is not None:
            hub.publish_blocks([step.block], {cls: list(rs) for cls, rs in step.records.items()})
            hub.advance_finalized(step.block.number)  # history is final
            stats.blocks += 1
        if step.cex:
            hub.publish_cex(list(step.cex))
            stats.cex_records += len(step.cex)
        stats.messages += max(0, sum(c.queue.qsize() for c in hub.clients) - before)
        stats.steps += 1
        stats.last_us = step.time_us
    stats.seconds = time.monotonic() - started
    return stats


async def drain(hub: Hub, timeout: float = 60.0, *, until_disconnected: bool = False) -> None:
    """Until every client has been sent what is queued for it (or has gone, ``until_disconnected``),
    or ``timeout``."""
    deadline = time.monotonic() + timeout

    def busy() -> bool:
        return bool(hub.clients) if until_disconnected else any(c.queue.qsize() for c in hub.clients)

    while busy() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
