"""Kraken websocket v2: ``book`` (checksummed), ``trade``, ``ticker``, and ``instrument`` for precisions.

A ``book`` update (numbers are JSON numbers; read as ``Decimal`` from their text, never as floats)::

    {"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,
     "qty":0.10000000}],"asks":[],"checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}

Invariant: after the whole message is applied and the book truncated to the subscribed depth, the CRC32 of
the top 10 asks ascending then bids descending (``cex.checksum.kraken_checksum``, each number formatted to the
pair's ``price_precision`` / ``qty_precision`` from the ``instrument`` channel) equals ``checksum``. There
are no sequence ids: the checksum is the only integrity check, so it is verified on every update.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import Any, ClassVar

import msgspec

from cex.book import L2Book
from cex.checksum import kraken_checksum
from cex.exchange import Exchange, Feed, MalformedMessage, Parsed, taker_side
from cex.sync import BookMessage, SequenceRule
from records.cex import Ticker, Trade

_CHANNELS: dict[Feed, str] = {"book": "book", "trades": "trade", "ticker": "ticker"}
# JSON numbers straight into Decimal from their text, by the C scanner; one decoder, not one per frame
_JSON = json.JSONDecoder(parse_float=Decimal)
_DECIMAL_ONLY = {Decimal}


def _iso_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    whole = int(moment.replace(microsecond=0).timestamp())  # no float rounding on the fraction
    return whole * 1000 + moment.microsecond // 1000


_SECOND_MS: dict[str, int] = {}  # "2023-10-06T17:35:55" -> its Unix time in ms (1.4 µs to compute)


def _ms(text: str | None) -> int | None:
    """ISO time -> Unix ms. Kraken's form (``2023-10-06T17:35:55.440295Z``) splits into the second, whose
    value is remembered (messages of one second share it), and the milliseconds' digits."""
    if not text:
        return None
    if len(text) == 27 and text[19] == "." and text[26] == "Z" and text[20:26].isdigit():
        second = text[:19]
        whole = _SECOND_MS.get(second)
        if whole is None:
            if len(_SECOND_MS) >= 10_000:
                _SECOND_MS.clear()
            whole = _SECOND_MS[second] = _iso_ms(second + "Z")
        return whole + int(text[20:23])
    return _iso_ms(text)


_decimal_of_text: Callable[[str], Decimal]
try:  # cex/_speedups.c: Decimal(text) made directly for a plain decimal (~0.04 µs instead of ~0.3)
    from cex._speedups import decimal as _decimal_of_text
except ImportError:
    _decimal_of_text = Decimal


class _Level(msgspec.Struct, gc=False):
    """A level as decoded: JSON numbers with a fraction become ``Decimal`` from their text (the decoder's
    ``float_hook``), those without stay ``int``; ``_pairs`` makes ints ``Decimal`` and refuses the rest.
    ``gc=False`` (here and on the frame's other Structs): decoded JSON holds no cycle, so the cycle collector
    need not count or walk these short-lived objects."""

    price: Any
    qty: Any


class _Book(msgspec.Struct, gc=False):
    symbol: str
    bids: list[_Level]
    asks: list[_Level]
    checksum: int
    timestamp: str | None = None


class _BookFrame(msgspec.Struct, gc=False):
    """A ``book`` frame, typed: msgspec hands each JSON number's text (the digits as sent) to the
    ``float_hook``, which makes the ``Decimal`` (in C: ~0.04 µs, where msgspec's own ``Decimal`` fields
    cost ~0.4), without a dict per level (0.6x the stdlib decoder's time with ``parse_float=Decimal`` on
    the recording with msgspec's ``Decimal``s)."""

    channel: str
    type: str
    data: list[_Book]


_BOOK_DECODER = msgspec.json.Decoder(_BookFrame, float_hook=_decimal_of_text)


def _number(value: Any) -> Decimal:
    if type(value) is Decimal:
        return value
    if type(value) is int:
        return Decimal(value)
    raise TypeError(f"a price or quantity is a number, not {type(value).__name__}")


def _pairs_python(items: list[Any], first: str, second: str) -> list[tuple[Any, Any]]:
    return [(_number(getattr(item, first)), _number(getattr(item, second))) for item in items]


_pairs: Callable[[list[Any], str, str], list[tuple[Any, Any]]]
try:  # cex/_speedups.c: the levels as (price, qty) tuples without a Python loop
    from cex._speedups import pairs as _pairs
except ImportError:
    _pairs = _pairs_python
_BOOK_PREFIX = '{"channel":"book",'
_book_json: Callable[..., dict[str, Any] | None] | None
try:  # cex/_speedups.c: a book frame read with its {price, qty} levels made (Decimal, Decimal) from the text
    from cex._speedups import book_json as _book_json
except ImportError:
    _book_json = None


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise MalformedMessage(f"not a number: {value!r}")


def _levels(rows: list[dict[str, Any]]) -> list[tuple[Decimal, Decimal]]:
    """``[{"price": <number>, "qty": <number>}, ...]`` -> levels. The JSON scanner made every number with a
    fraction a ``Decimal``; the types of all of them are checked at once (C ``map``), and only a side with
    anything else (an int, garbage) goes number by number."""
    levels = [(row["price"], row["qty"]) for row in rows]
    if set(map(type, chain.from_iterable(levels))) <= _DECIMAL_ONLY:
        return levels
    return [(_decimal(price), _decimal(qty)) for price, qty in levels]


class Kraken(Exchange):
    name = "kraken"
    ws_url = "wss://ws.kraken.com/v2"
    rest_url = "https://api.kraken.com"
    rule: ClassVar[SequenceRule] = "none"

    def __init__(self, ws_url: str | None = None, rest_url: str | None = None, depth: int = 10) -> None:
        super().__init__(ws_url, rest_url)
        self.depth = self.book_depth = depth
        self.precision: dict[str, tuple[int, int]] = {}  # symbol -> (price, qty) decimals

    def to_exchange_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "/")

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        pairs = [self.to_exchange_symbol(s) for s in symbols]
        frames = [json.dumps({"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}})]
        for feed in feeds:
            if feed not in _CHANNELS:
                continue
            params: dict[str, Any] = {"channel": _CHANNELS[feed], "symbol": pairs}
            if feed == "book":
                params["depth"] = self.depth
            if feed == "trades":
                params["snapshot"] = False  # the last 50 trades again on every reconnect otherwise
            frames.append(json.dumps({"method": "subscribe", "params": params}))
        return frames

    def resubscribe_book(self, symbol: str) -> list[str]:
        params = {"channel": "book", "symbol": [self.to_exchange_symbol(symbol)], "depth": self.depth}
        return [json.dumps({"method": m, "params": params}) for m in ("unsubscribe", "subscribe")]

    def verify(self, book: L2Book, msg: BookMessage) -> bool:
        price, qty = self.precision.get(msg.symbol, (None, None))
        return kraken_checksum(book, price, qty) == msg.checksum

    def _book_frame(self, frame: _BookFrame, atom_timestamp: int) -> Parsed:
        out = Parsed()
        snapshot = frame.type == "snapshot"
        for item in frame.data:
            out.books.append(
                BookMessage(
                    item.symbol.replace("/", "-"),
                    snapshot,
                    _pairs(item.bids, "price", "qty"),
                    _pairs(item.asks, "price", "qty"),
                    checksum=item.checksum,
                    event_timestamp=_ms(item.timestamp),
                    atom_timestamp=atom_timestamp,
                )
            )
        return out

    def _book_levels_frame(self, msg: dict[str, Any], atom_timestamp: int) -> Parsed | None:
        """A book frame as ``book_json`` read it (levels made), when it has the shape the typed decoder
        takes (``_BookFrame``: what it would refuse, or read otherwise, is left to it): the same ``Parsed``
        as ``_book_frame``; None otherwise."""
        data, kind = msg.get("data"), msg.get("type")
        # the channel too: a second "channel" key (the last one counts) that is no str fails the typed decoder
        if type(data) is not list or type(kind) is not str or type(msg.get("channel")) is not str:
            return None
        out = Parsed()
        snapshot = kind == "snapshot"
        for item in data:
            if type(item) is not dict:
                return None
            symbol, bids, asks = item.get("symbol"), item.get("bids"), item.get("asks")
            checksum, timestamp = item.get("checksum"), item.get("timestamp")
            if (
                type(symbol) is not str
                or type(bids) is not list
                or type(asks) is not list
                or (bids and type(bids[0]) is not tuple)  # a side is all levels or all other objects
                or (asks and type(asks[0]) is not tuple)
                or type(checksum) is not int
                or not (timestamp is None or type(timestamp) is str)
            ):
                return None
            out.books.append(
                BookMessage(
                    symbol.replace("/", "-"),
                    snapshot,
                    bids,
                    asks,
                    checksum=checksum,
                    event_timestamp=_ms(timestamp),
                    atom_timestamp=atom_timestamp,
                )
            )
        return out

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        text = frame if isinstance(frame, str) else frame.decode()
        if text.startswith(_BOOK_PREFIX):  # the hot channel, as Kraken orders its keys: the typed decoder
            if _book_json is not None:
                msg = _book_json(text, "price", "qty")
                parsed = None if msg is None else self._book_levels_frame(msg, atom_timestamp)
                if parsed is not None:
                    return parsed
            try:
                return self._book_frame(_BOOK_DECODER.decode(text), atom_timestamp)
            except (msgspec.DecodeError, TypeError):
                pass  # another shape, no JSON, a level not a number: the general path says what is wrong
        msg = _JSON.decode(text)
        out = Parsed()
        if not isinstance(msg, dict):
            raise MalformedMessage("not a v2 object frame")
        channel = msg.get("channel")
        if "method" in msg:
            if msg.get("success") is False:
                raise MalformedMessage(f"kraken {msg.get('method')} refused: {msg.get('error')}")
            out.control = True
            return out
        if channel in ("heartbeat", "status", None):
            out.control = True
            return out
        data = msg["data"]
        if channel == "book":
            snapshot = msg["type"] == "snapshot"
            for item in data:
                out.books.append(
                    BookMessage(
                        item["symbol"].replace("/", "-"),
                        snapshot,
                        _levels(item["bids"]),
                        _levels(item["asks"]),
                        checksum=int(item["checksum"]),
                        event_timestamp=_ms(item.get("timestamp")),
                        atom_timestamp=atom_timestamp,
                    )
                )
        elif channel == "trade":
            for item in data:
                out.records.append(
                    Trade(
                        self.name,
                        item["symbol"].replace("/", "-"),
                        _decimal(item["price"]),
                        _decimal(item["qty"]),
                        taker_side(item["side"]),
                        str(item["trade_id"]),
                        None,
                        None,
                        _ms(item.get("timestamp")),
                        atom_timestamp,
                    )
                )
        elif channel == "ticker":
            for item in data:
                out.records.append(
                    Ticker(
                        self.name,
                        item["symbol"].replace("/", "-"),
                        _decimal(item["bid"]),
                        _decimal(item["bid_qty"]),
                        _decimal(item["ask"]),
                        _decimal(item["ask_qty"]),
                        _ms(item.get("timestamp")),
                        atom_timestamp,
                    )
                )
        elif channel == "instrument":
            for pair in data.get("pairs", []):
                self.precision[pair["symbol"].replace("/", "-")] = (
                    int(pair["price_precision"]),
                    int(pair["qty_precision"]),
                )
            out.control = True
        return out
