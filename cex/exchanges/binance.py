"""Binance spot (``trade``/``aggTrade``, ``depth@100ms``, ``bookTicker``) and USDⓈ-M futures (the same plus
``markPrice`` for funding), on one combined-stream connection per feed.

A spot ``depthUpdate`` (recorded 2021-10-12)::

    {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512568,"s":"NKNUSDT",
     "U":499869753,"u":499869754,"b":[["0.35170000","4265.00000000"]],"a":[["0.35290000","10968.00000000"]]}}

Invariant (spot, as corrected 2025-11): with the REST snapshot's ``lastUpdateId`` L, drop ``u <= L``;
then per event ignore ``u <`` local id, resync if ``U >`` local id + 1, set local id = ``u`` — so the first
event applied has ``U <= L+1 <= u``. Futures: the first event after the snapshot has ``U <= L <= u``, and
each next one's ``pu`` equals the previous ``u``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal

import orjson

from cex.book import Level, row_levels
from cex.exchange import Exchange, Feed, MalformedMessage, Parsed, dec, trade
from cex.sync import BookMessage, SequenceRule
from core.errors import ConfigError
from records.cex import FundingRate, Ticker

_book_json: Callable[[str | bytes], dict[str, Any] | None] | None
try:  # cex/_speedups.c: the frame read with its book sides as levels (Decimals from the bytes), else None
    from cex._speedups import book_json as _book_json
except ImportError:
    _book_json = None


def _load(frame: str | bytes) -> tuple[Any, bool]:
    """The decoded frame, and whether its book sides are levels already (``book_json`` read it) or rows of
    texts (orjson, for ``row_levels``): the same levels either way, the same errors (a frame ``book_json``
    does not read goes to orjson)."""
    if _book_json is not None:
        msg = _book_json(frame)
        if msg is not None:
            return msg, True
    return orjson.loads(frame), False


def _side(value: Any, made: bool, cache: dict[str, Decimal] | None) -> list[Level]:
    """A book side: the levels ``book_json`` made of an array, else ``row_levels`` of orjson's rows. A side
    that is no array (a string, a number, null) ``book_json`` passes through as it is: ``row_levels`` refuses
    it here, at parse, as it does without C (the frame is skipped as malformed, the book left as it is)."""
    return value if made and type(value) is list else row_levels(value, cache)


_STREAMS: dict[Feed, tuple[str, ...]] = {
    "trades": ("trade",),
    "book": ("depth@100ms",),
    "ticker": ("bookTicker",),
}


class Binance(Exchange):
    name = "binance"
    ws_url = "wss://stream.binance.com:9443/stream"
    rest_url = "https://api.binance.com"
    rule: ClassVar[SequenceRule] = "range"
    snapshot_by: ClassVar[Literal["ws", "rest"]] = "rest"
    snapshot_path = "/api/v3/depth?symbol={symbol}&limit=5000"
    perpetual = False
    max_connection_age: ClassVar[float | None] = 23.5 * 3600  # Binance disconnects at 24 h

    def __init__(self, ws_url: str | None = None, rest_url: str | None = None) -> None:
        super().__init__(ws_url, rest_url)
        self.symbols: dict[str, str] = {}  # BTCUSDT -> BTC-USDT (ours)

    def to_exchange_symbol(self, symbol: str) -> str:
        base = symbol[: -len("-PERP")] if symbol.endswith("-PERP") else symbol
        if self.perpetual != symbol.endswith("-PERP"):
            raise ConfigError(f"{symbol} is not a {self.name} symbol (perpetuals: BASE-QUOTE-PERP)")
        native = base.replace("-", "")
        self.symbols[native] = symbol
        return native

    def streams(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        return [
            f"{self.to_exchange_symbol(symbol).lower()}@{stream}"
            for symbol in symbols
            for feed in feeds
            for stream in self._streams(feed)
        ]

    def _streams(self, feed: Feed) -> tuple[str, ...]:
        return _STREAMS.get(feed, ())

    def url(self, symbols: Sequence[str], feeds: Sequence[Feed], base: str | None = None) -> str:
        return f"{base or self.ws_url_in_use}?streams={'/'.join(self.streams(symbols, feeds))}"

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        return []  # the streams are in the URL

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.rest_url_in_use}{self.snapshot_path.format(symbol=self.to_exchange_symbol(symbol))}"

    def parse_snapshot(self, symbol: str, body: bytes, atom_timestamp: int) -> BookMessage:
        snap, made = _load(body)
        return BookMessage(
            symbol,
            True,
            _side(snap["bids"], made, None),  # texts mostly seen once: not cached
            _side(snap["asks"], made, None),
            last=int(snap["lastUpdateId"]),
            event_timestamp=snap.get("E"),
            atom_timestamp=atom_timestamp,
        )

    def _symbol(self, native: str) -> str:
        symbol = self.symbols.get(native)
        if symbol is None:
            raise MalformedMessage(f"{self.name}: data for unsubscribed symbol {native}")
        return symbol

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        msg, made = _load(frame)
        out = Parsed()
        data = msg.get("data") if isinstance(msg, dict) else None
        if data is None:
            out.control = True  # {"result":null,"id":1} and the like
            return out
        event = data.get("e")
        if event == "depthUpdate":
            out.books.append(self._depth(data, atom_timestamp, made))
        elif event in ("trade", "aggTrade"):
            side = "sell" if data["m"] else "buy"  # m: the buyer was the maker
            trade_id = data["t"] if event == "trade" else data["a"]
            out.records.append(
                trade(
                    self.name,
                    self._symbol(data["s"]),
                    data["p"],
                    data["q"],
                    side,
                    trade_id,
                    data["T"],
                    atom_timestamp,
                )
            )
        elif event is None and "b" in data and "a" in data and "u" in data:  # bookTicker
            out.records.append(
                Ticker(
                    self.name,
                    self._symbol(data["s"]),
                    dec(data["b"]),
                    dec(data["B"]),
                    dec(data["a"]),
                    dec(data["A"]),
                    data.get("E"),
                    atom_timestamp,
                )
            )
        elif event == "markPriceUpdate":
            out.records.append(
                FundingRate(
                    self.name,
                    self._symbol(data["s"]),
                    dec(data["r"]),
                    None,
                    dec(data["p"]),
                    int(data["T"]),
                    data["E"],
                    atom_timestamp,
                )
            )
        else:
            out.control = True  # kline and other streams not mapped
        return out

    def _depth(self, data: dict[str, Any], atom_timestamp: int, made: bool) -> BookMessage:
        return BookMessage(
            self._symbol(data["s"]),
            False,
            _side(data["b"], made, self.decimals),
            _side(data["a"], made, self.decimals),
            first=data["U"],
            last=data["u"],
            prev=data.get("pu"),
            event_timestamp=data.get("E"),
            atom_timestamp=atom_timestamp,
        )


class BinanceFutures(Binance):
    """USDⓈ-M perpetuals: ``BTC-USDT-PERP`` is ``BTCUSDT``; continuity by ``pu``."""

    name = "binance_futures"
    ws_url = "wss://fstream.binance.com/stream"
    rest_url = "https://fapi.binance.com"
    rule: ClassVar[SequenceRule] = "prev"
    snapshot_path = "/fapi/v1/depth?symbol={symbol}&limit=1000"
    perpetual = True

    def _streams(self, feed: Feed) -> tuple[str, ...]:
        if feed == "funding":
            return ("markPrice@1s",)
        return _STREAMS.get(feed, ())
