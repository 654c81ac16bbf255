"""Exchange (CEX) records, in the seed's (L3 Atom) shape.

Prices and sizes are exact ``Decimal`` from the exchange's text. ``event_timestamp`` is the
exchange's time in ms (null when the message has none); ``atom_timestamp`` is when dexnode
received the message, in µs.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal

from records.codec import Record, register


@register
@dataclass(frozen=True, slots=True)
class Trade(Record):
    TYPE = "trade"

    exchange: str
    symbol: str
    price: Decimal
    size: Decimal
    taker_side: str  # buy | sell
    trade_id: str | None
    maker_order_id: str | None
    taker_order_id: str | None
    event_timestamp: int | None
    atom_timestamp: int


@register
@dataclass(frozen=True, slots=True)
class BookDelta(Record):
    """One price level (L2, ``order_id`` null) or one order (L3) changing; size 0 removes it."""

    TYPE = "book_delta"

    exchange: str
    symbol: str
    side: str  # bid | ask
    price: Decimal
    size: Decimal
    order_id: str | None
    sequence: int | None
    event_timestamp: int | None
    atom_timestamp: int
    # the matching engine's own sequence and time (ms) where the exchange sends them apart from the book's
    # update id (Bybit v5 ``seq`` and ``cts``); null elsewhere
    engine_sequence: int | None = None
    engine_timestamp: int | None = None


@register
@dataclass(frozen=True, slots=True)
class BookSnapshot(Record):
    """A full book: levels are (price, size), bids best first (descending), asks ascending."""

    TYPE = "book_snapshot"

    exchange: str
    symbol: str
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    sequence: int | None
    event_timestamp: int | None
    atom_timestamp: int
    engine_sequence: int | None = None  # as on BookDelta (Bybit ``seq``, ``cts``)
    engine_timestamp: int | None = None


@register
@dataclass(frozen=True, slots=True)
class Ticker(Record):
    TYPE = "ticker"

    exchange: str
    symbol: str
    bid_price: Decimal | None
    bid_size: Decimal | None
    ask_price: Decimal | None
    ask_size: Decimal | None
    event_timestamp: int | None
    atom_timestamp: int


@register
@dataclass(frozen=True, slots=True)
class Candle(Record):
    TYPE = "candle"

    exchange: str
    symbol: str
    interval: str  # e.g. 1m, 1h
    start: int  # ms
    end: int  # ms
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int | None
    closed: bool | None
    event_timestamp: int | None
    atom_timestamp: int


@register
@dataclass(frozen=True, slots=True)
class FundingRate(Record):
    TYPE = "funding_rate"

    exchange: str
    symbol: str
    rate: Decimal
    predicted_rate: Decimal | None
    mark_price: Decimal | None
    next_funding_time: int | None  # ms
    event_timestamp: int | None
    atom_timestamp: int


@register
@dataclass(frozen=True, slots=True)
class OpenInterest(Record):
    TYPE = "open_interest"

    exchange: str
    symbol: str
    open_interest: Decimal
    event_timestamp: int | None
    atom_timestamp: int


def raw_frame_data(
    exchange: str, connection: int, atom_timestamp: int, frame: str | bytes
) -> dict[str, object]:
    """The data of a raw exchange frame as both its outlets send it (Kafka ``cex.<exchange>.raw`` and the
    websocket ``cex_raw`` channel): the frame's text as received, or base64 of a binary frame."""
    data: dict[str, object] = {
        "exchange": exchange,
        "connection": connection,
        "atom_timestamp": atom_timestamp,
    }
    if isinstance(frame, str):
        data["frame"] = frame
    else:
        data["frame"], data["encoding"] = base64.b64encode(frame).decode(), "base64"
    return data
