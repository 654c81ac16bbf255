"""Exchange data on the websocket: the ``cex_trades``, ``cex_book``, ``cex_ticker``, ``cex_candles``,
``cex_funding``, ``cex_open_interest`` and ``cex_raw`` channels and the merged ``trades`` channel where DEX
and CEX trades meet (docs/api-websocket.md).

``cex_raw`` (``RawFanOut``, the fan-out's ``raw``) is fed straight by the feeds of this process, one frame
at a time as a connection receives it (``cex.feed.FeedHandler.raw_listener``): the feed checks ``wanted``
(a plain attribute, true while a client subscribes) and only then builds and hands over the frame; offering
never waits (a slow client is disconnected as on the other channels). A hub no feed was attached to
(a separate ``serve``) refuses ``cex_raw`` subscriptions.

``CexFanOut`` (one per hub) takes batches of CEX records and resyncs, typed by ``records`` (a resync is
anything with exchange, symbol, reason and sequence: ``cex.sync.Resync`` in process, ``sinks.cex_read.
StoredResync`` through NOTIFY; ``api`` never imports ``cex``), keeps a copy of every book it has seen (so a
new ``cex_book`` subscriber starts from a ``book_snapshot``), and offers each message, encoded once, to the
matching subscriptions. CEX channels are live only: nothing is replayed from storage.

``HubCexSink(hub)`` is the in-process way in: a ``cex.pipeline.CexSink`` (``write(items)``, ``close()``) the
CLI puts after the Postgres sink, so clients see what was stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson

from api.stream import frames
from api.stream.events import BlockEvent, ReorgEvent
from api.stream.frames import Data, Encoded, Message
from api.stream.protocol import Subscribe, event, matches
from records import DexTrade, Record, to_dict
from records.cex import (
    BookDelta,
    BookSnapshot,
    Candle,
    FundingRate,
    OpenInterest,
    Ticker,
    Trade,
    raw_frame_data,
)
from sinks import merged_trades

MERGED = "trades"
# record class -> (channel, message type)
_CHANNEL_OF: dict[type[Record], tuple[str, str]] = {
    Trade: ("cex_trades", "trade"),
    BookDelta: ("cex_book", "book_delta"),
    BookSnapshot: ("cex_book", "book_snapshot"),
    Ticker: ("cex_ticker", "ticker"),
    Candle: ("cex_candles", "candle"),
    FundingRate: ("cex_funding", "funding_rate"),
    OpenInterest: ("cex_open_interest", "open_interest"),
}
VERSION = 1


class ResyncLike(Protocol):
    """A book found wrong and being rebuilt (``cex.sync.Resync`` has this shape)."""

    @property
    def exchange(self) -> str: ...

    @property
    def symbol(self) -> str: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def sequence(self) -> int | None: ...


CexItem = Record | ResyncLike


class Client(Protocol):
    def offer(self, message: Message) -> None: ...


@dataclass(eq=False)
class CexSubscription:
    """One client's subscription to a CEX channel (or the merged ``trades``): live only."""

    spec: Subscribe
    client: Client
    prefix: Encoded = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = frames.prefix(
            self.spec.id
        )  # encoded once: every message of the subscription starts with it

    def send(self, fields: Mapping[str, Any], shared: Encoded) -> None:
        if matches(self.spec, fields):
            self.client.offer(Data(self.prefix, shared))

    def cancel(self) -> None:
        """Nothing runs on its behalf (no replay)."""


def _body(channel: str, kind: str, data: Mapping[str, Any]) -> Encoded:
    """A data message without its subscription id (the JSON object's text after ``{``), encoded once
    for every subscriber (``api.stream.frames``)."""
    doc = {"channel": channel, "type": kind, "version": VERSION, "data": data}
    return frames.body(orjson.dumps(doc).decode()[1:])


@dataclass
class HeldBook:
    """The hub's copy of one book, kept from the snapshots, deltas and resyncs it fans out. An L3 book
    (deltas with ``order_id``: its snapshot is followed by one delta per resting order) is kept by order
    id too, its levels the sums of its orders."""

    exchange: str
    symbol: str
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    sequence: int | None = None
    valid: bool = False
    event_timestamp: int | None = None
    atom_timestamp: int = 0
    orders: dict[str, tuple[str, Decimal, Decimal]] | None = None  # L3: order_id -> (side, price, size)
    fresh: bool = False  # a snapshot whose orders have not come yet
    # the last snapshot while its orders may still be arriving (deltas at its sequence): a new subscriber
    # gets it as published, then the orders held so far; the rest reach it live (a batch can end between
    # a snapshot and its orders). Not the held levels, which are partial sums until the orders are in.
    filling: BookSnapshot | None = None

    def apply(self, item: BookSnapshot | BookDelta | ResyncLike) -> None:
        if isinstance(item, BookSnapshot | BookDelta):
            if isinstance(item, BookSnapshot):
                self.bids, self.asks = dict(item.bids), dict(item.asks)
                self.valid, self.fresh = True, True
                self.filling = item if item.sequence is not None else None
                if self.orders is not None:  # an L3 book: the previous snapshot's orders are void
                    self.orders = {}
            elif item.order_id is not None:
                self._order(item)
            else:
                self.filling = None
                side = self.bids if item.side == "bid" else self.asks
                if item.size:
                    side[item.price] = item.size
                else:
                    side.pop(item.price, None)
            self.event_timestamp, self.atom_timestamp = item.event_timestamp, item.atom_timestamp
        else:
            self.bids, self.asks, self.valid, self.orders, self.filling = {}, {}, False, None, None
        if item.sequence is not None:
            self.sequence = item.sequence

    def _order(self, item: BookDelta) -> None:
        if self.filling is not None and item.sequence != self.filling.sequence:
            self.filling = None  # past the snapshot's orders: the held levels are whole again
        if self.fresh or self.orders is None:  # the snapshot's orders: the levels are rebuilt from them
            self.bids, self.asks, self.orders, self.fresh = {}, {}, {}, False
        order_id = str(item.order_id)
        held = self.orders.get(order_id)
        if held is not None:
            self._add(held[0], held[1], -held[2])
            if not item.size or held[1] != item.price:  # gone, or moved: to the back of its new level
                del self.orders[order_id]
        if item.size:
            self.orders[order_id] = (item.side, item.price, item.size)  # same level: keeps its place
            self._add(item.side, item.price, item.size)

    def _add(self, side: str, price: Decimal, size: Decimal) -> None:
        levels = self.bids if side == "bid" else self.asks
        total = levels.get(price, Decimal(0)) + size
        if total:
            levels[price] = total
        else:
            levels.pop(price, None)

    def snapshot(self) -> BookSnapshot:
        if self.filling is not None:
            return self.filling
        return BookSnapshot(
            self.exchange,
            self.symbol,
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
            self.sequence,
            self.event_timestamp,
            self.atom_timestamp,
        )

    def order_deltas(self) -> list[BookDelta]:
        """An L3 book's resting orders as the deltas that follow its snapshot (none for L2)."""
        return [
            BookDelta(
                self.exchange,
                self.symbol,
                side,
                price,
                size,
                order_id,
                self.sequence,
                self.event_timestamp,
                self.atom_timestamp,
            )
            for order_id, (side, price, size) in (self.orders or {}).items()
        ]


def snapshot_body(snap: BookSnapshot) -> Encoded:
    return _body("cex_book", "book_snapshot", {**to_dict(snap)["data"], "valid": True})


def resync_body(item: ResyncLike) -> Encoded:
    data = {
        "exchange": item.exchange,
        "symbol": item.symbol,
        "reason": item.reason,
        "sequence": item.sequence,
        "valid": False,
    }
    return _body("cex_book", "resync", data)


def _keys(exchange: str, symbol: str) -> dict[str, str]:
    return {"exchange": exchange, "symbol": symbol}


def _merged_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"venue": doc["venue"], "symbol": str(doc["symbol"]).upper(), "pool": doc["pool"]}


class RawLike(Protocol):
    """One frame as a connection received it (``cex.feed.RawFrame`` has this shape)."""

    @property
    def exchange(self) -> str: ...

    @property
    def connection(self) -> int: ...

    @property
    def atom_timestamp(self) -> int: ...

    @property
    def frame(self) -> str | bytes: ...


RAW = "cex_raw"


def raw_body(item: RawLike) -> Encoded:
    """The data of ``cex.<exchange>.raw``'s messages: the frame's text, or base64 of a binary frame."""
    return _body(RAW, "raw", raw_frame_data(item.exchange, item.connection, item.atom_timestamp, item.frame))


class RawFanOut:
    """The ``cex_raw`` subscriptions; a ``cex.feed.RawListener`` by shape (``wanted``, ``raw(frame)``)."""

    def __init__(self) -> None:
        self.subs: set[CexSubscription] = set()
        self.wanted = False  # read by the feeds on every frame: kept a plain attribute
        self.attached = 0  # feeds handing their frames here (0: this process runs none)
        self.published = 0

    def attach(self) -> RawFanOut:
        """A feed of this process will hand its frames here (``FeedHandler.raw_listener``)."""
        self.attached += 1
        return self

    def add(self, sub: CexSubscription) -> None:
        self.subs.add(sub)
        self.wanted = True

    def drop(self, sub: CexSubscription) -> None:
        self.subs.discard(sub)
        self.wanted = bool(self.subs)

    def raw(self, item: RawLike) -> None:
        """One frame to the matching subscribers (encoded once; never waits)."""
        self.published += 1
        body = raw_body(item)
        fields = {"exchange": item.exchange}
        for sub in list(self.subs):  # a slow client is dropped while this runs
            sub.send(fields, body)


class CexFanOut:
    """The CEX side of the hub: subscriptions by channel, held books, fan-out of a batch."""

    def __init__(self) -> None:
        self.raw = RawFanOut()
        self.by_channel: dict[str, set[CexSubscription]] = {}
        self.books: dict[tuple[str, str], HeldBook] = {}
        self.published = 0  # items fanned out (a counter for tests and metrics)

    # -- subscriptions -------------------------------------------------------------------------

    def add(self, sub: CexSubscription) -> None:
        """Register; a ``cex_book`` subscriber first gets the matching books the hub holds."""
        if sub.spec.channel.name == RAW:
            self.raw.add(sub)
            sub.client.offer(event("live", id=sub.spec.id))
            return
        self.by_channel.setdefault(sub.spec.channel.name, set()).add(sub)
        if sub.spec.channel.name == "cex_book":
            for (exchange, symbol), book in sorted(self.books.items()):
                keys = _keys(exchange, symbol)
                if not book.valid:
                    sub.send(keys, resync_body(_Invalid(exchange, symbol)))
                    continue
                sub.send(keys, snapshot_body(book.snapshot()))
                for delta in book.order_deltas():  # an L3 book: its orders follow, as from the feed
                    sub.send(keys, _body("cex_book", "book_delta", to_dict(delta)["data"]))
        sub.client.offer(event("live", id=sub.spec.id))

    def drop(self, sub: CexSubscription) -> None:
        if sub.spec.channel.name == RAW:
            self.raw.drop(sub)
            return
        self.by_channel.get(sub.spec.channel.name, set()).discard(sub)

    def _subs(self, channel: str) -> list[CexSubscription]:
        return list(self.by_channel.get(channel, ()))

    # -- the sink side -------------------------------------------------------------------------

    def publish(self, items: Iterable[CexItem]) -> None:
        """Fan out a batch of CEX records and resyncs (in the feed's order)."""
        for item in items:
            self.published += 1
            if isinstance(item, Record):
                self._record(item)
            else:
                self._resync(item)

    def _record(self, item: Record) -> None:
        target = _CHANNEL_OF.get(type(item))
        if target is None:
            return
        channel, kind = target
        exchange, symbol = item.exchange, item.symbol  # type: ignore[attr-defined]
        if channel == "cex_book":
            key = (exchange, symbol)
            book = self.books.get(key)
            if book is None:
                book = self.books[key] = HeldBook(exchange, symbol)
            book.apply(item)  # type: ignore[arg-type]
            if not book.valid:  # deltas on no snapshot (a serve that started mid-snapshot): the next one
                return
        subs = self._subs(channel)
        if subs:
            data = to_dict(item)["data"]
            body = snapshot_body(item) if isinstance(item, BookSnapshot) else _body(channel, kind, data)
            fields = _keys(exchange, symbol)
            for sub in subs:
                sub.send(fields, body)
        if isinstance(item, Trade):
            merged = self._subs(MERGED)
            if merged:
                doc = merged_trades.cex_trade(item)
                body = _body(MERGED, "merged_trade", doc)
                for sub in merged:
                    sub.send(_merged_fields(doc), body)

    def _resync(self, item: ResyncLike) -> None:
        key = (item.exchange, item.symbol)
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = HeldBook(item.exchange, item.symbol)
        book.apply(item)
        subs = self._subs("cex_book")
        if subs:
            body = resync_body(item)
            for sub in subs:
                sub.send(_keys(item.exchange, item.symbol), body)

    # -- DEX trades into the merged channel ----------------------------------------------------

    def dex_block(self, ev: BlockEvent) -> None:
        merged = self._subs(MERGED)
        if not merged:
            return
        for trade in ev.records.get("dex_trades", ()):
            assert isinstance(trade, DexTrade)
            doc = merged_trades.dex_trade(trade)
            body = _body(MERGED, "merged_trade", doc)
            for sub in merged:
                sub.send(_merged_fields(doc), body)

    def dex_reorg(self, ev: ReorgEvent) -> None:
        merged = self._subs(MERGED)
        if not merged:
            return
        data = {
            "common_ancestor": ev.ancestor.json(),
            "orphaned": [r.json() for r in ev.orphaned],
            "new_head": ev.new_head.json(),
        }
        shared = frames.body(orjson.dumps({"channel": MERGED, "type": "reorg", "data": data}).decode()[1:])
        for sub in merged:
            sub.client.offer(Data(sub.prefix, shared))


@dataclass(frozen=True)
class _Invalid:
    exchange: str
    symbol: str
    reason: str | None = None
    sequence: int | None = None


class CexHub(Protocol):
    """What the sink needs of the hub (``api.stream.hub.Hub``)."""

    def publish_cex(self, items: Sequence[CexItem]) -> None: ...


class HubCexSink:
    """In process: a ``cex.pipeline.CexSink`` that fans each batch out to the hub's clients."""

    def __init__(self, hub: CexHub) -> None:
        self.hub = hub

    async def write(self, items: Sequence[CexItem]) -> None:
        self.hub.publish_cex(items)

    async def close(self) -> None:
        """The hub belongs to the API app, which closes it."""
