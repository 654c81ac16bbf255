"""The Parquet archive against Postgres, one run, on one day of generated activity.

Data: one day of 12-second blocks (7,200, and 100 more so the day's last minute is complete), each with
raw amounts past 2^64, exact 18-decimal amounts), written through the real Postgres sink; and a CEX
exchange's trades (``--cex-per-minute`` a minute over the same day) through ``cex.store.CexStore``.

Measured, each against a peer or limit of the same run:
- records/s archived (``archive.archiver.Archiver`` over the whole day into a local directory) beside
  records/s the Postgres sink wrote the same rows;
- bytes per record per kind: Parquet (the manifest's file sizes) against Postgres
  (``pg_total_relation_size`` of the kind's table, indexes and TOAST included, over its row count);
- the cost of 256-bit values as strings: the dex_trade raw-amount columns written as string against
  decimal256(76, 0) (which only holds values below 10^76; these all are);
- compaction: the archive's hours merged into hourly files (``Archiver.compact``, on a copy), records/s;
- a day of trades: daily volume per pool with DuckDB over the minute files and over the compacted hours
  against the same SQL on Postgres, ``--rounds`` rounds alternated, medians;
- replay: ``dexnode replay``'s playback of the day from the archive at full speed to one websocket
  connection subscribed to blocks and DEX trades, data messages/s received, against the peer of the same
  run: the live API's ``/ws`` catching the same subscriptions up from Postgres (``from_block``), the same
  number of messages; rounds alternated, medians.

Server: ``DATABASE_URL`` if set (a new database there, dropped at the end), else an embedded pgserver.
The machine may be loaded by other work: read the ratios, not the absolute figures.

    .venv/bin/python bench/archive.py [--trades 10] [--cex-per-minute 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.stream.history import Playback
from archive.archiver import Archiver
from archive.layout import Target
from archive.query import connect
from archive.reader import buckets
from archive.writer import parquet_bytes
from bench.storage import server
from cex.store import CexStore
from cli.archive import run_replay
from core.database import ensure_database
from core.settings import build_settings
from migrations import runner
from records import Block, DexTrade, Trade, kinds
from records.batch import Batch
from sinks.postgres import PostgresSink

DAY_START = 1_767_225_600  # 2026-01-01T00:00:00Z
BLOCKS = 7_200
CHUNK = 100
POOLS = [f"0x{0xB0_0000 + p:040x}" for p in range(50)]
TOKENS = [f"0x{0xA0_0000 + t:040x}" for t in range(10)]


def _hash(kind: int, n: int) -> str:
    return f"0x{kind:02x}{n:062x}"


def block(n: int) -> Block:
    return Block(
        number=n,
        hash=_hash(1, n),
        parent_hash=_hash(1, n - 1),
        nonce="0x0000000000000000",
        sha3_uncles=_hash(9, 0),
        logs_bloom="0x" + "00" * 256,
        transactions_root=_hash(2, n),
        state_root=_hash(3, n),
        receipts_root=_hash(4, n),
        miner=TOKENS[0],
        difficulty=0,
        total_difficulty=None,
        extra_data="0x",
        size=1_000,
        gas_limit=30_000_000,
        gas_used=12_000_000,
        base_fee_per_gas=10**10 + n,
        timestamp=DAY_START + 12 * n,
        transaction_count=0,
    )


def trade(n: int, i: int) -> DexTrade:
    pool = POOLS[(n * 7 + i) % len(POOLS)]
    raw_bought = 10**20 + n * 1_000 + i
    raw_sold = 3 * 10**21 + n * 997 + i
    return DexTrade(
        block_number=n,
        block_time=DAY_START + 12 * n,
        block_hash=_hash(1, n),
        transaction_hash=_hash(5, n * 100 + i),
        transaction_index=i,
        log_index=i,
        protocol="uniswap",
        version="2",
        exchange="uniswap-v2",
        pool_address=pool,
        taker=TOKENS[1],
        maker=pool,
        token_bought_address=TOKENS[2],
        token_sold_address=TOKENS[3],
        token_bought_symbol="WETH",
        token_sold_symbol="USDC",
        amount_bought_raw=raw_bought,
        amount_sold_raw=raw_sold,
        amount_bought=Decimal(raw_bought).scaleb(-18),
        amount_sold=Decimal(raw_sold).scaleb(-18),
        price=(Decimal(raw_sold) / Decimal(raw_bought)).quantize(Decimal("1e-18")),
        tx_from=TOKENS[1],
        tx_to=TOKENS[4],
    )


async def fill(dsn: str, trades_per_block: int, cex_per_minute: int) -> tuple[int, float]:
    sink = await PostgresSink.connect(dsn)
    started = time.perf_counter()
    rows = 0
    try:
        for first in range(
            0, BLOCKS + CHUNK, CHUNK
        ):  # a chunk into the next day: the day's last minute closes
            blocks = [block(n) for n in range(first, first + CHUNK)]
            trades = [trade(n, i) for n in range(first, first + CHUNK) for i in range(trades_per_block)]
            await sink.write(Batch("backfill", blocks, {DexTrade: trades}))
            rows += len(blocks) + len(trades)
    finally:
        await sink.close()
    store = await CexStore.connect(dsn)
    try:
        for minute in range(BLOCKS * 12 // 60):
            at = (DAY_START + minute * 60) * 1_000_000
            batch = [
                Trade(
                    "bench",
                    "ETH-USDT",
                    Decimal("3000.10") + Decimal(k) / 100,
                    Decimal("0.0150"),
                    "buy",
                    f"{minute}-{k}",
                    None,
                    None,
                    (at // 1000) + k,
                    at + k * 1_000,
                )
                for k in range(cex_per_minute)
            ]
            await store.write(batch)
            rows += len(batch)
    finally:
        await store.close()
    return rows, time.perf_counter() - started


def u256_encodings(target: Target) -> tuple[int, int]:
    """Bytes of the dex_trade raw-amount columns as strings (as archived) and as decimal256(76, 0)."""
    values: dict[str, list[str]] = {"amount_bought_raw": [], "amount_sold_raw": []}
    for b in buckets(target):
        for f in b.entry.files:
            if f.type == "dex_trade":
                table = pq.read_table(io.BytesIO(target.read_bytes(f.path)))
                for row in table.column("data").to_pylist():
                    for name in values:
                        values[name].append(row[name])

    def size(table: pa.Table) -> int:
        return len(parquet_bytes(table))  # as the archiver writes them, without statistics

    as_text = pa.table({n: pa.array(v, pa.string()) for n, v in values.items()})
    as_decimal = pa.table(
        {n: pa.array([Decimal(x) for x in v], pa.decimal256(76, 0)) for n, v in values.items()}
    )
    return size(as_text), size(as_decimal)


async def query_day(pool: asyncpg.Pool, minutes: Target, hours: Target, rounds: int) -> None:
    """Daily volume per pool: DuckDB over the minute files, over the compacted hours, and Postgres,
    alternated round by round; medians."""
    duck_sql = (
        "SELECT pool_address, sum(amount_sold::DECIMAL(38, 18)) FROM dex_trade"
        " WHERE date = DATE '2026-01-01' GROUP BY 1 ORDER BY 1"
    )
    pg_sql = (
        f"SELECT pool_address, sum(amount_sold) FROM dex_trades WHERE block_time >= {DAY_START}"
        f" AND block_time < {DAY_START + 86_400} GROUP BY 1 ORDER BY 1"
    )
    cons = {"minute files": connect(minutes), "hourly files": connect(hours)}
    times: dict[str, list[float]] = {name: [] for name in (*cons, "postgres")}
    answers: dict[str, list[tuple[Any, ...]]] = {}
    for _ in range(rounds):
        for name, con in cons.items():
            t0 = time.perf_counter()
            answers[name] = [tuple(r) for r in await asyncio.to_thread(con.execute(duck_sql).fetchall)]
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        answers["postgres"] = [(r[0], r[1]) for r in await pool.fetch(pg_sql)]
        times["postgres"].append(time.perf_counter() - t0)
    median = {name: statistics.median(t) for name, t in times.items()}
    same = all(a == answers["postgres"] for a in answers.values())
    print(f"\na day of trades, volume per pool (median of {rounds}, alternated; load average"
          f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}; same answer everywhere: {same}):")  # fmt: skip
    for name in cons:
        ratio = median[name] / median["postgres"]
        print(f"  DuckDB over {name:<13} {median[name] * 1000:7.0f} ms -> {ratio:5.2f}x"
              f" Postgres's {median['postgres'] * 1000:.0f} ms")  # fmt: skip


SUBS = [
    {"op": "subscribe", "id": "b", "channel": "blocks"},
    {"op": "subscribe", "id": "t", "channel": "dex_trades"},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _read(url: str, subs: list[dict[str, Any]], until: int | None = None) -> tuple[int, float]:
    """Data messages (not events, not finality marks) one connection receives, and the seconds from its
    subscribe to the last one; reads until the server closes, or ``until`` messages."""
    received = 0
    async with ws_connect(url, max_size=None) as ws:
        for sub in subs:
            await ws.send(orjson.dumps(sub).decode())
        t0 = last = time.perf_counter()
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                if isinstance(text, str) and text.startswith('{"id":') and '"type":"finalized"' not in text:
                    received += 1
                    last = time.perf_counter()
                    if until is not None and received >= until:
                        break
    return received, last - t0


async def replay_rate(dsn: str, target: Target) -> tuple[int, float]:
    """One connection's playback of the day from the archive at full speed (blocks and DEX trades)."""
    port = _free_port()
    # the chain the archiver wrote ("bench"): another name would make the playback read the range from
    # Postgres too, as past an archive of that chain
    settings = build_settings(
        database_url=dsn, archive_url=target.url, api_port=port, confirmations=0, chain="bench"
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    day = Playback(DAY_START * 1_000_000, (DAY_START + 86_400) * 1_000_000)
    task = asyncio.create_task(run_replay(settings, day, announce=lambda _: ready.set(), stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        # it starts once both subscriptions are in
        return await _read(f"ws://127.0.0.1:{port}/ws?subscriptions={len(SUBS)}", SUBS)
    finally:
        stop.set()
        await task


async def catch_up_rate(dsn: str, messages: int) -> tuple[int, float]:
    """The peer: the live API's /ws catching the same subscriptions up from Postgres (``from_block`` 0),
    the first ``messages`` data messages."""
    port = _free_port()
    settings = build_settings(database_url=dsn, api_port=port, confirmations=0)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, pool=pool), port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.02)
        subs = [{**sub, "from_block": 0} for sub in SUBS]
        return await _read(f"ws://127.0.0.1:{port}/ws", subs, until=messages)
    finally:
        server.should_exit = True
        await serving
        await pool.close()


async def run(args: argparse.Namespace, server_uri: str, where: str) -> None:
    name = f"dexnode_bench_archive_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = await ensure_database(server_uri, name)
    tmp = Path(tempfile.mkdtemp(prefix="dexnode-bench-archive-"))
    try:
        await runner.upgrade("postgresql+asyncpg://" + dsn.split("://", 1)[1])
        rows, fill_s = await fill(dsn, args.trades, args.cex_per_minute)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            await pool.execute("VACUUM ANALYZE")
            target = Target(str(tmp / "archive"))
            archiver = Archiver(
                pool,
                target,
                chain="bench",
                confirmations=0,
                cex_grace_seconds=0,
                clock=lambda: DAY_START + 2 * 86_400,
            )
            t0 = time.perf_counter()
            stats = await archiver.archive_ready()
            archive_s = time.perf_counter() - t0
            print(f"{where}; {os.cpu_count()} cores (shared with other work: ratios, not absolutes)")
            archived_rate, sink_rate = stats.rows / archive_s, rows / fill_s
            print(
                f"archived {stats.rows:,} records in {stats.buckets:,} buckets:"
                f" {archived_rate:,.0f} records/s;"
                f" the Postgres sink wrote {rows:,} in {fill_s:.1f}s: {sink_rate:,.0f} records/s"
                f" -> archiving {archived_rate / sink_rate:.2f}x the sink's rate"
            )
            print("\nbytes per record            Parquet   Postgres   ratio")
            per_type: dict[str, tuple[int, int]] = {}
            for b in buckets(target):
                for f in b.entry.files:
                    n, size = per_type.get(f.type, (0, 0))
                    per_type[f.type] = (n + f.rows, size + f.bytes)
            for kind in (*kinds.BATCH_KINDS, *kinds.CEX):
                if kind.type not in per_type:
                    continue
                n, size = per_type[kind.type]
                pg_rows = await pool.fetchval(f'SELECT count(*) FROM "{kind.table}"')
                pg_size = await pool.fetchval("SELECT pg_total_relation_size($1::regclass)", kind.table)
                pg_per = pg_size / pg_rows if pg_rows else 0
                print(f"  {kind.type:<24} {size / n:8.1f}   {pg_per:8.1f}   {size / n / pg_per:5.2f}x")
            text, dec = u256_encodings(target)
            print(
                f"\ndex_trade raw amounts (2 U256 columns): string {text:,} B, decimal256(76,0) {dec:,} B"
                f" -> strings {text / dec:.2f}x"
            )
            # the same archive with its hours compacted (a copy: the replay below reads the minute files)
            compacted = Target(str(tmp / "compacted"))
            shutil.copytree(tmp / "archive", tmp / "compacted")
            t0 = time.perf_counter()
            hours = await Archiver(pool, compacted, chain="bench", confirmations=0, cex_grace_seconds=0,
                                   clock=lambda: DAY_START + 2 * 86_400).compact(after_hours=0)  # fmt: skip
            compact_s = time.perf_counter() - t0
            print(
                f"\ncompaction: {hours} hours of minute files into hourly files in {compact_s:.1f}s"
                f" ({stats.rows / compact_s:,.0f} records/s)"
            )
            await query_day(pool, target, compacted, args.rounds)
        finally:
            await pool.close()
        # alternated rounds, medians: the archive's playback vs the live API catching up from Postgres
        replay: list[tuple[int, float]] = []
        peer: list[tuple[int, float]] = []
        for _ in range(args.rounds):
            replay.append(await replay_rate(dsn, target))
            peer.append(await catch_up_rate(dsn, replay[-1][0]))
        r_rate = statistics.median(n / s for n, s in replay)
        p_rate = statistics.median(n / s for n, s in peer)
        print(
            f"\nreplay at full speed (median of {args.rounds}, alternated): {replay[0][0]:,} data messages"
            f" to one connection, {r_rate:,.0f} messages/s; the live /ws catching up the same from Postgres"
            f" {p_rate:,.0f} messages/s -> replay {r_rate / p_rate:.2f}x; load average"
            f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
    finally:
        admin = await asyncpg.connect(server_uri)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=10, help="DEX trades per block")
    parser.add_argument("--cex-per-minute", type=int, default=60, help="CEX trades per minute")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the query and replay measures (medians)"
    )
    args = parser.parse_args()
    with server() as (uri, where):
        asyncio.run(run(args, uri, where))


if __name__ == "__main__":
    main()
