"""The feed machinery, written once: connect, subscribe, snapshot, buffer, check, resync, reconnect.

``FeedHandler(exchange, symbols, feeds, connections=N).run()`` keeps N websocket connections to the
exchange and puts on ``feed.queue`` every record worth publishing (``Trade``, ``Ticker``, ``FundingRate``,
``OpenInterest``, ``BookSnapshot``, ``BookDelta``) and a ``Resync`` whenever a book was found wrong.
What happens to each frame (parsing, de-duplication across connections, the books, snapshots, the raw
frames) is ``cex.dispatch.FeedDispatch``; this module holds the connections' lifecycle.

Killing a connection loses nothing while another is up; when the last one goes, books are invalidated
and rebuilt after the reconnect. A connection silent for ``stale_after`` seconds is closed and reopened
(its books invalidated, a ``Resync`` published); a connection due for rollover (``max_connection_age``)
is replaced by a successor that subscribes first, the old one read for ``rollover_overlap`` more seconds.
Reconnects back off by ``core.retry.RetryPolicy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import websockets

from cex.connection import Connection
from cex.dispatch import FeedDispatch, RawFrame, RawListener
from cex.exchange import Exchange, Feed
from core.errors import RetryableError
from core.retry import RetryPolicy

__all__ = ["FeedHandler", "RawFrame", "RawListener"]

log = logging.getLogger(__name__)


class FeedHandler(FeedDispatch):
    """``FeedDispatch`` fed by N websocket connections, each reopened when it fails or goes silent."""

    def __init__(
        self,
        exchange: Exchange,
        symbols: Sequence[str],
        feeds: Sequence[Feed],
        *,
        connections: int = 1,
        stale_after: float = 30.0,
        retry: RetryPolicy | None = None,
        snapshot_every: float | None = None,
        http: httpx.AsyncClient | None = None,
        queue_size: int = 100_000,
        max_connection_age: float | None = None,
        rollover_overlap: float = 5.0,
        raw: bool = False,
    ) -> None:
        super().__init__(
            exchange, symbols, feeds, connections=connections, retry=retry, snapshot_every=snapshot_every,
            http=http, queue_size=queue_size, max_connection_age=max_connection_age, raw=raw,
        )  # fmt: skip
        self.stale_after = stale_after
        self.rollover_overlap = rollover_overlap
        self.endpoints = exchange.urls(self.symbols, self.feeds)

    # --- running ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every connection until cancelled."""
        own_http = self.http is None and self.exchange.snapshot_by == "rest"
        if own_http:
            self.http = httpx.AsyncClient(timeout=10.0)
        try:
            async with asyncio.TaskGroup() as group:
                for conn in self.conns:
                    group.create_task(self._connection(conn))
        finally:
            for task in self._tasks:
                task.cancel()
            if own_http and self.http is not None:
                await self.http.aclose()

    def kill(self, index: int) -> None:
        """Close one connection's socket now (tests and rollover); it reconnects like after any loss."""
        ws = self.conns[index].ws
        if ws is not None:
            self._spawn(ws.close())

    async def _connection(self, conn: Connection) -> None:
        tries = 0
        while True:
            ws = None
            try:
                ws = await self._open(conn)
                tries = 0
                # a connection due for rollover: its successor subscribes before it is closed
                while await self._read(conn, ws):
                    successor = await self._open(conn)
                    self._spawn(self._retire(conn, ws))
                    ws = successor
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.warning("%s connection %d: %s", self.exchange.name, conn.index, type(exc).__name__)
            finally:
                if ws is not None:
                    self._spawn(ws.close())
                was_up, conn.ws = conn.ws is not None, None
            if was_up:
                conn.counters.disconnects += 1
            await self._lost(conn)
            tries += 1
            if self.retry.exhausted(tries):
                raise RetryableError(f"{self.exchange.name}: connection {conn.index} failed {tries} times")
            await asyncio.sleep(self.retry.delay(tries, None))

    async def _open(self, conn: Connection) -> Any:
        url = self.endpoints[conn.endpoint % len(self.endpoints)]
        try:
            ws = await websockets.connect(url, max_size=None, open_timeout=10)
        except (OSError, websockets.WebSocketException, TimeoutError):
            conn.endpoint += 1  # the next endpoint (a fallback CDN) on the next try
            raise
        conn.ws = ws
        conn.last_sequence = None
        conn.counters.connects += 1
        for frame in self.exchange.subscribe(self.symbols, self.feeds):
            await ws.send(frame)
        if self.exchange.snapshot_by == "rest" and "book" in self.feeds:
            for symbol in self.symbols:  # a quiet book would otherwise wait for an update
                await self._request_snapshot(ws, self.sync(symbol, conn.index))
        if self.exchange.ping_frame:
            self._spawn(self._ping(ws))  # ends with its socket
        return ws

    async def _read(self, conn: Connection, ws: Any) -> bool:
        """Frames until the socket fails (raises), goes silent (False) or is due for rollover (True)."""
        loop = asyncio.get_running_loop()
        max_age = self.max_connection_age if self.shared_books else None
        retire_at = None if max_age is None else loop.time() + max_age
        while True:
            timeout = self.stale_after
            if retire_at is not None:
                timeout = min(timeout, retire_at - loop.time())
                if timeout <= 0:
                    return True
            try:
                # not wait_for: Python 3.11's returns a frame that completes as the task is cancelled
                # and drops the cancellation, so a cancelled feed could read on forever
                async with asyncio.timeout(timeout):
                    frame = await ws.recv()
            except TimeoutError:
                if retire_at is not None and loop.time() >= retire_at:
                    return True
                conn.counters.stale += 1
                name = self.exchange.name
                log.warning("%s connection %d: silent for %ss", name, conn.index, self.stale_after)
                await self._stale(conn)
                return False
            await self.on_frame(conn, ws, frame)
            if self._asked:
                await self._ask_again(ws)

    async def _ask_again(self, ws: Any) -> None:
        now = asyncio.get_running_loop().time()
        for key, (asked, sync) in list(self._asked.items()):
            if sync.book.valid:
                del self._asked[key]
            elif now - asked > self.stale_after:
                log.warning(
                    "%s %s: no snapshot %.1fs after asking; asking again",
                    sync.exchange,
                    sync.symbol,
                    now - asked,
                )
                await self._request_snapshot(ws, sync)

    async def _retire(self, conn: Connection, ws: Any) -> None:
        """The old socket of a rollover: read for ``rollover_overlap`` more seconds (its successor delivers
        the same messages; the copies are dropped), then close it."""
        conn.counters.rollovers += 1
        loop = asyncio.get_running_loop()
        end = loop.time() + self.rollover_overlap
        try:
            while (left := end - loop.time()) > 0:
                async with asyncio.timeout(left):
                    frame = await ws.recv()
                await self.on_frame(conn, ws, frame)
        except (TimeoutError, OSError, websockets.WebSocketException):
            pass
        finally:
            await ws.close()

    async def _ping(self, ws: Any) -> None:
        with contextlib.suppress(websockets.WebSocketException, OSError):
            while True:
                await asyncio.sleep(self.exchange.ping_interval)
                await ws.send(self.exchange.ping_frame)

    async def _stale(self, conn: Connection) -> None:
        await self._invalidate(conn, "stale")

    async def _lost(self, conn: Connection) -> None:
        await self._invalidate(conn, "disconnected")
