"""One exchange feed through its sinks: ``run_cex_pipeline(feed, sinks)``, shared by ``dexnode cex`` and
``dexnode run``.

The feed's queue is drained into batches (up to ``BATCH`` items, or whatever arrived within
``FLUSH_SECONDS``); each trade also updates its 1-minute candle (``cex.candles.CandleBuilder``), and the
candles travel in the same batch. A batch goes to every sink in the order given, each one awaited before
the next: put Kafka before Postgres and a batch is acknowledged by the broker before it is stored, put a
live fan-out (the API's websocket hub) last and clients only see what was stored. A sink that raises stops
the pipeline (the caller decides whether to restart): silently dropping a batch for one sink would leave
the sinks disagreeing.

A sink is anything with ``write(items)`` and ``close()`` (``CexSink``); ``cex.store.CexStore`` and
``cex.kafka.CexKafka`` are two, ``api.stream.cex.HubCexSink`` a third. The pipeline does not close its
sinks: whoever opened them closes them (the CLI's exit stack), so one sink can outlive a restarted feed.

Raw frames (a feed made with ``raw=True``) are taken at each flush and written first, to the sinks that
take them (``RawSink``: ``write_raw(frames)``; ``CexKafka``'s ``cex.<exchange>.raw``), one write at a time
like the records (a producer is not sent to from two tasks at once); the other sinks never see them.

``FeedBooks(feeds)`` shows the running feeds' books to the API (``create_app(..., books=FeedBooks(...))``,
an ``api.routes.cex.LiveBooks`` by shape), so ``/v1/cex/books`` answers the live book.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

import orjson

from cex.candles import CandleBuilder
from cex.dispatch import RawFrame
from cex.feed import FeedHandler
from cex.sync import Resync
from records.cex import Trade
from records.codec import Record, to_json

log = logging.getLogger("dexnode.cex")

BATCH = 2_000
FLUSH_SECONDS = 0.25


class CexSink(Protocol):
    """Takes batches of CEX records and resyncs, in the feed's order; ``close()`` releases it."""

    async def write(self, items: list[Record | Resync]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class RawSink(Protocol):
    """Takes batches of raw frames, in arrival order."""

    async def write_raw(self, frames: list[RawFrame]) -> None: ...


async def run_cex_pipeline(
    feed: FeedHandler,
    sinks: Sequence[CexSink],
    *,
    echo: bool = False,
    duration: float | None = None,
) -> None:
    """Run ``feed`` and drain it into ``sinks`` until cancelled, the feed fails (its error is raised) or
    ``duration`` seconds have passed; everything the feed published until then (its queue included) is
    written before it returns or its cancellation completes. ``echo`` prints every item as a JSON line on
    stdout."""
    task = asyncio.ensure_future(feed.run())
    try:
        await _drain(feed, task, sinks, echo, duration)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for i, counters in enumerate(feed.counters()["connections"]):
            log.info("%s connection %d: %s", feed.exchange.name, i, counters)


async def _drain(
    feed: FeedHandler,
    task: asyncio.Future[None],
    sinks: Sequence[CexSink],
    echo: bool,
    duration: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    candles = CandleBuilder()
    pending: list[Record | Resync] = []
    last_flush = loop.time()
    writing: asyncio.Future[None] | None = None
    try:
        while end is None or loop.time() < end:
            if task.done():
                task.result()  # a feed that stopped raises its error here
            try:
                # not wait_for: Python 3.11's returns the item and drops a cancellation that arrives as
                # the item does, and this loop would then never stop
                async with asyncio.timeout(FLUSH_SECONDS):
                    item = await feed.queue.get()
            except TimeoutError:
                item = None
            if item is not None:
                _take(item, pending, candles, echo)
            waiting = bool(pending) or (feed.raw_frames is not None and not feed.raw_frames.empty())
            if waiting and (len(pending) >= BATCH or loop.time() - last_flush >= FLUSH_SECONDS):
                batch, pending = pending, []
                # shielded: a batch taken is written whole even when the pipeline is cancelled meanwhile
                writing = asyncio.ensure_future(_write(sinks, batch, echo, _raw_of(feed)))
                await asyncio.shield(writing)
                last_flush = loop.time()
    finally:
        # what the feed published and the loop had not taken yet (a stop between two gets) goes too
        while not feed.queue.empty():
            _take(feed.queue.get_nowait(), pending, candles, echo)
        if writing is not None and not writing.done():
            await writing  # one write at a time: the rest follows it
        raw = _raw_of(feed)
        if pending or raw:
            # shielded: a cancelled pipeline (Ctrl-C, dexnode run stopping) still stores what it drained
            await asyncio.shield(_write(sinks, pending, echo, raw))


def _take(item: Record | Resync, pending: list[Record | Resync], candles: CandleBuilder, echo: bool) -> None:
    pending.append(item)
    if isinstance(item, Trade):
        pending.extend(candles.add(item))
    if echo:
        sys.stdout.buffer.write(line(item))


def _raw_of(feed: FeedHandler) -> list[RawFrame]:
    frames = feed.raw_frames
    return [] if frames is None else [frames.get_nowait() for _ in range(frames.qsize())]


async def _write(
    sinks: Sequence[CexSink], batch: list[Record | Resync], echo: bool, raw: list[RawFrame]
) -> None:
    if raw:
        for sink in sinks:
            if isinstance(sink, RawSink):
                await sink.write_raw(raw)
    if batch:
        for sink in sinks:
            await sink.write(batch)
    if echo:
        sys.stdout.flush()


def line(item: Record | Resync) -> bytes:
    """An item's JSON line: the record's JSON form, a resync as ``{"type": "resync", "data": {...}}``."""
    if isinstance(item, Resync):
        data = {
            "exchange": item.exchange,
            "symbol": item.symbol,
            "reason": item.reason,
            "sequence": item.sequence,
        }
        return orjson.dumps({"type": "resync", "data": data}) + b"\n"
    return to_json(item) + b"\n"


@dataclass(frozen=True)
class LiveBook:
    """One feed's published book at the moment it was read (levels best first; empty when invalid)."""

    exchange: str
    symbol: str
    sequence: int | None
    valid: bool
    timestamp: int  # µs, when it was read
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    orders: list[tuple[str, str, Decimal, Decimal]] | None = None  # L3: (order_id, side, price, size)


class FeedBooks:
    """The books of running ``FeedHandler``s, by exchange and symbol."""

    def __init__(self, feeds: Sequence[FeedHandler]) -> None:
        self.feeds = list(feeds)

    def book(self, exchange: str, symbol: str, depth: int | None) -> LiveBook | None:
        for feed in self.feeds:
            if feed.exchange.name == exchange and symbol in feed.symbols and "book" in feed.feeds:
                book = feed.published_book(symbol).book
                valid = book.valid
                bids = book.bid_levels(depth) if valid else []
                asks = book.ask_levels(depth) if valid else []
                held = getattr(book, "orders", None)  # an L3 book (cex.book.L3Book) keeps its orders
                orders = None if held is None else [(i, s, p, q) for i, (s, p, q) in held.items()]
                now = time.time_ns() // 1000
                return LiveBook(exchange, symbol, book.sequence, valid, now, bids, asks, orders)
        return None
