"""The archiver: complete buckets from Postgres into the target, in order, resumable.

Per stream (the chain, each exchange) the manifest's last bucket is where the archiver resumes: the
chain from the block after the last archived one, an exchange from the minute after its last one.
After each bucket its progress is also written to Postgres's ``cursors`` (``archive:chain/<name>``:
the last archived block; ``archive:cex/<exchange>``: the last archived minute) so ``/ready`` and
``dexnode db status`` can report the archive's lag without reading the target.

The blocking file I/O (Parquet encoding, fsspec writes) runs in a worker thread so a node running the
archiver beside its follower keeps its event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from archive.compact import compact_stream
from archive.layout import Stream, Target
from archive.retention import apply_retention
from archive.source import Bucket, CexSource, ChainSource
from archive.watermark import settle
from archive.writer import write_bucket, write_late_part
from core.database import asyncpg_dsn, open_database
from core.settings import Settings

log = logging.getLogger("dexnode.archive")

CURSOR_PREFIX = "archive:"
CEX_CHUNK_MINUTES = 60  # closed minutes of one exchange read at once


@dataclass
class ArchiveStats:
    buckets: int = 0
    rows: int = 0
    bytes: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)  # buckets written per stream
    late_parts: int = 0  # late parts written (CEX rows stored after their minute was archived)
    compacted_hours: int = 0


class Archiver:
    """One pass (``archive_ready``) writes every bucket that is complete now."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        target: Target,
        *,
        chain: str,
        confirmations: int,
        cex_grace_seconds: float,
        clock: Callable[[], float] = time.time,
        settle_timeout: float = 10.0,
    ) -> None:
        self.pool = pool
        self.target = target
        self.chain_stream = Stream("chain", chain)
        self.chain = ChainSource(pool, confirmations)
        self.cex = CexSource(pool, cex_grace_seconds)
        self.clock = clock
        self.settle_timeout = settle_timeout
        self.stats = ArchiveStats()

    async def _write(
        self, stream: Stream, bucket: Bucket, cursor: int, ids: dict[str, int] | None = None
    ) -> None:
        entry = await asyncio.to_thread(write_bucket, self.target, stream, bucket, ids)
        await self.pool.execute(
            "INSERT INTO cursors (stream, block_number, block_hash, updated_at) VALUES ($1, $2, '', now())"
            " ON CONFLICT (stream) DO UPDATE SET block_number = excluded.block_number,"
            " updated_at = excluded.updated_at",
            CURSOR_PREFIX + str(stream),
            cursor,
        )
        self.stats.buckets += 1
        self.stats.rows += entry.rows
        self.stats.bytes += sum(f.bytes for f in entry.files)
        self.stats.by_stream[str(stream)] = self.stats.by_stream.get(str(stream), 0) + 1
        log.info(
            "archived %s minute %d: %d rows in %d files", stream, bucket.minute, entry.rows, len(entry.files)
        )

    async def archive_chain(self, stop: asyncio.Event | None = None) -> None:
        last = await asyncio.to_thread(self.target.last_bucket, self.chain_stream)
        after = None if last is None else last.last_block
        while stop is None or not stop.is_set():
            found = await self.chain.next_buckets(after)
            if not found:
                return
            for bucket in found:
                assert bucket.last_block is not None
                await self._write(self.chain_stream, bucket, bucket.last_block)
                after = bucket.last_block

    async def archive_cex(self, stop: asyncio.Event | None = None) -> None:
        settled = await settle(self.pool, self.settle_timeout)
        if settled is None:
            return  # a transaction open too long: rows below the sequences' positions may still come
        for exchange in await self.cex.exchanges():
            if stop is not None and stop.is_set():
                return
            stream = Stream("cex", exchange)
            await self._cex_late(stream, settled)
            last = await asyncio.to_thread(self.target.last_bucket, stream)
            after = None if last is None else last.minute
            while stop is None or not stop.is_set():
                minute = await self.cex.next_minute(exchange, after)
                if minute is None or not self.cex.closed(minute, self.clock()):
                    break
                # up to an hour of closed minutes per read
                end = minute + 1
                while end < minute + CEX_CHUNK_MINUTES and self.cex.closed(end, self.clock()):
                    end += 1
                for bucket in await self.cex.buckets(exchange, minute, end, settled):
                    await self._write(stream, bucket, bucket.minute, settled)
                after = end - 1
            if await asyncio.to_thread(self.target.stream_ids, stream) != settled:
                await asyncio.to_thread(self.target.set_stream_ids, stream, settled)

    async def _cex_late(self, stream: Stream, settled: dict[str, int]) -> None:
        """Rows of already archived minutes stored since they were: each such minute gets a late part.
        Rows above the stream's watermark (``ids.json``) and above the minute's own (a part written by
        a pass killed before it moved the stream's) are the late ones, so each is archived once."""
        last = await asyncio.to_thread(self.target.last_bucket, stream)
        if last is None:
            return
        floor = await asyncio.to_thread(self.target.stream_ids, stream)
        if floor is None:  # written before late parts existed: its minutes' ids are unknown
            return
        found = await self.cex.late(stream.name, floor, settled, last.minute + 1)
        for minute in sorted(found):
            entry = await asyncio.to_thread(self.target.bucket, stream, minute)
            below = {**floor, **dict(entry.ids)} if entry is not None else floor
            records = {
                cls: [r for table, id_, r in rows if id_ > below.get(table, 0)]
                for cls, rows in found[minute].items()
            }
            if any(records.values()):
                late = Bucket(minute, records)
                part = 1 + (entry.late_parts if entry is not None else 0)
                written = await asyncio.to_thread(
                    write_late_part, self.target, stream, late, entry, part, settled
                )
                self.stats.late_parts += 1
                self.stats.rows += sum(len(r) for r in records.values())
                log.info("archived %s minute %d: late part %d, %d rows", stream, minute, part, written.rows)

    async def archive_ready(self, stop: asyncio.Event | None = None) -> ArchiveStats:
        await self.archive_chain(stop)
        await self.archive_cex(stop)
        return self.stats

    async def compact(self, after_hours: float, stop: asyncio.Event | None = None) -> int:
        """Compact the hours of every stream that ended ``after_hours`` ago (``archive.compact``)."""
        before = self.clock() - after_hours * 3600
        done = 0
        for stream in await asyncio.to_thread(self.target.streams):
            if stop is not None and stop.is_set():
                break
            done += await asyncio.to_thread(compact_stream, self.target, stream, before=before)
        self.stats.compacted_hours += done
        return done


async def run_archiver(
    settings: Settings,
    target: str | None = None,
    *,
    once: bool,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> ArchiveStats:
    """Archive into ``target`` (default ``settings.archive_target``): what is ready, then exit
    (``once``), or every ``archive_interval_seconds`` until ``stop`` is set (or the task is cancelled).
    After each pass, with ``retention_days`` set, archived rows older than that leave Postgres
    (``archive.retention``); with ``archive_compact_after_hours`` set, hours older than that are compacted
    (``archive.compact``). The database is the settings' (the embedded one is started if no URL is
    set). ``dexnode run`` can run it as a task: ``run_archiver(settings, None, once=False, stop=event)``."""
    async with open_database(settings) as db:
        pool = await asyncpg.create_pool(asyncpg_dsn(db.dsn), min_size=1, max_size=2)
        try:
            archiver = Archiver(
                pool,
                Target(target or settings.archive_target),
                chain=settings.chain,
                confirmations=settings.confirmations,
                cex_grace_seconds=settings.archive_cex_grace_seconds,
                clock=clock,
            )
            while True:
                await archiver.archive_ready(stop)
                if settings.archive_compact_after_hours is not None:
                    await archiver.compact(settings.archive_compact_after_hours, stop)
                if settings.retention_days is not None:
                    await apply_retention(pool, archiver.target, days=settings.retention_days, now=clock())
                if once or (stop is not None and stop.is_set()):
                    return archiver.stats
                if stop is None:
                    await asyncio.sleep(settings.archive_interval_seconds)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), settings.archive_interval_seconds)
        finally:
            await pool.close()


async def archive_lag(pool: asyncpg.Pool, confirmations: int, now: float) -> dict[str, dict[str, int]]:
    """Per archived stream: how far the archive is behind what could be archived. Chain streams:
    ``lag_blocks`` below the confirmed watermark; CEX streams: ``lag_minutes`` behind the last closed
    minute (grace not counted). Read from the cursors the archiver keeps in Postgres."""
    rows = await pool.fetch(
        "SELECT stream, block_number FROM cursors WHERE stream LIKE $1 ORDER BY stream", CURSOR_PREFIX + "%"
    )
    head = await pool.fetchval("SELECT max(number) FROM blocks")
    lag: dict[str, dict[str, int]] = {}
    for row in rows:
        name = row["stream"][len(CURSOR_PREFIX) :]
        value = int(row["block_number"])
        if name.startswith("chain/"):
            watermark = value if head is None else int(head) - confirmations
            lag[name] = {"last_block": value, "lag_blocks": max(0, watermark - value)}
        else:
            lag[name] = {"last_minute": value, "lag_minutes": max(0, int(now) // 60 - 1 - value)}
    return lag
