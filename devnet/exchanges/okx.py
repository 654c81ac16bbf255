"""A local OKX v5 public websocket replaying ``okx/OKX.ws.1.0`` (recorded 2022-05-13).

Recorded: every level, trade, ticker and checksum. Constructed (today's API, as documented): ``seqId`` /
``prevSeqId`` on ``books`` frames (the market's own counter per instrument), snapshots served on a
(re)subscribe mid-stream (built from the market's book; checksum 0, as OKX sends since 2026-06-23), the
``pong`` answer to ``ping`` and the subscribe acknowledgements.
"""

from __future__ import annotations

import json
from pathlib import Path

from devnet.exchanges import recording
from devnet.exchanges.server import Event, MarketBook, ReplayServer, Session

# funding-rate and open-interest frames are not in the recording: a test adds constructed ones as events
# (``Event(instId, "funding" | "open_interest", raw=frame text)``), sent verbatim to their subscribers
_CHANNELS = {
    "books": "book", "trades": "trades", "tickers": "ticker", "funding-rate": "funding",
    "open-interest": "open_interest",
}  # fmt: skip


def events(path: Path | None = None) -> list[Event]:
    out = []
    for payload in recording.received(path or recording.FIXTURES / "okx" / "OKX.ws.1.0"):
        msg = json.loads(payload)
        if "data" not in msg:
            continue
        channel, inst = msg["arg"]["channel"], msg["arg"]["instId"]
        if channel == "books":
            (data,) = msg["data"]
            kind = "snapshot" if msg["action"] == "snapshot" else "book"
            bids = [(row[0], row[1]) for row in data["bids"]]
            asks = [(row[0], row[1]) for row in data["asks"]]
            out.append(Event(inst, kind, bids, asks, raw=data))
        else:
            out.append(Event(inst, _CHANNELS[channel], raw=payload))
    return out


class OkxServer(ReplayServer):
    ignore_resubscribes = 0  # books re-subscriptions to leave unanswered (an exchange that drops a request)

    def render(self, event: Event, book: MarketBook) -> str:
        if event.channel not in ("book", "snapshot"):
            return str(event.raw)
        data = dict(event.raw)
        data["prevSeqId"] = -1 if event.channel == "snapshot" else book.prev
        data["seqId"] = book.sequence
        action = "snapshot" if event.channel == "snapshot" else "update"
        return json.dumps(
            {"arg": {"channel": "books", "instId": event.symbol}, "action": action, "data": [data]}
        )

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        data = {
            "asks": [[p, s, "0", "1"] for p, s in book.sorted_asks()],
            "bids": [[p, s, "0", "1"] for p, s in book.sorted_bids()],
            "ts": "1652459300000",
            "checksum": 0,
            "prevSeqId": -1,
            "seqId": book.sequence,
        }
        return json.dumps(
            {"arg": {"channel": "books", "instId": symbol}, "action": "snapshot", "data": [data]}
        )

    def on_message(self, session: Session, text: str) -> None:
        if text == "ping":
            session.send("pong")
            return
        msg = json.loads(text)
        for arg in msg.get("args", []):
            session.send(json.dumps({"event": msg["op"], "arg": arg}))
            channel = _CHANNELS.get(arg["channel"])
            if channel is None:
                continue
            if msg["op"] == "subscribe":
                if channel == "book" and session.resubscribed(arg["instId"]) and self.ignore_resubscribes > 0:
                    self.ignore_resubscribes -= 1
                    continue
                self.subscribed(session, channel, arg["instId"])
            else:
                session.subscriptions.discard((channel, arg["instId"]))

    def corrupt(self, frame: str) -> str:
        msg = json.loads(frame)
        msg["data"][0]["checksum"] ^= 0x5A5A
        return json.dumps(msg)
