"""Bybit v5 public websocket: ``orderbook.{1,50,200,1000}.{symbol}``, ``publicTrade``, ``tickers``.

One connection serves one category (``spot``, ``linear``, ``inverse``: one URL each); ``BTC-USDT`` is spot,
``BTC-USDT-PERP`` linear, ``BTC-USD-PERP`` inverse. An ``orderbook`` delta::

    {"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1687940967466,"data":{"s":"BTCUSDT",
     "b":[["30247.20","30.028"]],"a":[["30248.70","0"]],"u":177400507,"seq":66544703342},"cts":1687940967464}

Invariant: a ``snapshot`` (or a delta with ``u == 1``, the service restarted) replaces the book; every
other delta has ``u`` = previous ``u`` + 1; size "0" removes a level. ``tickers`` on derivatives arrive as a
snapshot then deltas that carry only the fields that changed: the last value of each field is kept per
symbol, so each published ``Ticker`` is whole; funding rate, next funding time and open interest become
``FundingRate`` and ``OpenInterest`` when they change. ``seq`` (the matching engine's cross sequence) and
``cts`` (its time) go on the book's records as ``engine_sequence`` and ``engine_timestamp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

import orjson

from cex.exchange import Exchange, Feed, MalformedMessage, Parsed, dec, taker_side, trade
from cex.sync import BookMessage, SequenceRule
from core.errors import ConfigError
from records.cex import FundingRate, OpenInterest, Ticker
from records.codec import Record

_DEPTHS = (1, 50, 200, 1000)
_TOPICS: dict[Feed, str] = {
    "book": "orderbook.{depth}",
    "trades": "publicTrade",
    "ticker": "tickers",
    "funding": "tickers",
    "open_interest": "tickers",
}


def category_of(symbol: str) -> str:
    if not symbol.endswith("-PERP"):
        return "spot"
    return "inverse" if symbol.removesuffix("-PERP").endswith("-USD") else "linear"


class Bybit(Exchange):
    name = "bybit"
    ws_url = "wss://stream.bybit.com/v5/public/{category}"
    # the second CDN (the seed's fallback), tried when the primary cannot be reached
    fallback_ws_urls: ClassVar[tuple[str, ...]] = ("wss://stream.bytick.com/v5/public/{category}",)
    rule: ClassVar[SequenceRule] = "prev"
    ping_frame = '{"op":"ping"}'

    def __init__(
        self,
        ws_url: str | None = None,
        rest_url: str | None = None,
        depth: int = 50,
        fallbacks: Sequence[str] | None = None,
    ) -> None:
        super().__init__(ws_url, rest_url, fallbacks)
        if depth not in _DEPTHS:
            raise ConfigError(f"bybit book depth {depth}: one of {_DEPTHS}")
        self.depth = self.book_depth = depth
        self.symbols: dict[str, str] = {}  # BTCUSDT -> ours
        self.tickers: dict[str, dict[str, Any]] = {}  # the last value of every ticker field

    def to_exchange_symbol(self, symbol: str) -> str:
        native = symbol.removesuffix("-PERP").replace("-", "")
        self.symbols[native] = symbol
        return native

    def url(self, symbols: Sequence[str], feeds: Sequence[Feed], base: str | None = None) -> str:
        categories = {category_of(s) for s in symbols}
        if len(categories) != 1:
            raise ConfigError(
                f"bybit: one category (spot, linear, inverse) per feed, got {sorted(categories)}"
            )
        return (base or self.ws_url_in_use).replace("{category}", categories.pop())

    def _topics(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        topics: list[str] = []
        for feed in feeds:
            topic = _TOPICS.get(feed)
            if topic is None:
                continue
            for symbol in symbols:
                name = f"{topic.format(depth=self.depth)}.{self.to_exchange_symbol(symbol)}"
                if name not in topics:
                    topics.append(name)
        return topics

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        return [orjson.dumps({"op": "subscribe", "args": self._topics(symbols, feeds)}).decode()]

    def resubscribe_book(self, symbol: str) -> list[str]:
        args = self._topics([symbol], ["book"])
        return [orjson.dumps({"op": op, "args": args}).decode() for op in ("unsubscribe", "subscribe")]

    def _symbol(self, native: str) -> str:
        symbol = self.symbols.get(native)
        if symbol is None:
            raise MalformedMessage(f"bybit: data for unsubscribed symbol {native}")
        return symbol

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        msg = orjson.loads(frame)
        out = Parsed()
        topic = msg.get("topic") if isinstance(msg, dict) else None
        if topic is None:
            if isinstance(msg, dict) and msg.get("success") is False:
                raise MalformedMessage(f"bybit {msg.get('op')} refused: {msg.get('ret_msg')}")
            out.control = True
            return out
        kind = topic.split(".", 1)[0]
        data = msg["data"]
        if kind == "orderbook":
            update = data["u"]
            snapshot = msg["type"] == "snapshot" or update == 1
            out.books.append(
                BookMessage(
                    self._symbol(data["s"]),
                    snapshot,
                    [(Decimal(p), Decimal(q)) for p, q in data["b"]],
                    [(Decimal(p), Decimal(q)) for p, q in data["a"]],
                    last=update,
                    prev=None if snapshot else update - 1,
                    event_timestamp=msg.get("cts") or msg.get("ts"),
                    atom_timestamp=atom_timestamp,
                    engine_sequence=data.get("seq"),  # stored on every record of the message
                    engine_timestamp=msg.get("cts"),
                )
            )
        elif kind == "publicTrade":
            for item in data:
                side = taker_side(item["S"], "Buy", "Sell")
                symbol = self._symbol(item["s"])
                out.records.append(
                    trade(self.name, symbol, item["p"], item["v"], side, item["i"], item["T"], atom_timestamp)
                )
        elif kind == "tickers":
            out.records.extend(self._ticker(msg["type"], data, msg.get("ts"), atom_timestamp))
        else:
            out.control = True
        return out

    def _ticker(self, kind: str, data: dict[str, Any], ts: int | None, atom: int) -> list[Record]:
        symbol = self._symbol(data["symbol"])
        state = self.tickers.setdefault(symbol, {})
        if kind == "snapshot":
            state.clear()
        state.update({k: v for k, v in data.items() if v not in (None, "")})
        out: list[Record] = []

        def opt(key: str) -> Decimal | None:
            return dec(state[key]) if key in state else None

        if {"bid1Price", "ask1Price", "bid1Size", "ask1Size"} & data.keys():
            out.append(
                Ticker(
                    self.name,
                    symbol,
                    opt("bid1Price"),
                    opt("bid1Size"),
                    opt("ask1Price"),
                    opt("ask1Size"),
                    ts,
                    atom,
                )
            )
        if "fundingRate" in data or "nextFundingTime" in data:
            next_time = int(state["nextFundingTime"]) if "nextFundingTime" in state else None
            if "fundingRate" in state:
                out.append(
                    FundingRate(
                        self.name,
                        symbol,
                        dec(state["fundingRate"]),
                        None,
                        opt("markPrice"),
                        next_time,
                        ts,
                        atom,
                    )
                )
        if "openInterest" in data:
            out.append(OpenInterest(self.name, symbol, dec(state["openInterest"]), ts, atom))
        return out
