"""Live events across processes: ``LISTEN dexnode_blocks`` in the API process, fed to the hub.

The Postgres writer (``sinks.postgres.notify_blocks``) sends a small JSON notification inside each
batch's transaction, so it arrives exactly when the rows are committed. The listener reads those rows
back through ``sinks.postgres_read`` and publishes them: the reorg first, then the blocks. Any number of
``serve`` processes can listen to one database, so API replicas scale out.

Missed notifications (the listening connection was lost, or the process was busy) are made up for by
reading forward from the hub's tip (``api.stream.stored_feed``): after a reconnect, and every
``check_seconds``.

The same connection also listens to ``dexnode_cex`` (exchange rows committed by ``cex.store.CexStore``),
handled by ``api.stream.cex_listener``. With ``chain=False`` it listens to that channel only: the chain's
live events then come from Kafka (``api.stream.kafka_source``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson

from api.stream.cex_listener import CexNotifyReader
from api.stream.events import Ref
from api.stream.hub import Hub
from api.stream.stored_feed import StoredFeed
from sinks.cex_read import NOTIFY_CHANNEL as CEX_CHANNEL
from sinks.postgres import NOTIFY_CHANNEL

log = logging.getLogger("dexnode.api.listener")

FOLLOW_STREAM = "follow"  # the follower's cursor name (indexer.pipeline.FOLLOW_STREAM; api/ cannot import it)


class NotifyListener:
    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Hub,
        *,
        stream: str = FOLLOW_STREAM,
        check_seconds: float = 5.0,
        chain: bool = True,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.stream = stream
        self.check_seconds = check_seconds
        self.channels = (NOTIFY_CHANNEL, CEX_CHANNEL) if chain else (CEX_CHANNEL,)
        self.stored = StoredFeed(pool, hub)
        self.notes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (channel, payload)
        self.cex = CexNotifyReader(pool, hub)
        self.task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.skipped = 0  # malformed notifications (counted, logged)

    async def start(self) -> None:
        await self.hub.start()
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.listening.wait(), 30)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.notes.put_nowait((channel, payload))

    async def _run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as conn:
                    for channel in self.channels:
                        await conn.add_listener(channel, self._on_notify)
                    try:
                        self.listening.set()
                        await self._catch_up()
                        await self._serve(conn)
                    finally:
                        for channel in self.channels:
                            with contextlib.suppress(Exception):
                                await conn.remove_listener(channel, self._on_notify)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost connection, database restarting: listen again, then catch up
                log.warning("live events: %s; listening again in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        while True:
            try:
                # not wait_for: Python 3.11's drops a cancellation that arrives as a note does
                async with asyncio.timeout(self.check_seconds):
                    channel, payload = await self.notes.get()
            except TimeoutError:
                await conn.fetchval(
                    "SELECT 1", timeout=self.check_seconds
                )  # is the listening connection alive?
                await self._catch_up()
                continue
            if channel == CEX_CHANNEL:
                await self.cex.handle(payload)
            else:
                await self.handle(payload)

    async def handle(self, payload: str) -> None:
        try:
            doc = orjson.loads(payload)
            stream, first, last = doc["stream"], doc["first"], doc["last"]
            reorg = doc["reorg"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.skipped += 1
            log.warning("skipped a malformed %s notification (%s): %.200s", NOTIFY_CHANNEL, exc, payload)
            return
        if stream != self.stream:
            return  # a backfill chunk: history below the head, not a live event
        if reorg is not None:
            ancestor = Ref(int(reorg["number"]), str(reorg["hash"]))
            orphaned = reorg["orphaned"]
            if orphaned is None:
                orphaned = await self.pool.fetchval(
                    "SELECT orphaned_hashes FROM reorgs WHERE common_ancestor_hash = $1"
                    " ORDER BY id DESC LIMIT 1",
                    ancestor.hash,
                )
            new_head = Ref(int(last), str(doc["hash"])) if last is not None else ancestor
            self.hub.publish_reorg(ancestor, list(orphaned or []), new_head)
        if first is not None and last is not None:
            tip = self.hub.tip
            if tip is not None and tip.number + 1 < int(first):
                await self._catch_up(upto=int(first) - 1)
            await self.stored.publish(int(first), int(last))

    async def _catch_up(self, upto: int | None = None) -> None:
        """Publish stored blocks above the hub's tip (missed notifications)."""
        if NOTIFY_CHANNEL in self.channels:
            await self.stored.catch_up(upto)
