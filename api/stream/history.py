"""History through the live protocol, one playback per websocket client (``dexnode replay``, as
tardis-machine replays per connection): each connection of the replay server gets its own ``Hub`` and its
own playback of its range, at its speed, so clients with different ranges play side by side and one
leaving does not touch another. The hub gives the live ``/ws`` protocol's messages and cursors, so a strategy
written against the live stream runs unchanged on history.

The steps come from whoever composes the replay (``Source``: the CLI reads the Parquet archive, then
Postgres past it); this module only starts, paces and hands them to the hub the way live sources do:
``Hub.publish_blocks`` for a block (then its finality: a replayed block is final) and ``Hub.publish_cex``
for exchange records. A replay hub has no store to catch up from (``HistoryStore``): a client subscribes,
then receives the replay as it plays.

Start: once the connection has ``subscriptions`` subscriptions, or (without a count) ``settle`` seconds
after its last subscribe. Then ``cex_book`` subscribers first get every book at the range's start (a
``book_snapshot``, or a ``resync`` for a book known wrong then), as a live subscriber gets the books the hub
holds, then the deltas. Pacing: at ``speed`` S a step whose event time is t seconds after the first step's
is handed over t/S seconds after the start; without a speed, as fast as the client reads (the replay waits
while its queue is more than half full, instead of disconnecting it as a slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from api.stream.cex import CexItem
from api.stream.events import BlockEvent, Ref, ReorgEvent
from api.stream.hub import Client, Hub
from api.stream.protocol import Code, Cursor, ProtocolError
from records import Block, Record

log = logging.getLogger("dexnode.api.replay")

PAUSE_SECONDS = 0.002  # how often a full-speed replay looks at the clients' queues again
SETTLE_SECONDS = 1.0  # without a subscription count, playback starts this long after the last subscribe
POLL_SECONDS = 0.01
BOOK_TYPES = frozenset({"book_delta", "book_snapshot"})


class Step(Protocol):
    """One moment of history: a block with its records, or a batch of exchange records."""

    @property
    def time_us(self) -> int: ...  # event time, µs since the epoch

    @property
    def block(self) -> Block | None: ...

    @property
    def records(self) -> Mapping[type[Record], Sequence[Record]]: ...  # the block's records, by class

    @property
    def cex(self) -> Sequence[CexItem]: ...  # exchange records (and resyncs), in arrival order


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


def _queued(hub: Hub) -> int:
    return max((c.unsent() for c in hub.clients), default=0)


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
        before = sum(c.unsent() for c in hub.clients)
        if step.block is not None:
            hub.publish_blocks([step.block], {cls: list(rs) for cls, rs in step.records.items()})
            hub.advance_finalized(step.block.number)  # history is final
            stats.blocks += 1
        if step.cex:
            hub.publish_cex(list(step.cex))
            stats.cex_records += len(step.cex)
        stats.messages += max(0, sum(c.unsent() for c in hub.clients) - before)
        stats.steps += 1
        stats.last_us = step.time_us
    stats.seconds = time.monotonic() - started
    return stats


# -- one playback per connection -------------------------------------------------------------------


@dataclass(frozen=True)
class Playback:
    """What one connection replays: ``[first_us, end_us)`` (µs since the epoch) at ``speed`` (None: as
    fast as the client reads), the record ``types`` (None: all), started once it has ``subscriptions``
    subscriptions or, without a count, ``settle`` seconds after its last subscribe."""

    first_us: int | None  # None: the connection must give it
    end_us: int | None
    speed: float | None = None
    types: frozenset[str] | None = None
    subscriptions: int | None = None
    settle: float = SETTLE_SECONDS


class Source(Protocol):
    """History for a playback (``cli.archive``: the archive, then Postgres past it)."""

    def steps(self, first_us: int, end_us: int, types: frozenset[str] | None) -> AsyncIterator[Step]: ...

    async def books(self, at_us: int, exchanges: frozenset[str] | None) -> Sequence[CexItem]:
        """Every book (of ``exchanges``, None: all) at ``at_us``: snapshots, and resyncs for books known
        wrong then."""
        ...


def moment_us(text: str, name: str) -> int:
    """µs since the epoch from Unix seconds (``1700000000``, ``1700000000.25``) or ISO 8601 (UTC unless an
    offset is given; ``2026-01-02T03:04:05.250Z``)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds == seconds and abs(seconds) < 1e11:  # not NaN, not in ms
            return round(seconds * 1_000_000)
        raise ProtocolError(Code.BAD_MESSAGE, f"{name}: {text[:40]!r} is not a time in Unix seconds")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ProtocolError(
            Code.BAD_MESSAGE,
            f"{name}: {text[:40]!r} is neither Unix seconds nor ISO 8601 (2026-01-02T03:04:05Z)",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def playback_of(query: Mapping[str, str], defaults: Playback, known_types: frozenset[str]) -> Playback:
    """A connection's playback from its URL's query (``from``, ``to``, ``speed``, ``kinds``,
    ``subscriptions``, ``settle``), each defaulting to the server's; ``ProtocolError`` when one is bad."""
    unknown = sorted(set(query) - {"from", "to", "speed", "kinds", "subscriptions", "settle"})
    if unknown:
        raise ProtocolError(
            Code.BAD_MESSAGE,
            f"unknown query parameter(s) {', '.join(unknown)[:80]} (from, to, speed, kinds, subscriptions,"
            " settle)",
        )
    playback = defaults
    if "from" in query:
        playback = replace(playback, first_us=moment_us(query["from"], "from"))
    if "to" in query:
        playback = replace(playback, end_us=moment_us(query["to"], "to"))
    if playback.first_us is None or playback.end_us is None:
        raise ProtocolError(Code.BAD_MESSAGE, "give the range to replay: ?from=<time>&to=<time>")
    if playback.end_us <= playback.first_us:
        raise ProtocolError(Code.BAD_MESSAGE, "'to' must be after 'from'")
    if "speed" in query:
        speed = _number(query["speed"], "speed")
        playback = replace(playback, speed=None if speed == 0 else speed)
    if "kinds" in query:
        types = frozenset(k.strip() for k in query["kinds"].split(",") if k.strip())
        bad = sorted(types - known_types)
        if bad or not types:
            raise ProtocolError(Code.BAD_MESSAGE, f"kinds: unknown {', '.join(bad)[:80] or '(none given)'}")
        playback = replace(playback, types=types)
    if "subscriptions" in query:
        count = _number(query["subscriptions"], "subscriptions")
        if count != int(count) or not 1 <= count <= 100:
            raise ProtocolError(Code.BAD_MESSAGE, "subscriptions: a count from 1 to 100")
        playback = replace(playback, subscriptions=int(count))
    if "settle" in query:
        playback = replace(playback, settle=min(_number(query["settle"], "settle"), 60.0))
    return playback


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ProtocolError(Code.BAD_MESSAGE, f"{name}: {text[:40]!r} is not a number >= 0")
    return value


def subscription_count(client: Client) -> int:
    return len(client.subscriptions) + len(client.cex_subscriptions)


async def until_subscribed(client: Client, playback: Playback) -> None:
    """Until the connection has ``playback.subscriptions`` subscriptions, or (no count) ``settle`` seconds
    passed after its last subscribe. Polled: the hub announces no subscription events."""
    wanted = playback.subscriptions
    while subscription_count(client) < (wanted or 1):  # noqa: ASYNC110
        await asyncio.sleep(POLL_SECONDS)
    if wanted is not None:
        return
    seen, quiet_since = subscription_count(client), time.monotonic()
    while time.monotonic() - quiet_since < playback.settle:
        await asyncio.sleep(POLL_SECONDS)
        if subscription_count(client) != seen:
            seen, quiet_since = subscription_count(client), time.monotonic()


def book_exchanges(client: Client) -> frozenset[str] | None:
    """The exchanges whose books the connection's ``cex_book`` subscriptions want (None: every exchange;
    empty: no ``cex_book`` subscription)."""
    subs = [s for s in client.cex_subscriptions.values() if s.spec.channel.name == "cex_book"]
    wanted: set[str] = set()
    for sub in subs:
        exchanges = sub.spec.filters.get("exchange")
        if exchanges is None:
            return None
        wanted |= exchanges
    return frozenset(wanted)


async def play_for(hub: Hub, client: Client, source: Source, playback: Playback) -> PlayStats:
    """One connection's playback: wait for its subscriptions, send the books at the start to its
    ``cex_book`` subscriptions, play the range, and return once the client has been sent everything."""
    first, end = playback.first_us, playback.end_us
    assert first is not None and end is not None, "playback_of gives both"
    await until_subscribed(client, playback)
    exchanges = book_exchanges(client)
    if exchanges != frozenset() and (playback.types is None or playback.types & BOOK_TYPES):
        books = await source.books(first, exchanges)
        if books:
            hub.publish_cex(list(books))
    steps = source.steps(first, end, playback.types)
    return await play(hub, steps, speed=playback.speed)
