"""The Parquet archive of a devnet run with a real reorg and of a CEX feed, against Postgres's rows.

One devnet run (followed into Postgres, a depth-2 reorg after a first archive pass) and one OKX feed
(recorded frames through the local OKX server into ``CexStore``) feed every test here. Truth: Postgres's
rows read by the storage layer's own reader (``sinks.postgres_read``), which ``assert_db_is_canonical``
first checks against the node's canonical chain, and the reorg's orphaned hashes as the node reported
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pyarrow.parquet as pq
import pytest

from api.app import create_app
from archive.archiver import Archiver, archive_lag, run_archiver
from archive.layout import Stream, Target
from archive.query import connect
from archive.reader import bucket_records, buckets
from archive.retention import apply_retention
from cex.store import CexStore
from core.database import DatabaseInfo
from core.settings import build_settings
from devnet.cache import DevnetCache
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from records import Record, kinds
from sinks import schema
from sinks.postgres import PostgresSink
from sinks.postgres_read import record_columns, record_of
from tests.api_check import served
from tests.archive_helpers import (
    archive_env,
    archived,
    kill_archiver,
    okx_records,
    postgres_cex,
    run_archiver_once,
)
from tests.chain_check import assert_db_is_canonical, wait_for_tip
from tests.conftest import dexnode_bin, free_port
from tests.devnet_fixture import DEVNET_BLOCKS, DEVNET_RATE, DEVNET_SEED, REORG_HEADROOM
from tests.integration.test_dex_devnet import venues

pytestmark = pytest.mark.integration

CHAIN = "devnet"
CONFIRMATIONS = 3
LATER = 10**10  # a clock far past every CEX minute: all are closed (the feed and the store have stopped)


@dataclass
class Run:
    dsn: str
    orphaned: list[str]
    tmp: Path


async def _follow_with_reorg(dsn: str, tmp: Path, cache_root: Path) -> list[str]:
    """Follow a fresh devnet; archive once while the future orphans are stored; reorg; catch up."""
    node = DevnetCache(cache_root, tmp, DEVNET_SEED, DEVNET_BLOCKS, DEVNET_RATE, True).load(
        headroom=REORG_HEADROOM
    )
    sink = await PostgresSink.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with RpcClient(node.rpc_http) as rpc:
            follower = Follower(rpc, HeadStream(node.rpc_ws, rpc, silence_timeout=5), start=[], from_block=0,
                                max_reorg_depth=16)  # fmt: skip
            enrich = DexEnricher(rpc, sink.pool, registry_from(*venues(node.manifest)))
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(dsn, rpc, timeout=120)
                await asyncio.to_thread(node.activity, 4, 10.0)
                await wait_for_tip(dsn, rpc)
                # the blocks about to be orphaned are in Postgres now, above the confirmed watermark
                target = Target(str(tmp / "early"))
                await Archiver(pool, target, chain=CHAIN, confirmations=CONFIRMATIONS,
                               cex_grace_seconds=0).archive_ready()  # fmt: skip
                reorg = await asyncio.to_thread(node.reorg, 2)
                await asyncio.to_thread(node.activity, 4, 10.0)
                await wait_for_tip(dsn, rpc)
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await assert_db_is_canonical(dsn, rpc, 0)
        orphaned = [h.lower() for h in reorg.old_hashes]
        assert _archived_hashes(target), "the early pass archived nothing"
        assert not set(orphaned) & _archived_hashes(target)
        return orphaned
    finally:
        await pool.close()
        await sink.close()
        node.stop()


async def _feed_okx(dsn: str) -> int:
    """The OKX feed into Postgres; returns how many trades were stored."""
    published = await okx_records()
    store = await CexStore.connect(dsn)
    try:
        await store.write(published)
        return int(await store.pool.fetchval("SELECT count(*) FROM cex_trades"))
    finally:
        await store.close()


@pytest.fixture(scope="module")
async def run(
    migrated_db: DatabaseInfo, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> AsyncIterator[Run]:
    dsn = migrated_db.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in schema.metadata.tables))
    finally:
        await conn.close()
    tmp = tmp_path_factory.mktemp("archive")
    orphaned = await _follow_with_reorg(dsn, tmp, Path(pytestconfig.rootpath) / ".dexnode-test-cache")
    assert await _feed_okx(dsn) > 0
    yield Run(dsn, orphaned, tmp)


def _archived_hashes(target: Target) -> set[str]:
    found = set()
    for bucket in buckets(Target(target.url)):
        for record in bucket_records(target, bucket, {"block"}).get("block", []):
            found.add(record.hash)  # type: ignore[attr-defined]
    return found


async def _postgres_chain(dsn: str, last_block: int) -> dict[str, list[Record]]:
    """Postgres's rows of every block kind up to ``last_block``, and every pool and token, as records."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, list[Record]] = {}
        for kind in kinds.BATCH_KINDS:
            where = (
                f'WHERE "{kind.block}" <= $1'
                if kind.block and kind.record.TYPE != "pool"
                else "WHERE $1::bigint IS NOT NULL"
            )
            order = ", ".join(f'"{c}"' for c in kind.order)
            sql = f'SELECT {record_columns(kind)} FROM "{kind.table}" {where} ORDER BY {order}'
            rows = await conn.fetch(sql, last_block)
            out[kind.type] = [record_of(kind.record, r) for r in rows]
        return out
    finally:
        await conn.close()


def _env(dsn: str, target: str, **extra: str) -> dict[str, str]:
    return archive_env(dsn, target, DEXNODE_CONFIRMATIONS=str(CONFIRMATIONS), DEXNODE_CHAIN=CHAIN, **extra)


def _kill_mid_run(env: dict[str, str], target: Target, after_buckets: int) -> None:
    """``dexnode archive --once``, SIGKILLed as soon as it logs its ``after_buckets``-th bucket (it is
    then writing the next one)."""
    kill_archiver(env, lambda logged: sum("archived chain/" in x for x in logged) >= after_buckets)
    # the manifest holds what was complete at the kill, and no more than the process logged
    assert after_buckets <= len(buckets(Target(target.url), [Stream("chain", CHAIN)])) <= after_buckets + 1


def _dexnode(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dexnode_bin(), *args], env=env, capture_output=True, text=True, timeout=120)


async def _finish_cex(run: Run, target: Target) -> None:
    """Archive the CEX minutes the subprocess left because they had not closed yet (the feed ran seconds
    ago): the same archiver with a clock past them, resuming from the manifest."""
    pool = await asyncpg.create_pool(run.dsn, min_size=1, max_size=2)
    try:
        archiver = Archiver(pool, Target(target.url), chain=CHAIN, confirmations=CONFIRMATIONS,
                            cex_grace_seconds=0, clock=lambda: LATER)  # fmt: skip
        stats = await archiver.archive_ready()
        assert set(stats.by_stream) <= {"cex/okx"}  # the chain was complete already
    finally:
        await pool.close()


async def _assert_archive_equals_postgres(run: Run, target: Target) -> None:
    await _finish_cex(run, target)
    got, found = archived(target)
    chain = [b.entry for b in found if b.stream == Stream("chain", CHAIN)]
    # every bucket exactly once: minutes strictly increasing, blocks contiguous without overlap
    minutes = [e.minute for e in chain]
    assert minutes == sorted(set(minutes)) and len(chain) > 20
    for before, after in itertools.pairwise(chain):
        assert after.first_block == before.last_block + 1  # type: ignore[operator]
    last = chain[-1].last_block
    assert last is not None
    pool = await asyncpg.connect(run.dsn)
    try:
        head = await pool.fetchval("SELECT max(number) FROM blocks")
        last_ts = await pool.fetchval("SELECT timestamp FROM blocks WHERE number = $1", last)
        next_ts = await pool.fetchval("SELECT timestamp FROM blocks WHERE number = $1", last + 1)
    finally:
        await pool.close()
    assert last <= head - CONFIRMATIONS  # only confirmed blocks
    assert next_ts // 60 > last_ts // 60  # the last bucket ends at a minute's end
    stored = await _postgres_chain(run.dsn, last)
    for kind in kinds.BATCH_KINDS:
        if kind.type in ("pool", "token"):
            # archived with each minute whose records name them (``Kind.refers``), pools also with the
            # minute that created them: once per distinct address, each equal to Postgres's row
            named = {getattr(r, f) for k in kinds.BATCH_KINDS for f, t in k.refers.items() if t == kind.name
                     for r in got.get(k.type, [])}  # fmt: skip
            expected = {r.address: r for r in stored[kind.type]  # type: ignore[attr-defined]
                        if r.address in named or getattr(r, "created_block_number", None) is not None}  # type: ignore[attr-defined]  # fmt: skip
            in_archive = {r.address: r for r in got.get(kind.type, [])}  # type: ignore[attr-defined]
            assert in_archive == expected, kind.type
        else:
            assert got.get(kind.type, []) == stored[kind.type], kind.type
    assert not set(run.orphaned) & {b.hash for b in got["block"]}  # type: ignore[attr-defined]
    for kind_type, records in (await postgres_cex(run.dsn, "okx")).items():
        assert got.get(kind_type, []) == records, kind_type
    assert got["trade"] and got["book_delta"] and got["book_snapshot"] and got["ticker"]
    for bucket in found:  # the manifest's counts and sizes are the files'
        for f in bucket.entry.files:
            assert target.fs.size(target.full(f.path)) == f.bytes


@pytest.fixture(scope="module")
async def local_archive(run: Run) -> Target:
    """``dexnode archive --once`` into a directory, SIGKILLed after five buckets, then run again."""
    target = Target(str(run.tmp / "local"))
    env = _env(run.dsn, target.url)
    await asyncio.to_thread(_kill_mid_run, env, target, 5)
    killed_at = len(buckets(Target(target.url)))
    await asyncio.to_thread(run_archiver_once, env)
    assert len(buckets(Target(target.url))) > killed_at
    # a second run finds no new chain minute (a CEX minute may have closed in between)
    chain = [Stream("chain", CHAIN)]
    before = buckets(Target(target.url), chain)
    await asyncio.to_thread(run_archiver_once, env)
    assert buckets(Target(target.url), chain) == before
    await _finish_cex(run, target)
    return target


async def test_archive_equals_postgres_after_a_kill_and_restart(run: Run, local_archive: Target) -> None:
    await _assert_archive_equals_postgres(run, local_archive)


async def test_s3_target_through_a_local_s3_server(run: Run) -> None:
    port = free_port()
    # its own process: an S3 server in the test's process would share its GIL with the reads it serves
    moto = str(Path(sys.executable).parent / "moto_server")
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],  # noqa: ASYNC220
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        for _ in range(200):  # until the server answers
            with contextlib.suppress(OSError):
                fs.mkdir("archive-test")
                break
            await asyncio.sleep(0.05)
        target = Target("s3://archive-test/dexnode")
        env = _env(run.dsn, target.url, **aws)
        await asyncio.to_thread(_kill_mid_run, env, target, 3)
        await asyncio.to_thread(run_archiver_once, env)
        await _assert_archive_equals_postgres(run, target)
        # DuckDB reads the bucket's files through the same filesystem
        got, _ = archived(target)
        con = connect(Target(target.url))
        assert con.execute("SELECT count(*), max(number) FROM block").fetchone() == (
            len(got["block"]),
            max(b.number for b in got["block"]),  # type: ignore[attr-defined]
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(10)


async def test_query_daily_volume_per_pool_equals_a_sum_over_the_files(
    run: Run, local_archive: Target
) -> None:
    target = local_archive
    out = run.tmp / "volume.csv"
    sql = (
        "SELECT date, pool_address, token_sold_address, sum(amount_sold::DECIMAL(38, 18)) AS volume,"
        " count(*) AS trades FROM dex_trade GROUP BY ALL ORDER BY ALL"
    )
    done = await asyncio.to_thread(_dexnode, _env(run.dsn, target.url), "query", sql, "--csv", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "date,pool_address,token_sold_address,volume,trades"
    answered = {(d, p, t): (Decimal(v), int(n)) for d, p, t, v, n in (line.split(",") for line in lines[1:])}
    # the same sum in Python over every archived file's rows, from the files themselves
    expected: dict[tuple[str, str, str], tuple[Decimal, int]] = {}
    for path in sorted((Path(target.url) / "dex_trade").rglob("*.parquet")):
        day = path.parent.parent.name.removeprefix("date=")
        for row in pq.read_table(path).to_pylist():
            data = row["data"]
            key = (day, data["pool_address"], data["token_sold_address"])
            volume, count = expected.get(key, (Decimal(0), 0))
            expected[key] = (volume + Decimal(data["amount_sold"] or 0), count + 1)
    assert answered.keys() == expected.keys() and len(expected) > 1
    assert answered == expected
    # the documented examples run on this archive and answer something
    docs = (Path(__file__).parents[2] / "docs" / "archive.md").read_text()
    examples = [block.split("```")[0] for block in docs.split("```sql\n")[1:]]
    assert len(examples) == 2
    con = connect(Target(target.url))
    per_pool, eth = (con.execute(sql).fetchall() for sql in examples)
    assert per_pool and sum(r[4] for r in per_pool) == sum(n for _, n in expected.values())
    assert any(r[1] is not None for r in eth)
    # dexnode export: the range's archived rows, one flat file per type
    out_dir = run.tmp / "export"
    args = ["export", "--from", "0", "--to", str(LATER), "--kinds", "dex_trade,trade", "--format", "csv"]
    done = await asyncio.to_thread(_dexnode, _env(run.dsn, target.url), *args, "--out", str(out_dir))
    assert done.returncode == 0, done.stderr
    got, _ = archived(target)
    for type_name in ("dex_trade", "trade"):
        lines = (out_dir / f"{type_name}.csv").read_text().splitlines()
        assert len(lines) - 1 == len(got[type_name]) > 0
        assert "source" in lines[0].split(",")


async def test_run_archiver_keeps_running_until_stopped_and_ready_reports_its_lag(run: Run) -> None:
    """``run_archiver`` as ``dexnode run`` would start it (a task with a stop event); ``/ready`` then
    reports the archive's lag from the cursors it keeps."""
    target = Target(str(run.tmp / "task"))
    settings = build_settings(database_url=run.dsn, confirmations=CONFIRMATIONS, chain=CHAIN,
                              archive_interval_seconds=0.05)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, target.url, once=False, stop=stop))
    stream = [Stream("chain", CHAIN)]
    # until both the chain and the CEX stream have a minute archived: /ready reports both below
    wanted = {*stream, Stream("cex", "okx")}
    for _ in range(600):
        if {b.stream for b in buckets(Target(target.url), list(wanted))} == wanted or task.done():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a few more passes: nothing is written twice
    stop.set()
    stats = await asyncio.wait_for(task, 30)
    chain = buckets(Target(target.url), stream)
    assert stats.by_stream[f"chain/{CHAIN}"] == len(chain) > 20
    pool = await asyncpg.create_pool(run.dsn, min_size=1, max_size=2)
    try:
        async with (
            served(create_app(settings, pool=pool)) as base,
            httpx.AsyncClient(base_url=base) as client,
        ):
            ready = (await client.get("/ready")).json()
        head = await pool.fetchval("SELECT max(number) FROM blocks")
    finally:
        await pool.close()
    last = chain[-1].entry.last_block
    assert last is not None
    assert ready["archive"][f"chain/{CHAIN}"] == {
        "last_block": last,
        "lag_blocks": head - CONFIRMATIONS - last,
    }
    assert "last_minute" in ready["archive"]["cex/okx"]


async def test_retention_deletes_only_archived_rows_and_lag_is_reported(run: Run) -> None:
    target = Target(str(run.tmp / "retention"))
    pool = await asyncpg.create_pool(run.dsn, min_size=1, max_size=2)
    try:
        archiver = Archiver(pool, target, chain=CHAIN, confirmations=CONFIRMATIONS, cex_grace_seconds=0,
                            clock=lambda: LATER)  # fmt: skip
        await archiver.archive_ready()
        lag = await archive_lag(pool, CONFIRMATIONS, now=LATER)
        chain = target.last_bucket(Stream("chain", CHAIN))
        assert chain is not None and lag[f"chain/{CHAIN}"]["last_block"] == chain.last_block
        status = await asyncio.to_thread(_dexnode, _env(run.dsn, target.url), "db", "status")
        assert status.returncode == 0, status.stderr
        watermark = await pool.fetchval("SELECT max(number) FROM blocks") - CONFIRMATIONS
        assert (
            f"archive chain/{CHAIN}: last_block {chain.last_block}, lag_blocks {watermark - chain.last_block}"
            in status.stdout
        )
        before = Counter(
            {t: await pool.fetchval(f'SELECT count(*) FROM "{t}"') for t in ("blocks", "logs", "cex_trades")}
        )
        first = buckets(target, [Stream("chain", CHAIN)])[0].entry
        assert first.first_block is not None
        # a clock less than a day after the first chain minute ends: nothing is old enough
        early = await apply_retention(pool, target, days=1, now=first.minute * 60 + 86_400 + 59)
        assert not any(early.deleted.values())
        # today: the devnet's chain (2023) goes, exactly the archived blocks; the CEX rows (today) stay
        result = await apply_retention(pool, target, days=1, now=time.time())
        after = {
            t: await pool.fetchval(f'SELECT count(*) FROM "{t}"') for t in ("blocks", "logs", "cex_trades")
        }
        assert result.deleted["blocks"] == chain.last_block - first.first_block + 1  # type: ignore[operator]
        assert await pool.fetchval("SELECT min(number) FROM blocks") == chain.last_block + 1  # type: ignore[operator]
        assert after["blocks"] == before["blocks"] - result.deleted["blocks"] > 0
        assert after["logs"] == before["logs"] - result.deleted["logs"]
        assert after["cex_trades"] == before["cex_trades"] > 0
        # a day after every CEX minute: those go too, and a second run deletes nothing more
        result = await apply_retention(pool, target, days=1, now=LATER + 86_400)
        assert result.deleted["cex_trades"] == before["cex_trades"]
        assert await pool.fetchval("SELECT count(*) FROM cex_trades") == 0
        assert not any((await apply_retention(pool, target, days=1, now=LATER + 86_400)).deleted.values())
    finally:
        await pool.close()
