"""A local Binance spot stream + REST snapshot replaying ``binance/BINANCE.ws.1.0`` and ``BINANCE.http.0.0``
(recorded 2021-10-12).

Recorded: every depthUpdate (``U``/``u`` and levels), bookTicker, aggTrade frame, and the four REST depth
snapshots, placed in the stream at the moment they were recorded. The first REST request of a symbol is
answered with its recorded snapshot body, verbatim, when the market stands exactly there; later requests
(after a resync) are built from the market's book at that moment (constructed). Streams go in the URL
(``/stream?streams=nknusdt@depth@100ms/...``) as on Binance; ``@trade`` subscribers get the recorded
``aggTrade`` frames (the recording has no ``trade`` stream).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from devnet.exchanges import recording
from devnet.exchanges.server import Event, MarketBook, ReplayServer, Session

_STREAMS = {"depth@100ms": "book", "trade": "trades", "aggTrade": "trades", "bookTicker": "ticker"}


def events() -> list[Event]:
    folder = recording.FIXTURES / "binance"
    timed: list[tuple[float, Event]] = []
    for line in recording.read(folder / "BINANCE.ws.1.0"):
        if line.kind != "received":
            continue
        msg = json.loads(line.payload)
        stream = msg["stream"].split("@", 1)[1]
        data = msg["data"]
        channel = _STREAMS.get(stream)
        if channel is None:
            continue  # kline: not subscribed by the feed
        if channel == "book":
            event = Event(data["s"], "book", [tuple(r) for r in data["b"]], [tuple(r) for r in data["a"]],
                          raw=data)  # fmt: skip
        else:
            event = Event(data["s"], channel, raw=data)
        timed.append((line.timestamp or 0.0, event))
    for line in recording.read(folder / "BINANCE.http.0.0"):
        body = json.loads(line.payload)
        symbol = parse_qs(urlsplit(line.url or "").query)["symbol"][0]
        bids = [tuple(r) for r in body["bids"]]
        asks = [tuple(r) for r in body["asks"]]
        timed.append((line.timestamp or 0.0, Event(symbol, "snapshot", bids, asks, raw=line.payload)))
    timed.sort(key=lambda t: t[0])
    return [e for _, e in timed]


class BinanceServer(ReplayServer):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pending: dict[str, list[Event]] = {}  # depth events before the market knows the book
        self.verbatim: dict[str, str] = {}  # symbol -> recorded REST body, while the market stands there
        self.served_recorded: list[str] = []

    def apply(self, event: Event, book: MarketBook) -> str | None:
        if event.channel == "snapshot":
            body = json.loads(str(event.raw))
            book.load(event.bids, event.asks)
            book.sequence = int(body["lastUpdateId"])
            self.verbatim[event.symbol] = str(event.raw)
            for update in self.pending.pop(event.symbol, []):
                self._apply_depth(update, book)
            return None
        if event.channel == "book":
            if not book.known:
                self.pending.setdefault(event.symbol, []).append(event)
            else:
                self._apply_depth(event, book)
        return json.dumps({"stream": self._stream_name(event), "data": event.raw})

    def _apply_depth(self, event: Event, book: MarketBook) -> None:
        if event.raw["u"] <= book.sequence:
            return
        book.apply(event.bids, event.asks)
        book.sequence = event.raw["u"]
        self.verbatim.pop(event.symbol, None)

    @staticmethod
    def _stream_name(event: Event) -> str:
        kind = {"book": "depth@100ms", "trades": "aggTrade", "ticker": "bookTicker"}[event.channel]
        return f"{event.symbol.lower()}@{kind}"

    def render(self, event: Event, book: MarketBook) -> str:
        raise AssertionError("apply renders Binance frames")

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        return None  # REST snapshots only

    def on_connect(self, session: Session, path: str) -> None:
        streams = parse_qs(urlsplit(path).query).get("streams", [""])[0]
        for stream in filter(None, streams.split("/")):
            native, kind = stream.split("@", 1)
            channel = _STREAMS.get(kind)
            if channel is not None:
                self.subscribed(session, channel, native.upper())

    def on_message(self, session: Session, text: str) -> None:
        msg = json.loads(text)
        session.send(json.dumps({"result": None, "id": msg.get("id")}))

    async def rest(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        if path != "/api/v3/depth" or "symbol" not in query:
            return 400, '{"code":-1102,"msg":"Mandatory parameter symbol was not sent"}'
        symbol = query["symbol"][0]
        book = self.books.setdefault(symbol, MarketBook())
        await asyncio.wait_for(book.known_event.wait(), 10)
        if symbol in self.verbatim:
            self.served_recorded.append(symbol)
            return 200, self.verbatim[symbol]
        bids = [list(level) for level in book.sorted_bids()]
        asks = [list(level) for level in book.sorted_asks()]
        return 200, json.dumps({"lastUpdateId": book.sequence, "bids": bids, "asks": asks})
