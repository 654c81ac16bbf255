"""Shared by the archive's integration tests: Postgres's CEX rows as truth, the archive read back, real
OKX records (the recorded frames through the local OKX server and the real feed), and ``dexnode archive``
run (and SIGKILLed) as a process."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg

from archive.layout import Target
from archive.reader import StoredBucket, bucket_records, buckets
from archive.source import CEX_QUERIES, _cex_record
from cex.exchanges.okx import Okx
from cex.feed import FeedHandler
from core.retry import RetryPolicy
from devnet.exchanges import okx as okx_server
from records import Record
from sinks import schema
from tests.cex_harness import run_feed
from tests.conftest import dexnode_bin

OKX_SYMBOLS = {"BTC-USDT": "BTC-USDT", "UNI-USD-PERP": "UNI-USD-SWAP"}


async def truncate_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in schema.metadata.tables))
    finally:
        await conn.close()


async def okx_records() -> list[Any]:
    """What the OKX feed publishes from the recorded frames: books, trades, tickers, candles, resyncs."""
    server = await okx_server.OkxServer(okx_server.events(), pace=0.002).start()
    try:
        feed = FeedHandler(Okx(ws_url=server.url), list(OKX_SYMBOLS), ["book", "trades", "ticker"],
                           connections=1, stale_after=5, retry=RetryPolicy(attempts=0, base_delay=0.3,
                           max_delay=0.5), snapshot_every=0.2)  # fmt: skip
        run = await run_feed(server, feed, OKX_SYMBOLS)
    finally:
        await server.stop()
    return run.published


async def postgres_cex(dsn: str, exchange: str) -> dict[str, list[Record]]:
    """Every stored row of one exchange per record type, in stored order (time, then id)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        out: dict[str, list[Record]] = {}
        for q in CEX_QUERIES:
            rows = await pool.fetch(q.select, exchange, 0, 2**62)
            out[q.kind.type] = [_cex_record(q, r) for r in rows]
        return out
    finally:
        await pool.close()


def archived(target: Target) -> tuple[dict[str, list[Record]], list[StoredBucket]]:
    """Every archived record per type (bucket by bucket, every part), read with a fresh manifest."""
    got: dict[str, list[Record]] = {}
    found = buckets(Target(target.url))
    for bucket in found:
        for type_name, records in bucket_records(target, bucket).items():
            got.setdefault(type_name, []).extend(records)
    return got, found


def archive_env(dsn: str, target: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env.update(DEXNODE_DATABASE_URL=dsn, DEXNODE_ARCHIVE_URL=target, DEXNODE_ARCHIVE_CEX_GRACE_SECONDS="0",
               **extra)  # fmt: skip
    return env


def kill_archiver(env: dict[str, str], logged_enough: Callable[[list[str]], bool]) -> list[str]:
    """Start ``dexnode archive --once``; SIGKILL it as soon as its log lines satisfy ``logged_enough``
    (it is then at work on what comes next). Returns the lines it logged."""
    proc = subprocess.Popen([dexnode_bin(), "archive", "--once"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        logged: list[str] = []
        for line in proc.stderr:
            logged.append(line)
            if logged_enough(logged):
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(10) == -signal.SIGKILL, "".join(logged)
        return logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run_archiver_once(env: dict[str, str]) -> str:
    done = subprocess.run([dexnode_bin(), "archive", "--once"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr
