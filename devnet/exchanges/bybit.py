"""A local Bybit v5 public websocket (inverse category) replaying ``bybit/BYBIT.ws.26.0`` (recorded
2021-04-17 on the retired v2 ``realtime`` feed: BTCUSD and EOSUSD ``orderBookL2_25`` and ``trade``).

Recorded: every level (price text, size), every delete/update/insert, every trade (id, side, size, price,
time). Constructed (v5 as documented): the envelopes (``orderbook.50.<sym>`` snapshot/delta with ``b``/``a``
levels, a v2 delete becoming size "0"; ``publicTrade.<sym>``), ``u`` (the market's own counter per symbol),
``seq`` (v2's ``cross_seq``), subscribe acknowledgements, ``pong`` and snapshots on a (re)subscribe.
"""

from __future__ import annotations

import json
from decimal import Decimal

from devnet.exchanges import recording
from devnet.exchanges.server import Event, MarketBook, ReplayServer, Session

DEPTH = 50


def _side(rows: list[dict[str, object]], side: str, delete: bool = False) -> list[tuple[str, str]]:
    return [(str(r["price"]), "0" if delete else str(r["size"])) for r in rows if r["side"] == side]


def events() -> list[Event]:
    out = []
    for payload in recording.received(recording.FIXTURES / "bybit" / "BYBIT.ws.26.0"):
        msg = json.loads(payload, parse_float=Decimal)
        topic = msg.get("topic")
        if topic is None:
            continue
        kind, symbol = topic.split(".", 1)
        if kind.startswith("orderBookL2"):
            data = msg["data"]
            if msg["type"] == "snapshot":
                event = Event(symbol, "snapshot", _side(data, "Buy"), _side(data, "Sell"), raw=msg)
            else:
                bids = _side(data["delete"], "Buy", True) + _side(data["update"] + data["insert"], "Buy")
                asks = _side(data["delete"], "Sell", True) + _side(data["update"] + data["insert"], "Sell")
                event = Event(symbol, "book", bids, asks, raw=msg)
            out.append(event)
        elif kind == "trade":
            out.append(Event(symbol, "trades", raw=msg))
    return out


class BybitServer(ReplayServer):
    def render(self, event: Event, book: MarketBook) -> str:
        msg = event.raw
        if event.channel == "ticker":  # constructed v5 ``tickers`` frames (text) a test adds as events
            return str(msg)
        if event.channel == "trades":
            trades = [
                {
                    "T": t["trade_time_ms"],
                    "s": t["symbol"],
                    "S": t["side"],
                    "v": str(t["size"]),
                    "p": str(t["price"]),
                    "L": t["tick_direction"],
                    "i": t["trade_id"],
                    "BT": False,
                }
                for t in msg["data"]
            ]
            return json.dumps(
                {
                    "topic": f"publicTrade.{event.symbol}",
                    "type": "snapshot",
                    "ts": trades[-1]["T"],
                    "data": trades,
                }
            )
        kind = "snapshot" if event.channel == "snapshot" else "delta"
        return self._book_frame(
            kind,
            event.symbol,
            event.bids,
            event.asks,
            book.sequence,
            msg.get("cross_seq", 0),
            msg.get("timestamp_e6", 0) // 1000,
        )

    @staticmethod
    def _book_frame(
        kind: str,
        symbol: str,
        bids: list[tuple[str, str]],
        asks: list[tuple[str, str]],
        u: int,
        seq: int,
        ts: int,
    ) -> str:
        data = {"s": symbol, "b": [list(b) for b in bids], "a": [list(a) for a in asks], "u": u, "seq": seq}
        return json.dumps(
            {"topic": f"orderbook.{DEPTH}.{symbol}", "type": kind, "ts": ts, "data": data, "cts": ts}
        )

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return self._book_frame(
            "snapshot", symbol, book.sorted_bids(), book.sorted_asks(), book.sequence, 0, 0
        )

    def on_message(self, session: Session, text: str) -> None:
        msg = json.loads(text)
        if msg.get("op") == "ping":
            session.send(json.dumps({"success": True, "ret_msg": "pong", "op": "ping"}))
            return
        session.send(json.dumps({"success": True, "ret_msg": "", "op": msg["op"], "conn_id": "local"}))
        for topic in msg.get("args", []):
            kind, symbol = topic.rsplit(".", 1)
            channel = {"publicTrade": "trades", "tickers": "ticker"}.get(kind)
            channel = "book" if kind.startswith("orderbook.") else channel
            if channel is None:
                continue
            if msg["op"] == "subscribe":
                self.subscribed(session, channel, symbol)
            else:
                session.subscriptions.discard((channel, symbol))
