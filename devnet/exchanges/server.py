"""A replay exchange: one market that plays recorded events once, broadcast to every connected session,
one websocket port that also answers REST snapshot requests, and faults injected per session.

The market keeps its own book per symbol (plain dicts of the exchange's price/size text, sorted only when
a snapshot is served: deliberately nothing of ``cex/``), so snapshots served mid-stream are the exchange's
truth at that moment and ``final_books()`` is what any correct client must end with.

Faults (``Fault(session, symbol, nth, kind)``: the session's ``nth`` book frame of ``symbol``, 0-based):
``drop``, ``duplicate``, ``reorder`` (held back and sent after the symbol's next book frame), ``corrupt``
(checksum), ``close`` (the socket closes instead), ``silent`` (the session sends nothing for ``silence``
seconds; what the market plays meanwhile never reaches it), ``reset`` (the exchange restarts its ids).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass(frozen=True)
class Fault:
    session: int
    symbol: str
    nth: int
    kind: str  # drop | duplicate | reorder | corrupt | close | silent | reset


@dataclass
class Event:
    """One recorded market event. ``book`` events carry levels as text (absolute sizes)."""

    symbol: str
    channel: str  # book | trades | ticker | snapshot (a market-state reset, e.g. Binance's REST snapshot)
    bids: list[tuple[str, str]] = field(default_factory=list)
    asks: list[tuple[str, str]] = field(default_factory=list)
    raw: Any = None  # what the exchange adapter needs to render it (the recorded frame or its data)


class MarketBook:
    """The market's own book: price text -> size text, keyed by Decimal for ordering only."""

    def __init__(self, depth: int | None = None) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.depth = depth
        self.sequence = 0  # the exchange's update id after the last event (OKX seqId)
        self.prev = -1  # ... and before it (OKX prevSeqId)
        self.frames = 0  # book events applied
        self.known = False
        self.known_event = asyncio.Event()

    def load(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        self.bids, self.asks = {}, {}
        self.apply(bids, asks)
        self.known = True
        self.known_event.set()

    def apply(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)
        if self.depth is not None:
            self.bids = dict(sorted(self.bids.items(), reverse=True)[: self.depth])
            self.asks = dict(sorted(self.asks.items())[: self.depth])

    def sorted_bids(self) -> list[tuple[str, str]]:
        return [v for _, v in sorted(self.bids.items(), reverse=True)]

    def sorted_asks(self) -> list[tuple[str, str]]:
        return [v for _, v in sorted(self.asks.items())]

    def as_decimals(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        return (
            [(Decimal(p), Decimal(s)) for p, s in self.sorted_bids()],
            [(Decimal(p), Decimal(s)) for p, s in self.sorted_asks()],
        )


SEQ = "__SEQ__"


class Session:
    def __init__(self, index: int, ws: ServerConnection) -> None:
        self.index = index
        self.ws = ws
        self.subscriptions: set[tuple[str, str]] = set()  # (channel, symbol)
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.book_frames: dict[str, int] = {}
        self.held: dict[str, str] = {}  # symbol -> a book frame held back (reorder)
        self.silent_until = 0.0
        self.book_subscribed: set[str] = set()
        self.sequence = 0  # per-connection message counter, for exchanges that number every message
        self.sent: list[str] = []  # every frame written to the socket, in order (what the client received)

    def resubscribed(self, symbol: str) -> bool:
        """Whether this books subscription of ``symbol`` is a second one on this connection."""
        seen = symbol in self.book_subscribed
        self.book_subscribed.add(symbol)
        return seen

    def number(self, frame: str) -> str:
        """Fill in the connection's next message number (``__SEQ__``): numbered when the exchange sends it,
        so a frame lost or held back later leaves a gap or a step back."""
        if SEQ in frame:
            frame = frame.replace(SEQ, str(self.sequence), 1)
            self.sequence += 1
        return frame

    def send(self, frame: str) -> None:
        frame = self.number(frame)
        if asyncio.get_running_loop().time() >= self.silent_until:
            self.outbox.put_nowait(frame)


class ReplayServer:
    """Subclasses render events into their exchange's frames and answer its control messages."""

    depth: int | None = None

    def __init__(self, events: Iterable[Event], faults: list[Fault] | None = None, pace: float = 0.0005,
                 silence: float = 1.5, wait_for_sessions: int = 1) -> None:  # fmt: skip
        self.events = events
        self.faults = {(f.session, f.symbol, f.nth): f.kind for f in faults or [] if f.kind != "reset"}
        # a reset is the exchange's, for every session: (symbol, nth book event of the market)
        self.resets = {(f.symbol, f.nth) for f in faults or [] if f.kind == "reset"}
        self.pace = pace
        self.silence = silence
        self.wait_for_sessions = wait_for_sessions
        self.books: dict[str, MarketBook] = {}
        self.sessions: list[Session] = []
        self.position = 0
        self.done = asyncio.Event()
        self.started = asyncio.Event()
        self._server: Server | None = None
        self._player: asyncio.Task[None] | None = None
        self.port = 0

    # --- exchange-specific hooks --------------------------------------------------------------------
    def render(self, event: Event, book: MarketBook) -> str:
        raise NotImplementedError

    def snapshot_frame(self, symbol: str, book: MarketBook) -> str | None:
        """A ws snapshot of the market's book now (None: this exchange snapshots over REST)."""
        raise NotImplementedError

    def on_message(self, session: Session, text: str) -> None:
        raise NotImplementedError

    def on_connect(self, session: Session, path: str) -> None:
        """Binance puts its streams in the URL."""

    async def rest(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        return 404, "not found"

    def corrupt(self, frame: str) -> str:
        return frame

    def follow_ups(self, event: Event, book: MarketBook) -> list[tuple[str, str]]:
        """(channel, frame) sent after an event's own frame to that channel's subscribers (live tickers)."""
        return []

    def heartbeat(self) -> str | None:
        return None

    # --- running ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ReplayServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._http, max_size=None,
                                   compression=None)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        self._player = asyncio.ensure_future(self._play())
        return self

    async def stop(self) -> None:
        if self._player is not None:
            self._player.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def final_books(self) -> dict[str, MarketBook]:
        return self.books

    def subscribed(self, session: Session, channel: str, symbol: str) -> None:
        """A session subscribed: a ws snapshot of the book as it stands now goes first."""
        session.subscriptions.add((channel, symbol))
        if channel == "book" and symbol in self.books and self.books[symbol].known:
            frame = self.snapshot_frame(symbol, self.books[symbol])
            if frame is not None:
                session.send(frame)
        if len({s.index for s in self.sessions if s.subscriptions}) >= self.wait_for_sessions:
            self.started.set()

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        parts = urlsplit(request.path)
        status, body = await self.rest(parts.path, parse_qs(parts.query))
        return connection.respond(status, body)

    async def _handler(self, ws: ServerConnection) -> None:
        session = Session(len(self.sessions), ws)
        self.sessions.append(session)
        self.on_connect(session, ws.request.path if ws.request else "/")
        sender = asyncio.ensure_future(self._send(session))
        beat = self.heartbeat()
        try:
            while True:
                try:
                    async with asyncio.timeout(0.25):  # not wait_for: 3.11's can drop a cancellation
                        text = await ws.recv()
                except TimeoutError:
                    if beat is not None:
                        session.send(beat)
                    continue
                self.on_message(session, text if isinstance(text, str) else text.decode())
        except ConnectionClosed:
            pass
        finally:
            session.outbox.put_nowait(None)
            sender.cancel()
            session.subscriptions.clear()  # keeps its index; receives nothing more

    async def _send(self, session: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            while (frame := await session.outbox.get()) is not None:
                if frame == "\0close":
                    await session.ws.close()
                    return
                await session.ws.send(frame)
                session.sent.append(frame)

    async def _play(self) -> None:
        await self.started.wait()
        await asyncio.sleep(0.05)  # the other sessions' subscribe frames
        loop = asyncio.get_running_loop()
        for position, event in enumerate(self.events):
            self.position = position
            book = self.books.setdefault(event.symbol, MarketBook(self.depth))
            frame = self.apply(event, book)
            if frame is not None:
                for session in list(self.sessions):
                    channel = "book" if event.channel == "snapshot" else event.channel
                    if (channel, event.symbol) in session.subscriptions:
                        self._deliver(session, event, frame, loop.time())
            for channel, extra in self.follow_ups(event, book):
                for session in list(self.sessions):
                    if (channel, event.symbol) in session.subscriptions:
                        session.send(extra)
            if self.pace:
                await asyncio.sleep(self.pace)
        self.done.set()

    def apply(self, event: Event, book: MarketBook) -> str | None:
        """Advance the market by one event; the frame to broadcast (None: nothing is sent)."""
        if event.channel in ("snapshot", "book"):
            book.prev = book.sequence
            if (event.symbol, book.frames) in self.resets:
                book.sequence = 0  # the exchange restarts its ids: the next one is below the last
            book.frames += 1
            if event.channel == "snapshot":
                book.load(event.bids, event.asks)
            else:
                book.apply(event.bids, event.asks)
            book.sequence += 1
        return self.render(event, book)

    def _deliver(self, session: Session, event: Event, frame: str, now: float) -> None:
        frame = session.number(frame)
        if event.channel not in ("book", "snapshot"):
            session.send(frame)
            return
        nth = session.book_frames.get(event.symbol, 0)
        session.book_frames[event.symbol] = nth + 1
        fault = self.faults.get((session.index, event.symbol, nth))
        if fault == "drop":
            return
        if fault == "close":
            session.outbox.put_nowait("\0close")
            return
        if fault == "silent":
            session.silent_until = now + self.silence
            return
        if fault == "corrupt":
            frame = self.corrupt(frame)
        if fault == "reorder":
            session.held[event.symbol] = frame
            return
        session.send(frame)
        if fault == "duplicate":
            session.send(frame)
        held = session.held.pop(event.symbol, None)
        if held is not None:
            session.send(held)
