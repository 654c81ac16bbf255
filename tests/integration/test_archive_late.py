"""CEX rows stored after their minute was archived: archived once, as late parts, and nothing else moves.

Data: the OKX feed's records from the recorded frames (the local OKX server and the real feed), their
receipt times spread over twenty minutes of 2026-01-01 so that many minutes are involved. Every fourth
record is held back, as a lagging ``dexnode cex`` process or a reconnect backlog would hold it, and stored
later through the real ``CexStore``. Truth: Postgres's rows of the exchange (time, then id order).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import replace
from decimal import Decimal as D
from typing import Any

import asyncpg
import pytest

from archive.archiver import Archiver
from archive.layout import Stream, Target, late_part_of
from archive.reader import StoredBucket, bucket_records
from archive.resyncs import BookResync
from archive.retention import apply_retention
from archive.watermark import settle
from cex.store import CexStore
from cex.sync import Resync
from core.database import DatabaseInfo
from records.cex import BookSnapshot
from tests.archive_helpers import (
    archive_env,
    archived,
    kill_archiver,
    okx_records,
    postgres_cex,
    run_archiver_once,
    truncate_all,
)

pytestmark = pytest.mark.integration

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SPAN_US = 20 * 60_000_000
STREAM = Stream("cex", "okx")


@pytest.fixture(scope="module")
async def records() -> list[Any]:
    published = await okx_records()
    timed = [r for r in published if not isinstance(r, Resync)]
    step = SPAN_US // len(timed)
    return [replace(r, atom_timestamp=BASE_US + i * step) for i, r in enumerate(timed)]


async def _store(dsn: str, records: list[Any], batch: int = 250) -> None:
    store = await CexStore.connect(dsn)
    try:
        for i in range(0, len(records), batch):
            await store.write(records[i : i + batch])
    finally:
        await store.close()


async def _archive(dsn: str, target: Target) -> Archiver:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        archiver = Archiver(pool, target, chain="devnet", confirmations=0, cex_grace_seconds=0)
        await archiver.archive_ready()
        return archiver
    finally:
        await pool.close()


async def _assert_equal(dsn: str, target: Target) -> dict[str, list[Any]]:
    got, found = archived(target)
    truth = await postgres_cex(dsn, "okx")
    for type_name, rows in truth.items():
        assert got.get(type_name, []) == rows, type_name
    minutes = [b.entry.minute for b in found]
    assert minutes == sorted(set(minutes))  # one entry per minute
    paths = [f.path for b in found for f in b.entry.files]
    assert len(paths) == len(set(paths))
    return got


async def test_late_rows_become_late_parts_exactly_once(migrated_db: DatabaseInfo, records: list[Any],
                                                        tmp_path: Any) -> None:  # fmt: skip
    dsn = migrated_db.dsn
    await truncate_all(dsn)
    held = [r for i, r in enumerate(records) if i % 4 == 3]
    await _store(dsn, [r for i, r in enumerate(records) if i % 4 != 3])
    target = Target(str(tmp_path / "archive"))
    first = await _archive(dsn, target)
    assert first.stats.late_parts == 0 and first.stats.by_stream["cex/okx"] >= 15
    await _assert_equal(dsn, target)
    archived_minutes = {b.minute for b in target.buckets(STREAM)}

    # the lagging feed's first half arrives: rows of minutes archived already
    await _store(dsn, held[: len(held) // 2])
    again = await _archive(dsn, Target(target.url))
    late_minutes = {r.atom_timestamp // 60_000_000 for r in held[: len(held) // 2]}
    assert late_minutes <= archived_minutes
    assert again.stats.late_parts == len(late_minutes) and not again.stats.by_stream
    got = await _assert_equal(dsn, target)
    assert sum(len(v) for v in got.values()) == sum(len(v) for v in (await postgres_cex(dsn, "okx")).values())
    entries = {b.minute: b for b in Target(target.url).buckets(STREAM)}
    for minute in late_minutes:
        assert entries[minute].late_parts == 1
        assert all(late_part_of(f.path) in (0, 1) for f in entries[minute].files)
    # a pass with nothing new writes nothing
    idle = await _archive(dsn, Target(target.url))
    assert idle.stats.late_parts == 0 and idle.stats.rows == 0

    # the second half, archived by a process SIGKILLed after its first late part, then run again
    await _store(dsn, held[len(held) // 2 :])
    env = archive_env(dsn, target.url)
    await asyncio.to_thread(kill_archiver, env, lambda lines: any("late part" in x for x in lines))
    got, _ = archived(target)  # what the killed process left: part of the rows, none twice
    truth = await postgres_cex(dsn, "okx")
    for type_name, rows in truth.items():
        assert not Counter(got.get(type_name, [])) - Counter(rows), type_name
    assert sum(map(len, got.values())) < sum(map(len, truth.values()))
    await asyncio.to_thread(run_archiver_once, env)
    await _assert_equal(dsn, target)
    parts = {b.minute: b.late_parts for b in Target(target.url).buckets(STREAM)}
    second = {r.atom_timestamp // 60_000_000 for r in held[len(held) // 2 :]}
    assert parts == {m: (m in late_minutes) + (m in second) for m in parts}  # one late part per pass

    # retention deletes only rows the archive holds: a row stored late stays until its late part exists
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        later = BASE_US // 1_000_000 + 10 * 86_400
        await apply_retention(pool, Target(target.url), days=1, now=later)
        assert await pool.fetchval("SELECT count(*) FROM cex_trades WHERE exchange = 'okx'") == 0
        assert await pool.fetchval("SELECT count(*) FROM cex_book_events WHERE kind <> 'resync'") == 0
        straggler = replace(next(r for r in records if type(r).__name__ == "Trade"), trade_id="late-1")
        await _store(dsn, [straggler])
        await apply_retention(pool, Target(target.url), days=1, now=later)
        assert await pool.fetchval("SELECT count(*) FROM cex_trades WHERE exchange = 'okx'") == 1
        await _archive(dsn, Target(target.url))
        got, _ = archived(target)
        assert got["trade"].count(straggler) == 1
        await apply_retention(pool, Target(target.url), days=1, now=later)
        assert await pool.fetchval("SELECT count(*) FROM cex_trades WHERE exchange = 'okx'") == 0
    finally:
        await pool.close()


async def test_a_batch_in_flight_is_waited_for_not_skipped(migrated_db: DatabaseInfo, records: list[Any],
                                                           tmp_path: Any) -> None:  # fmt: skip
    """A batch that took its first ids before a later batch but commits after it (its INSERT waits on a
    row lock another transaction holds) is not skipped: the archiver's watermark waits for it, its rows
    with ids below the later batch's are in the minute's bucket, and the ids it took after the watermark
    was read come as a late part in the next pass."""
    dsn = migrated_db.dsn
    await truncate_all(dsn)
    trades = [r for r in records if type(r).__name__ == "Trade"][:40]
    assert len(trades) == 40
    blocker = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    slow = asyncio.Event()
    try:
        # another transaction holds trade 20's natural key: the slow batch's INSERT waits on it, its
        # first rows' ids taken
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "INSERT INTO cex_trades (exchange, symbol, price, size, taker_side, trade_id, atom_timestamp)"
            " VALUES ('okx', $1, 1, 1, 'buy', $2, 0)",
            trades[20].symbol,
            trades[20].trade_id,
        )

        async def slow_batch() -> None:
            slow.set()
            await _store(dsn, trades[:25])

        writing = asyncio.create_task(slow_batch())
        await slow.wait()
        for _ in range(200):  # until the slow batch waits on the lock
            if await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                break
            await asyncio.sleep(0.02)
        await _store(dsn, trades[25:])  # a later batch: higher ids, committed first
        assert await settle(pool, timeout=0.2) is None  # not settled while the slow batch is open
        target = Target(str(tmp_path / "archive"))
        archiver = Archiver(pool, target, chain="devnet", confirmations=0, cex_grace_seconds=0,
                            settle_timeout=30)  # fmt: skip
        archiving = asyncio.create_task(archiver.archive_ready())
        await asyncio.sleep(0.3)
        assert not archiving.done()  # waiting for the slow batch
        await tx.rollback()  # the lock goes; the slow batch commits
        await asyncio.wait_for(writing, 30)
        await asyncio.wait_for(archiving, 30)
        assert archiver.stats.late_parts == 0
        got, _ = archived(target)
        assert set(trades[:20]) <= set(got["trade"])  # committed after the later batch, ids below it
        assert set(trades[25:]) <= set(got["trade"])
        again = Archiver(pool, Target(target.url), chain="devnet", confirmations=0, cex_grace_seconds=0)
        await again.archive_ready()
        got, _ = archived(target)
        assert got["trade"] == (await postgres_cex(dsn, "okx"))["trade"]
        assert sorted(got["trade"], key=lambda t: t.atom_timestamp) == sorted(
            trades, key=lambda t: t.atom_timestamp
        )
    finally:
        with contextlib.suppress(Exception):
            await blocker.close()
        await pool.close()


async def test_a_resync_stored_after_its_minute_was_archived_is_a_late_part(
    migrated_db: DatabaseInfo, tmp_path: Any
) -> None:
    """A resync (and the snapshot that ended it) stored after the minute of the book event it followed was
    archived: both go into that minute's late part, once; the archived resync is the stored row, at the
    position the live stream published it (the book event stored before it)."""
    dsn = migrated_db.dsn
    await truncate_all(dsn)
    ex, sym = "latetest", "ETH-USDT"
    at = time.time_ns() // 1000 - 2_000_000
    minute = at // 60_000_000
    first = BookSnapshot(ex, sym, ((D("100"), D("1")),), ((D("101"), D("2")),), 10, None, at)
    await _store(dsn, [first])
    target = Target(str(tmp_path / "archive"))
    stream = Stream("cex", ex)
    await _archive_now(dsn, target)
    entry = target.bucket(stream, minute)
    assert entry is not None and [f.type for f in entry.files] == ["book_snapshot"]

    ending = BookSnapshot(ex, sym, ((D("99"), D("5")),), ((D("102"), D("1")),), 20, None, at + 2_000)
    await _store(dsn, [Resync(ex, sym, "checksum", 12), ending])
    await _archive_now(dsn, Target(target.url))
    await _archive_now(dsn, Target(target.url))  # nothing new: no second part
    entry = Target(target.url).bucket(stream, minute)
    assert entry is not None
    assert [(f.type, late_part_of(f.path)) for f in entry.files] == [
        ("book_snapshot", 0), ("book_snapshot", 1), ("book_resync", 1)
    ]  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT reason, sequence, atom_timestamp FROM cex_book_events"
                                  " WHERE exchange = $1 AND kind = 'resync'", ex)  # fmt: skip
    finally:
        await conn.close()
    assert row is not None and row["atom_timestamp"] > at  # written after the event it followed
    records = bucket_records(target, StoredBucket(stream, entry))
    assert records["book_resync"] == [BookResync(ex, sym, "checksum", 12, at, row["atom_timestamp"])]
    assert records["book_snapshot"] == [first, ending]


async def _archive_now(dsn: str, target: Target) -> None:
    """One archiver pass with every minute up to now closed."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Archiver(pool, target, chain="devnet", confirmations=3, cex_grace_seconds=0,
                       clock=lambda: time.time() + 120).archive_cex()  # fmt: skip
    finally:
        await pool.close()
