"""Compaction of old hours: every reader sees the same rows before and after, through a SIGKILL mid-way.

Data: three hours of 12-second blocks with DEX trades (``bench/archive.py``'s generator) through the
real Postgres sink, and the OKX feed's records from the recorded frames with their receipt times spread
over the same hours, through the real ``CexStore``. Truth: the archive read back before compaction
(each minute's records), and Postgres's rows for the CEX stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from archive.archiver import Archiver
from archive.layout import Stream, Target
from archive.query import connect
from archive.reader import bucket_records, buckets
from bench.archive import DAY_START, block, trade
from cex.store import CexStore
from cex.sync import Resync
from core.database import DatabaseInfo
from records import DexTrade
from records.batch import Batch
from sinks.postgres import PostgresSink
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

BLOCKS = 3 * 300 + 10  # three hours of 12-second blocks, and a minute into the fourth
CHAIN = Stream("chain", "devnet")
OKX = Stream("cex", "okx")


async def _fill(dsn: str, held: list[Any]) -> None:
    sink = await PostgresSink.connect(dsn)
    try:
        for first in range(0, BLOCKS, 100):
            numbers = range(first, min(first + 100, BLOCKS))
            await sink.write(Batch("backfill", [block(n) for n in numbers],
                                   {DexTrade: [trade(n, i) for n in numbers for i in range(2)]}))  # fmt: skip
    finally:
        await sink.close()
    published = [r for r in await okx_records() if not isinstance(r, Resync)]
    step = (3 * 3600 + 120) * 1_000_000 // len(published)  # into the fourth hour, as the chain
    timed = [replace(r, atom_timestamp=DAY_START * 1_000_000 + i * step) for i, r in enumerate(published)]
    held.extend([t for t in timed if type(t).__name__ == "Trade"][1::3])  # stored late, below
    kept = set(held)
    store = await CexStore.connect(dsn)
    try:
        for i in range(0, len(timed), 500):
            await store.write([r for r in timed[i : i + 500] if r not in kept])
    finally:
        await store.close()


def _per_minute(target: Target) -> dict[tuple[Stream, int], dict[str, list[Any]]]:
    fresh = Target(target.url)
    return {(b.stream, b.entry.minute): bucket_records(fresh, b) for b in buckets(fresh)}


def _files_on_disk(target: Target) -> set[str]:
    root = Path(target.url)
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_manifest" not in p.parts}


def _named(target: Target) -> set[str]:
    return {f.path for b in buckets(Target(target.url)) for f in b.entry.files}


def _duck_counts(target: Target, **window: int) -> dict[str, int]:
    con = connect(Target(target.url), **window)
    return {
        t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in ("block", "dex_trade", "trade")
    }


async def test_compaction_keeps_every_row_once_through_a_kill(
    migrated_db: DatabaseInfo, tmp_path: Path
) -> None:
    dsn = migrated_db.dsn
    await truncate_all(dsn)
    held: list[Any] = []
    await _fill(dsn, held)
    target = Target(str(tmp_path / "archive"))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await Archiver(pool, target, chain="devnet", confirmations=0, cex_grace_seconds=0).archive_ready()
    finally:
        await pool.close()
    before = _per_minute(target)
    assert len([k for k in before if k[0] == CHAIN]) > 170 and len([k for k in before if k[0] == OKX]) > 170
    counts = _duck_counts(target)
    assert counts == {t: sum(len(rs.get(t, [])) for rs in before.values()) for t in counts}
    assert counts["block"] == BLOCKS - 5 and counts["dex_trade"] == 2 * counts["block"]  # last minute open
    hour2 = (DAY_START // 60) + 60  # the second hour's first minute: a window cut inside compacted hours
    window = {"first_minute": hour2 + 17, "last_minute": hour2 + 77}
    in_window = {
        t: sum(len(rs.get(t, [])) for (_, m), rs in before.items() if hour2 + 17 <= m <= hour2 + 77)
        for t in ("block", "dex_trade", "trade")
    }
    assert _duck_counts(target, **window) == in_window

    # compaction by `dexnode archive --once`, SIGKILLed after its first compacted hour, then run again
    env = archive_env(dsn, target.url, DEXNODE_CHAIN="devnet", DEXNODE_CONFIRMATIONS="0",
                      DEXNODE_ARCHIVE_COMPACT_AFTER_HOURS="0")  # fmt: skip
    await asyncio.to_thread(kill_archiver, env, lambda lines: any("compacted" in x for x in lines))
    assert _per_minute(target) == before  # whatever the kill left, readers see every row once
    await asyncio.to_thread(run_archiver_once, env)
    entries = buckets(Target(target.url))
    compacted = [b for b in entries if all(f.offset is not None for f in b.entry.files)]
    # both streams' first three hours (the fourth is the streams' last: minutes of it may still come)
    assert {b.entry.minute // 60 - DAY_START // 3600 for b in compacted} == {0, 1, 2}
    assert _per_minute(target) == before
    assert _duck_counts(target) == counts and _duck_counts(target, **window) == in_window
    assert _files_on_disk(target) == _named(target)  # the minute files are gone, nothing left behind
    files = {(b.stream, b.entry.minute // 60, f.type): f.path for b in compacted for f in b.entry.files}
    assert len(set(files.values())) == len(files)  # one file per stream, hour and type

    # rows stored late for compacted minutes: a late part beside the hour's file, then a new generation
    store = await CexStore.connect(dsn)
    try:
        await store.write(held)
    finally:
        await store.close()
    await asyncio.to_thread(run_archiver_once, env)
    got, _ = archived(target)
    truth = await postgres_cex(dsn, "okx")
    for type_name, rows in truth.items():
        assert got.get(type_name, []) == rows, type_name
    assert all(h in got["trade"] for h in held) and len(held) >= 5
    hours = {f.path.rsplit("/", 1)[1] for b in buckets(Target(target.url)) for f in b.entry.files if f.offset}
    assert "hour.2.parquet" in hours  # the hours with late rows, compacted again
    assert _files_on_disk(target) == _named(target)
