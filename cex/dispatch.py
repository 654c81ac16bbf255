"""What a feed does with each frame it receives, once for every exchange: parse, de-duplicate, keep the
books (buffer, check, resync, snapshot by REST or by resubscribing), publish. ``cex.feed.FeedHandler``
adds the connections (open, subscribe, read, stale, rollover, reconnect) on top of it.

Every record worth publishing (``Trade``, ``Ticker``, ``FundingRate``, ``OpenInterest``, ``BookSnapshot``,
``BookDelta``) goes on ``queue``, and a ``Resync`` whenever a book was found wrong.

Redundancy: with sequenced books (``prev``/``range`` rules) all connections feed one ``BookSync`` per symbol,
so whichever connection is ahead applies an update and the others' copies are ignored as duplicates;
trades are de-duplicated by trade id. Kraken's books have no ids, so each connection keeps its own and the
lowest live connection with a valid book publishes (a snapshot first when that changes). Records without
ids (tickers, funding, open interest) are de-duplicated by content (all fields but the receipt time) when
they carry the exchange's time, else taken from the leading connection only.

A book is invalidated, a ``Resync`` published and a snapshot requested on a sequence gap, a checksum
failure, a crossed book, a sequence reset, a message it cannot apply (a garbled level), or when its
connection is lost or silent.

``raw=True`` also puts every frame as received (``RawFrame``: receipt time, connection index, the frame
verbatim, malformed ones too) on ``raw_frames``, for the ``cex.<exchange>.raw`` Kafka topic; off by
default (a copy of every frame). Apart from that, ``raw_listener`` (the API's ``cex_raw`` fan-out when
the feed runs in the API's process) is handed each frame synchronously while its ``wanted`` flag is set;
with no listener or no subscriber the cost per frame is one attribute check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
import websockets

from cex.connection import Connection, Recent, identity
from cex.exchange import Exchange, Feed, MalformedMessage, refuse_nul
from cex.l3 import L3Sync
from cex.sync import BookMessage, BookSync, Published, Resync
from core.retry import RetryPolicy
from records.cex import BookSnapshot
from records.codec import Record

log = logging.getLogger("cex.feed")  # the feed's one logger, as before the split from cex/feed.py

# what parsing a frame of valid JSON but the wrong shape raises (a list where an object is expected:
# AttributeError from `.get`): each is a counted, logged skip, never the end of the read loop
_PARSE_ERRORS = (
    MalformedMessage,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    ArithmeticError,
)


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One websocket frame exactly as a connection received it, and when (µs)."""

    exchange: str
    connection: int
    atom_timestamp: int
    frame: str | bytes


class RawListener(Protocol):
    """Takes frames as received, synchronously, when ``wanted`` (the API's ``cex_raw`` fan-out in
    ``dexnode run``); must never wait."""

    wanted: bool

    def raw(self, frame: RawFrame) -> None: ...


class FeedDispatch:
    """Frames in (``on_frame``, from any connection), records and resyncs out (``queue``); the books per
    symbol (one shared by the connections, or one per connection for unsequenced books)."""

    def __init__(
        self,
        exchange: Exchange,
        symbols: Sequence[str],
        feeds: Sequence[Feed],
        *,
        connections: int = 1,
        retry: RetryPolicy | None = None,
        snapshot_every: float | None = None,
        http: httpx.AsyncClient | None = None,
        queue_size: int = 100_000,
        max_connection_age: float | None = None,
        raw: bool = False,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.exchange = exchange
        self.symbols = list(symbols)
        self.feeds = list(feeds)
        self.retry = retry or RetryPolicy(attempts=0, base_delay=0.1, max_delay=5.0)
        self.snapshot_every = snapshot_every
        # Binance closes a connection after 24 h: it is replaced before then (sequenced books only; an
        # unsequenced book cannot take two streams, and is rebuilt after a plain reconnect instead)
        self.max_connection_age = max_connection_age or exchange.max_connection_age
        self.raw_frames: asyncio.Queue[RawFrame] | None = asyncio.Queue(queue_size) if raw else None
        # in process with the API: frames also go to it while a client wants them (cheap check per frame)
        self.raw_listener: RawListener | None = None
        self.http = http
        self.queue: asyncio.Queue[Record | Resync] = asyncio.Queue(queue_size)
        self.conns = [Connection(i) for i in range(connections)]
        self.shared_books = exchange.rule != "none"
        self.syncs: dict[tuple[int, str], BookSync] = {}
        self._leader: dict[str, int] = {}  # unshared books: the connection whose book is published
        self._recent = Recent()  # identities of recent records, to drop another connection's copies
        self._fetching: set[str] = set()
        # ws-snapshot books waiting for the snapshot asked for: when it was asked (FeedHandler asks again
        # after stale_after: an exchange may drop a subscribe)
        self._asked: dict[int, tuple[float, BookSync]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_snapshot: dict[str, float] = {}

    def sync(self, symbol: str, index: int = 0) -> BookSync:
        key = (0 if self.shared_books else index, symbol)
        sync = self.syncs.get(key)
        if sync is None:
            ex = self.exchange
            if getattr(ex, "book_level", 2) == 3:  # orders by id (Coinbase Exchange full): the same face
                sync = cast(BookSync, L3Sync(ex.name, symbol))
            else:
                sync = BookSync(ex.name, symbol, ex.rule, ex.verify, ex.snapshot_by == "rest", ex.book_depth)
            self.syncs[key] = sync
        return sync

    def published_book(self, symbol: str) -> BookSync:
        """The book this feed publishes for ``symbol`` (the leader's, for unshared books)."""
        return self.sync(symbol, 0 if self.shared_books else self._leader.get(symbol, 0))

    # --- one frame ----------------------------------------------------------------------------------
    async def on_frame(self, conn: Connection, ws: Any, frame: str | bytes) -> None:
        conn.counters.messages += 1
        atom = time.time_ns() // 1000
        if self.raw_frames is not None:
            await self.raw_frames.put(RawFrame(self.exchange.name, conn.index, atom, frame))
        listener = self.raw_listener
        if listener is not None and listener.wanted:
            listener.raw(RawFrame(self.exchange.name, conn.index, atom, frame))
        try:
            parsed = self.exchange.parse(frame, atom)
            refuse_nul(frame, parsed)
        except _PARSE_ERRORS as exc:
            conn.counters.malformed += 1
            log.warning(
                "%s connection %d: skipped a malformed frame (%s)", self.exchange.name, conn.index, exc
            )
            return
        if parsed.sequence is not None:
            last, conn.last_sequence = conn.last_sequence, parsed.sequence
            if last is not None and parsed.sequence != last + 1:
                await self._connection_gap(conn, ws, last, parsed.sequence)
        for record in parsed.records:
            await self._record(conn, record)
        for msg in parsed.books:
            await self._book(conn, ws, msg)

    async def _connection_gap(self, conn: Connection, ws: Any, last: int, now: int) -> None:
        """A message of this connection was lost (any channel): every book it feeds is rebuilt."""
        conn.counters.gaps += 1
        log.warning("%s connection %d: message %d after %d", self.exchange.name, conn.index, now, last)
        for (index, symbol), sync in self.syncs.items():
            if (self.shared_books or index == conn.index) and sync.book.valid:
                resync = sync.invalidate("gap")
                conn.counters.resyncs += 1
                if self.shared_books or self._leader.get(symbol) == conn.index:
                    await self.queue.put(resync)
                await self._request_snapshot(ws, sync)

    async def _record(self, conn: Connection, record: Record) -> None:
        if len(self.conns) > 1 or self.max_connection_age is not None:
            # another connection's copy (or a rollover's overlap): trades by id, records with the
            # exchange's time by content; a record with neither (Binance bookTicker) is identified by
            # nothing, so it comes from the leading connection only (and an overlap may repeat one)
            key = identity(record)
            if key is None:
                if conn.index != next((c.index for c in self.conns if c.ws is not None), conn.index):
                    return
            elif not self._recent.first_time(key):
                conn.counters.duplicates += 1
                return
        await self.queue.put(record)

    async def _book(self, conn: Connection, ws: Any, msg: BookMessage) -> None:
        if msg.last is not None:
            conn.book_sequence[msg.symbol] = msg.last
        sync = self.sync(msg.symbol, conn.index)
        ignored = sync.counters.ignored
        try:
            out = sync.on_message(msg)
        except (ArithmeticError, TypeError, ValueError) as exc:  # a NaN price, a garbled level: rebuild
            conn.counters.malformed += 1
            log.warning("%s %s: book message not applicable (%s)", sync.exchange, sync.symbol, exc)
            out = [sync.invalidate("malformed")]
        if sync.counters.ignored > ignored and self.shared_books and len(self.conns) > 1:
            conn.counters.duplicates += 1
        for item in out:
            if isinstance(item, Resync):
                conn.counters.resyncs += 1
                conn.counters.gaps += item.reason == "gap"
                log.warning("%s %s: book invalid (%s), resyncing", sync.exchange, sync.symbol, item.reason)
                await self._request_snapshot(ws, sync)
        if sync.buffer and sync.symbol not in self._fetching:
            await self._request_snapshot(ws, sync)  # the first buffered update starts the REST snapshot
        if not self.shared_books:
            out = self._lead(conn, sync, out)
        for item in out:
            await self.queue.put(item)
        if self.snapshot_every is not None and sync.book.valid and out:
            now = time.monotonic()
            last = self._last_snapshot.get(sync.symbol)
            if last is None or now - last >= self.snapshot_every:
                self._last_snapshot[sync.symbol] = now
                for item in _republished(sync):
                    await self.queue.put(item)

    def _lead(self, conn: Connection, sync: BookSync, out: list[Published]) -> list[Published]:
        """Unshared books: only the leader's are published. Another connection takes the lead, with a
        snapshot of its book, when the leader has none valid or is down."""
        symbol = sync.symbol
        leader = self._leader.get(symbol)
        if leader == conn.index:
            return out
        if leader is not None and self._valid_live(leader, symbol):
            return []  # a follower's book stays private
        if not sync.book.valid:
            return []
        self._leader[symbol] = conn.index
        if out and isinstance(out[0], BookSnapshot):
            return out
        return _republished(sync)

    def _valid_live(self, index: int, symbol: str) -> bool:
        sync = self.syncs.get((index, symbol))
        return sync is not None and sync.book.valid and self.conns[index].ws is not None

    # --- snapshots and losses -----------------------------------------------------------------------
    async def _request_snapshot(self, ws: Any, sync: BookSync) -> None:
        if self.exchange.snapshot_by == "rest":
            if sync.symbol not in self._fetching and not sync.book.valid:
                self._fetching.add(sync.symbol)
                self._spawn(self._fetch(sync))
            return
        self._asked[id(sync)] = (asyncio.get_running_loop().time(), sync)
        with contextlib.suppress(websockets.WebSocketException, OSError):
            for frame in self.exchange.resubscribe_book(sync.symbol):
                await ws.send(frame)

    async def _fetch(self, sync: BookSync) -> None:
        """REST snapshot; fetched again while it is older than the first buffered update. A gap while the
        buffer is replayed empties the buffer; the next buffered update starts a new fetch."""
        assert self.http is not None
        tries = 0
        try:
            while not sync.book.valid:
                try:
                    response = await self.http.get(self.exchange.snapshot_url(sync.symbol))
                    response.raise_for_status()
                    snap = self.exchange.parse_snapshot(sync.symbol, response.content, time.time_ns() // 1000)
                    refuse_nul(response.content, snap)
                except (httpx.HTTPError, *_PARSE_ERRORS) as exc:
                    tries += 1
                    log.warning("%s %s: snapshot failed (%s)", sync.exchange, sync.symbol, type(exc).__name__)
                    await asyncio.sleep(self.retry.delay(tries, None))
                    continue
                if sync.needs_snapshot_refetch(snap.last):
                    tries += 1
                    await asyncio.sleep(min(0.05 * tries, 1.0))
                    continue
                try:
                    out = sync.on_snapshot(snap)
                except (ArithmeticError, TypeError, ValueError) as exc:  # as in _book: refetched on an update
                    log.warning("%s %s: snapshot not applicable (%s)", sync.exchange, sync.symbol, exc)
                    out = [sync.invalidate("malformed")]
                for item in out:
                    await self.queue.put(item)
                if not sync.book.valid:
                    return
        finally:
            self._fetching.discard(sync.symbol)

    async def _invalidate(self, conn: Connection, reason: str) -> None:
        """Books only this connection fed are wrong from now on; shared ones stay while another is up."""
        if self.shared_books:
            if self._covered(conn):
                return
            for sync in self.syncs.values():
                if sync.book.valid:
                    await self.queue.put(sync.invalidate(reason))
                sync.buffer = []
            return
        for (index, symbol), sync in self.syncs.items():
            if index != conn.index:
                continue
            resync = sync.invalidate(reason) if sync.book.valid else None
            if self._leader.get(symbol) == conn.index:
                del self._leader[symbol]
                if resync is not None:
                    await self.queue.put(resync)

    def _covered(self, conn: Connection) -> bool:
        """Another connection is up and feeds the same books."""
        return any(c.ws is not None for c in self.conns if c is not conn)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def counters(self) -> dict[str, Any]:
        return {
            "connections": [c.counters for c in self.conns],
            "books": {f"{i}:{s}": sync.counters for (i, s), sync in self.syncs.items()},
            "lag": [self.lag(c.index) for c in self.conns],
        }

    def lag(self, index: int) -> dict[str, int]:
        """Per symbol, how many update ids a connection's last book message is behind the book (sequenced
        books shared by the connections; 0: it is the one ahead, or level with it)."""
        conn = self.conns[index]
        out = {}
        for symbol, seen in conn.book_sequence.items():
            sync = self.syncs.get((0, symbol)) if self.shared_books else None
            if sync is not None and sync.book.sequence is not None:
                out[symbol] = max(sync.book.sequence - seen, 0)
        return out


def _republished(sync: BookSync) -> list[Published]:
    """A valid book published again (periodic snapshot, new leader): an L3 book with its orders."""
    now = time.time_ns() // 1000
    if isinstance(sync, L3Sync):
        return sync.republish(now)
    return [sync.book.snapshot(sync.exchange, sync.symbol, now)]
