"""Coinbase Exchange ``full`` channel: the L3 book (every order by id) and its trades, exchange name
``coinbase-l3`` (apart from ``coinbase``, the Advanced Trade L2 feed, so the two books never mix).

Every message of a product carries that product's ``sequence``; an ``open``::

    {"type":"open","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","sequence":10,
     "order_id":"d50ec984-77a8-460a-b958-66f114b0de9b","price":"200.2","remaining_size":"1.00","side":"sell"}

``received`` (an order reached the engine: no resting change), ``open`` (it rests), ``done`` (it left the
book, or never rested), ``match`` (``size`` traded off ``maker_order_id``; ``side`` is the maker's, so the
taker is the other side), ``change`` (``new_size``, and ``new_price`` for a modify). Invariant (Coinbase's
documented procedure, ``cex.l3``): buffer, fetch ``/products/{id}/book?level=3``
(``{"sequence":S,"bids":[[price,size,order_id],...],"asks":[...]}``), drop ``sequence <= S``, then each
message is the last + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal

import orjson

from cex.book import Side
from cex.exchange import Exchange, Feed, MalformedMessage, Parsed, dec, taker_side
from cex.exchanges.coinbase import iso_ms
from cex.l3 import L3Message, OrderOp
from cex.sync import BookMessage, SequenceRule
from records.cex import Trade

_SIDE: dict[str, Side] = {"buy": "bid", "sell": "ask"}
_OTHER = {"buy": "sell", "sell": "buy"}
_ORDER_TYPES = ("received", "open", "done", "match", "change", "activate")


def _side(text: object) -> Side:
    side = _SIDE.get(str(text))
    if side is None:
        raise MalformedMessage(f"unknown side {text!r}")
    return side


class CoinbaseExchange(Exchange):
    name = "coinbase-l3"
    ws_url = "wss://ws-feed.exchange.coinbase.com"
    rest_url = "https://api.exchange.coinbase.com"
    rule: ClassVar[SequenceRule] = "range"  # per product, each message last + 1 (cex.l3)
    snapshot_by: ClassVar[Literal["ws", "rest"]] = "rest"
    book_level: ClassVar[int] = 3

    def to_exchange_symbol(self, symbol: str) -> str:
        return symbol

    def subscribe(self, symbols: Sequence[str], feeds: Sequence[Feed]) -> list[str]:
        # ``full`` carries the book and the trades (match); ``heartbeat`` keeps a quiet product's socket busy
        channels = ["heartbeat"]
        if "book" in feeds or "trades" in feeds:
            channels.insert(0, "full")
        msg = {"type": "subscribe", "product_ids": list(symbols), "channels": channels}
        return [orjson.dumps(msg).decode()]

    def snapshot_url(self, symbol: str) -> str:
        return f"{(self.rest_url_in_use or '').rstrip('/')}/products/{symbol}/book?level=3"

    def parse_snapshot(self, symbol: str, body: bytes, atom_timestamp: int) -> BookMessage:
        doc = orjson.loads(body)
        ops = [
            OrderOp("open", str(order_id), side, dec(price), dec(size))
            for key, side in (("bids", _SIDE["buy"]), ("asks", _SIDE["sell"]))
            for price, size, order_id, *_ in doc[key]
        ]
        msg = L3Message(symbol, True, int(doc["sequence"]), ops, atom_timestamp=atom_timestamp)
        return msg  # type: ignore[return-value]  # the L3 face of a book message (cex.l3)

    def parse(self, frame: str | bytes, atom_timestamp: int) -> Parsed:
        msg = orjson.loads(frame)
        if not isinstance(msg, dict):
            raise MalformedMessage("not an object")
        kind = msg.get("type")
        out = Parsed()
        if kind not in _ORDER_TYPES:
            if kind == "error":
                raise MalformedMessage(f"coinbase error: {msg.get('message')} {msg.get('reason')}")
            out.control = True  # subscriptions, heartbeat
            return out
        symbol = msg["product_id"]
        sequence = msg["sequence"]
        if not isinstance(sequence, int):
            raise MalformedMessage(f"sequence {sequence!r}")
        ts = iso_ms(msg.get("time"))
        ops: list[OrderOp] = []
        if kind == "open":
            ops.append(OrderOp("open", msg["order_id"], _side(msg["side"]), dec(msg["price"]),
                               dec(msg["remaining_size"])))  # fmt: skip
        elif kind == "done":
            ops.append(OrderOp("done", msg["order_id"], _side(msg["side"]), None, Decimal(0)))
        elif kind == "match":
            ops.append(OrderOp("match", msg["maker_order_id"], _side(msg["side"]), dec(msg["price"]),
                               dec(msg["size"])))  # fmt: skip
            out.records.append(self._trade(msg, ts, atom_timestamp))
        elif kind == "change" and msg.get("new_size") is not None:
            price = msg.get("new_price") or msg.get("price")
            ops.append(OrderOp("change", msg["order_id"], _side(msg["side"]),
                               None if price is None else dec(price), dec(msg["new_size"])))  # fmt: skip
        out.books.append(L3Message(symbol, False, sequence, ops, ts, atom_timestamp))  # type: ignore[arg-type]
        return out

    def _trade(self, msg: dict[str, Any], ts: int | None, atom: int) -> Trade:
        maker = taker_side(msg["side"])
        return Trade(
            exchange=self.name,
            symbol=msg["product_id"],
            price=dec(msg["price"]),
            size=dec(msg["size"]),
            taker_side=_OTHER[maker],
            trade_id=str(msg["trade_id"]),
            maker_order_id=msg.get("maker_order_id"),
            taker_order_id=msg.get("taker_order_id"),
            event_timestamp=ts,
            atom_timestamp=atom,
        )
