"""Runs a ``cex.feed.FeedHandler`` against a replay server until its books match the market's, and rebuilds
the book a consumer would hold from what the feed published (plain dicts, nothing of ``cex/``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cex.feed import FeedHandler
from cex.sync import Resync
from devnet.exchanges.server import Fault, ReplayServer
from records.cex import BookDelta, BookSnapshot

Levels = list[tuple[Decimal, Decimal]]

# A stale threshold no run can cross (run_feed gives up after 30 s). Staleness is wall-clock time on the
# event loop that also runs the replay server, so a loaded machine that stalls the process for a short
# stale_after (0.8 s was crossed under CI load) turns a run into a stale reconnect: the fault meant for
# session 0 never fires, or updates are replayed from a new snapshot. Only a "silent" fault needs a short one.
NEVER_STALE = 60.0


def stale_after_for(faults: list[Fault] | None, short: float = 0.8) -> float:
    """``short`` for a run with a silence among its faults, else NEVER_STALE."""
    return short if any(f.kind == "silent" for f in faults or []) else NEVER_STALE


@dataclass
class ConsumerBook:
    """What a consumer of the published records holds: snapshot, then deltas; a resync empties it."""

    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    valid: bool = False
    depth: int | None = None

    def apply(self, item: Any) -> None:
        if isinstance(item, BookSnapshot):
            self.bids = dict(item.bids)
            self.asks = dict(item.asks)
            self.valid = True
        elif isinstance(item, BookDelta):
            assert self.valid, "a delta published for a book known to be invalid"
            side = self.bids if item.side == "bid" else self.asks
            if item.size:
                side[item.price] = item.size
            else:
                side.pop(item.price, None)
            if self.depth is not None:
                self.bids = dict(sorted(self.bids.items(), reverse=True)[: self.depth])
                self.asks = dict(sorted(self.asks.items())[: self.depth])
        elif isinstance(item, Resync):
            self.valid = False

    def levels(self) -> tuple[Levels, Levels]:
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items())


@dataclass
class Run:
    feed: FeedHandler
    published: list[Any]
    consumers: dict[str, ConsumerBook]

    def resyncs(self) -> list[str]:
        return [p.reason for p in self.published if isinstance(p, Resync)]

    def of(self, cls: type) -> list[Any]:
        return [p for p in self.published if isinstance(p, cls)]


def market_levels(server: ReplayServer, native: str) -> tuple[Levels, Levels]:
    return server.books[native].as_decimals()


async def run_feed(server: ReplayServer, feed: FeedHandler, symbols: dict[str, str], timeout: float = 30.0,
                   depth: int | None = None, during: Any = None) -> Run:  # fmt: skip
    """Run until the market has played everything and every published book (and the consumer's copy)
    equals the market's; ``symbols`` maps ours to the server's. ``during(feed, server)`` runs alongside."""
    consumers = {s: ConsumerBook(depth=depth) for s in symbols}
    published: list[Any] = []
    task = asyncio.ensure_future(feed.run())
    side = asyncio.ensure_future(during(feed, server)) if during is not None else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                item = await asyncio.wait_for(feed.queue.get(), 0.1)
                published.append(item)
                symbol = getattr(item, "symbol", None)
                if symbol in consumers:
                    consumers[symbol].apply(item)
                continue
            except TimeoutError:
                pass
            if task.done():
                task.result()
            if server.done.is_set() and all(
                _settled(feed, server, consumers, s, n) for s, n in symbols.items()
            ):
                return Run(feed, published, consumers)
            if loop.time() > deadline:
                raise AssertionError(f"books never matched the market; resyncs {published.count}")
    finally:
        for t in (task, side):
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t


def _settled(feed: FeedHandler, server: ReplayServer, consumers: dict[str, ConsumerBook], symbol: str,
             native: str) -> bool:  # fmt: skip
    book = feed.published_book(symbol).book
    bids, asks = market_levels(server, native)
    return (
        book.valid
        and book.bid_levels() == bids
        and book.ask_levels() == asks
        and consumers[symbol].valid
        and consumers[symbol].levels() == (bids, asks)
    )
