"""A local Kraken websocket v2 replaying the recorded v1 book frames converted to v2 (see ``kraken_v2``).

Recorded: levels, their order, the update checksums. Constructed (v2 as documented): the envelopes, the
``instrument`` snapshot with each pair's precisions, subscribe acknowledgements, heartbeats, and snapshots
served on a (re)subscribe mid-stream (from the market's book, truncated to the subscribed depth, with the
checksum computed here by Kraken's rule: plain code, nothing of ``cex/``).
"""

from __future__ import annotations

import json
import re
import zlib

from devnet.exchanges import kraken_v2
from devnet.exchanges.server import Event, MarketBook, ReplayServer, Session

DEPTH = 1000
RECORDING = kraken_v2.recording.FIXTURES / "kraken" / "KRAKEN.ws.50.0.first500lines"


def events(recorded: kraken_v2.KrakenV2Recording | None = None) -> list[Event]:
    recorded = recorded or kraken_v2.from_v1(RECORDING)
    return [
        Event(b.symbol, "snapshot" if b.snapshot else "book", b.bids, b.asks, raw=b) for b in recorded.books
    ]


def checksum(book: MarketBook) -> int:
    def digits(text: str) -> str:
        return text.replace(".", "").lstrip("0")

    top = book.sorted_asks()[:10] + book.sorted_bids()[:10]
    return zlib.crc32("".join(digits(p) + digits(q) for p, q in top).encode())


class KrakenServer(ReplayServer):
    depth = DEPTH

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.recorded = kraken_v2.from_v1(RECORDING)

    def render(self, event: Event, book: MarketBook) -> str:
        frame: kraken_v2.BookFrame = event.raw
        return frame.text()

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return kraken_v2.book_frame(
            "snapshot",
            symbol,
            book.sorted_bids(),
            book.sorted_asks(),
            checksum(book),
            "2021-04-17T16:49:00.000000Z",
        )

    def heartbeat(self) -> str | None:
        return '{"channel":"heartbeat"}'

    def instrument_frame(self) -> str:
        return self.recorded.instrument_frame()

    def depth_refused(self, depth: object) -> str | None:
        """The error text a book subscription at ``depth`` gets, or None when it is served."""
        return None if depth == DEPTH else "depth not replayed"

    def on_message(self, session: Session, text: str) -> None:
        msg = json.loads(text)
        method, params = msg["method"], msg.get("params", {})
        if method == "ping":
            session.send(json.dumps({"method": "pong"}))
            return
        channel = params["channel"]
        if channel == "instrument":
            session.send(json.dumps({"method": method, "result": {"channel": "instrument"}, "success": True}))
            session.send(self.instrument_frame())
            return
        refused = self.depth_refused(params.get("depth", 10)) if channel == "book" else None
        if refused:
            session.send(json.dumps({"method": method, "success": False, "error": refused}))
            return
        for symbol in params.get("symbol", []):
            result = {"channel": channel, "symbol": symbol}
            session.send(json.dumps({"method": method, "result": result, "success": True}))
            if method == "subscribe":
                self.subscribed(session, "trades" if channel == "trade" else channel, symbol)
            else:
                session.subscriptions.discard(("trades" if channel == "trade" else channel, symbol))

    def corrupt(self, frame: str) -> str:
        # the numbers' text must survive (a JSON round trip would turn 0.043130 into a float)
        return re.sub(r'"checksum":(\d+)', lambda m: f'"checksum":{int(m.group(1)) ^ 1}', frame, count=1)
