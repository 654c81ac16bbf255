"""A local Coinbase Advanced Trade websocket replaying ``coinbase/COINBASE.ws.28.0.first1000lines`` (recorded
2021-04-17 on the retired Coinbase Pro feed: ``level2`` snapshots and ``l2update``s, ``match`` trades).

Recorded: every level (price and size text), every change, every trade (id, maker side, size, price, time).
Constructed (Advanced Trade as documented): the ``l2_data`` / ``market_trades`` / ``heartbeats`` envelopes,
``sequence_num`` (counted per connection over every message, as Coinbase does), "offer" for the ask side,
the trade side upper-cased (the maker's side, as recorded), acknowledgements and snapshots on a (re)subscribe.
"""

from __future__ import annotations

import json

from devnet.exchanges import recording
from devnet.exchanges.server import SEQ, Event, MarketBook, ReplayServer, Session

RECORDING = recording.FIXTURES / "coinbase" / "COINBASE.ws.28.0.first1000lines"
_SIDE = {"buy": "bid", "sell": "offer"}


def events() -> list[Event]:
    out = []
    for payload in recording.received(RECORDING):
        msg = json.loads(payload)
        kind = msg.get("type")
        if kind == "snapshot":
            out.append(
                Event(
                    msg["product_id"],
                    "snapshot",
                    [tuple(r) for r in msg["bids"]],
                    [tuple(r) for r in msg["asks"]],
                    raw=msg,
                )
            )
        elif kind == "l2update":
            bids = [(p, q) for side, p, q in msg["changes"] if side == "buy"]
            asks = [(p, q) for side, p, q in msg["changes"] if side == "sell"]
            out.append(Event(msg["product_id"], "book", bids, asks, raw=msg))
        elif kind in ("match", "last_match"):
            out.append(Event(msg["product_id"], "trades", raw=msg))
    return out


def _envelope(channel: str, events: list[dict[str, object]], timestamp: str) -> str:
    head = json.dumps({"channel": channel, "client_id": "", "timestamp": timestamp})
    return head[:-1] + f', "sequence_num": {SEQ}, "events": {json.dumps(events)}}}'


class CoinbaseServer(ReplayServer):
    def render(self, event: Event, book: MarketBook) -> str:
        msg = event.raw
        if event.channel == "trades":
            kind = "snapshot" if msg["type"] == "last_match" else "update"
            item = {
                "trade_id": str(msg["trade_id"]),
                "product_id": msg["product_id"],
                "price": msg["price"],
                "size": msg["size"],
                "side": msg["side"].upper(),
                "time": msg["time"],
            }
            return _envelope("market_trades", [{"type": kind, "trades": [item]}], msg["time"])
        if event.channel == "snapshot":
            return self._l2("snapshot", event.symbol, event.bids, event.asks, "2021-04-17T16:43:30.000000Z")
        return self._l2("update", event.symbol, event.bids, event.asks, msg["time"])

    @staticmethod
    def _l2(
        kind: str, product: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]], time: str
    ) -> str:
        updates = [{"side": "bid", "event_time": time, "price_level": p, "new_quantity": q} for p, q in bids]
        updates += [
            {"side": "offer", "event_time": time, "price_level": p, "new_quantity": q} for p, q in asks
        ]
        return _envelope("l2_data", [{"type": kind, "product_id": product, "updates": updates}], time)

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return self._l2(
            "snapshot", symbol, book.sorted_bids(), book.sorted_asks(), "2021-04-17T16:43:40.000000Z"
        )

    def heartbeat(self) -> str | None:
        return _envelope(
            "heartbeats",
            [{"current_time": "2021-04-17T16:43:40Z", "heartbeat_counter": 1}],
            "2021-04-17T16:43:40Z",
        )

    def on_message(self, session: Session, text: str) -> None:
        msg = json.loads(text)
        channel = msg["channel"]
        session.send(
            _envelope(
                "subscriptions",
                [{"subscriptions": {channel: msg.get("product_ids", [])}}],
                "2021-04-17T16:43:30Z",
            )
        )
        ours = {"level2": "book", "market_trades": "trades"}.get(channel)
        if ours is None:
            return
        for product in msg.get("product_ids", []):
            if msg["type"] == "subscribe":
                self.subscribed(session, ours, product)
            else:
                session.subscriptions.discard((ours, product))
