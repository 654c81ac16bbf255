"""What the API answers at 50 concurrent clients over ≥ 1M DEX trades, beside the same SQL alone.

Data: ``--trades`` rows (default 1,000,000) generated into the real schema with COPY: ``--trades / 10``
blocks 12 s apart, 100 pools over 20 tokens (18 decimals), 10,000 takers, exact amounts and prices;
then VACUUM ANALYZE. Postgres: ``DATABASE_URL``'s server if set, else an embedded pgserver in a temp dir.

The API runs as ``dexnode serve`` in its own process; this process is the load: ``--clients`` (50)
concurrent closed-loop keep-alive connections (``bench/http_load.py``, raw asyncio on uvloop: a
twentieth of httpx's CPU per request; ``--client httpx`` for the old one), ``--requests`` per query.
Per query: p50/p99 latency, requests/s, requests per CPU-second of the server's processes (/proc
utime+stime over the run, summed over ``serve --workers``, 2 by default), and the CPU milliseconds
per request of the server, of this load generator and of the Postgres backends (when Postgres runs
on this host), so the shares of the two cores are visible; beside the floor: the same SQL text the
route runs (built by the same ``api.query.Query``), from one asyncpg connection, sequentially
(p50/p99). Target: p99 < 25 ms for the indexed REST queries: at 50 closed-loop clients that takes
more than 2,000 requests/s through server, Postgres and load generator together.
Two cores here: Postgres, the server and this load generator share them. ``--server-root DIR``
serves another checkout's code, to alternate before/after runs.

``--detail`` prints, per query, where the tail comes from (per serve worker, the load generator's own
delay, whether slow answers cluster in time, what else Postgres did).

    .venv/bin/python bench/api.py [--trades 1000000] [--clients 50] [--requests 2000] [--workers 2]
        [--only LABEL-TEXT] [--client raw|httpx] [--server-root DIR] [--data-dir DIR] [--detail]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import httpx
import uvloop

from api import candles as ohlcv
from api.query import Query
from bench.http_load import Load, Request, Result, cpu_seconds_self
from core.database import DatabaseInfo, asyncpg_dsn, embedded_server, ensure_database
from migrations import runner
from records import kinds
from sinks.schema import metadata

REPO = Path(__file__).resolve().parents[1]
POOLS, TOKENS, TAKERS, PER_BLOCK = 100, 20, 10_000, 10
T0 = 1_700_000_000


def address(kind: int, i: int) -> str:
    return f"0x{kind:08x}{i:032x}"


def block_hash(n: int) -> str:
    return f"0x{n:064x}"


def pool_tokens(p: int) -> tuple[str, str]:
    a, b = p % TOKENS, (p * 7 + 3) % TOKENS
    b = b if b != a else (a + 1) % TOKENS
    return address(2, min(a, b)), address(2, max(a, b))


def row_tuple(table: str, values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values.get(c.name) for c in metadata.tables[table].columns if c.server_default is None)


def columns(table: str) -> list[str]:
    return [c.name for c in metadata.tables[table].columns if c.server_default is None]


def token_rows() -> list[tuple[Any, ...]]:
    return [
        row_tuple("tokens", {"address": address(2, t), "symbol": f"T{t}", "decimals": 18, "source": "call"})
        for t in range(TOKENS)
    ]


def pool_rows() -> list[tuple[Any, ...]]:
    rows = []
    for p in range(POOLS):
        t0, t1 = pool_tokens(p)
        pool = {"address": address(1, p), "protocol": "uniswap", "version": "2", "exchange": "uniswap-v2"}
        created = {"created_block_number": 0, "created_block_hash": block_hash(0)}
        rows.append(row_tuple("pools", {**pool, **created, "token0": t0, "token1": t1, "tokens": [t0, t1]}))
    return rows


def block_row(n: int) -> tuple[Any, ...]:
    parent = block_hash(n - 1) if n else "0x" + "0" * 64
    return row_tuple(
        "blocks",
        {"number": n, "hash": block_hash(n), "parent_hash": parent, "gas_limit": 30_000_000,
         "gas_used": 1_000_000, "timestamp": T0 + 12 * n, "transaction_count": PER_BLOCK},
    )  # fmt: skip


SCALE = Decimal(10) ** -18


def trade_row(rng: random.Random, n: int, i: int) -> tuple[Any, ...]:
    p = rng.randrange(POOLS)
    t0, t1 = pool_tokens(p)
    sold_raw, bought_raw = rng.randrange(10**15, 10**21), rng.randrange(10**15, 10**21)
    sold, bought = (t0, t1) if rng.random() < 0.5 else (t1, t0)
    amount_sold, amount_bought = sold_raw * SCALE, bought_raw * SCALE
    taker = address(3, rng.randrange(TAKERS))
    keys = {"block_hash": block_hash(n), "log_index": i, "block_number": n, "block_time": T0 + 12 * n,
            "transaction_hash": f"0x{n:032x}{i:032x}", "transaction_index": i}  # fmt: skip
    venue = {"protocol": "uniswap", "version": "2", "exchange": "uniswap-v2", "pool_address": address(1, p)}
    sides = {
        "taker": taker,
        "maker": address(1, p),
        "token_bought_address": bought,
        "token_sold_address": sold,
    }
    amounts = {"amount_bought_raw": Decimal(bought_raw), "amount_sold_raw": Decimal(sold_raw),
               "amount_bought": amount_bought, "amount_sold": amount_sold,
               "price": amount_sold / amount_bought}  # fmt: skip
    return row_tuple(
        "dex_trades", {**keys, **venue, **sides, **amounts, "tx_from": taker, "tx_to": address(4, 0)}
    )


async def generate(conn: asyncpg.Connection, trades: int) -> None:
    rng = random.Random(7)
    blocks = trades // PER_BLOCK
    started = time.perf_counter()
    await conn.copy_records_to_table("tokens", records=token_rows(), columns=columns("tokens"))
    await conn.copy_records_to_table("pools", records=pool_rows(), columns=columns("pools"))
    for first in range(0, blocks, 10_000):
        numbers = range(first, min(first + 10_000, blocks))
        await conn.copy_records_to_table(
            "blocks", records=[block_row(n) for n in numbers], columns=columns("blocks")
        )
        rows = [trade_row(rng, n, i) for n in numbers for i in range(PER_BLOCK)]
        await conn.copy_records_to_table("dex_trades", records=rows, columns=columns("dex_trades"))
    # as autovacuum leaves a table some time after its inserts: hint bits set, pages all-visible (read
    # right after COPY, every first visit of a page set its hint bits and dirtied it)
    await conn.execute("VACUUM (ANALYZE)")
    print(f"generated {trades:,} dex_trades in {blocks:,} blocks in {time.perf_counter() - started:.0f} s")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(pid: int) -> float:
    """utime+stime of the server and its worker processes (``serve --workers N``; live ones: workers
    outlive every measurement)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


async def httpx_load(client: httpx.AsyncClient, request: Request, total: int, clients: int) -> Result:
    """``Load.run`` through httpx (``--client httpx``: the load generator this benchmark used before,
    for comparison; it spends several times the server's CPU per request)."""
    result = Result()
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            method, path, body = request(i)
            started = time.perf_counter()
            try:
                answer = await client.request(method, path, json=body)
            except httpx.HTTPError:
                result.failures += 1
                continue
            if answer.status_code != 200 or b'"errors"' in answer.content[:20]:
                result.failures += 1
                continue
            result.latencies.append(time.perf_counter() - started)

    cpu, started = cpu_seconds_self(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    result.wall, result.cpu = time.perf_counter() - started, cpu_seconds_self() - cpu
    return result


async def floor(
    conn: asyncpg.Connection, sql: str, args: Callable[[int], list[Any]], runs: int
) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        await conn.fetch(sql, *args(i))
        times.append(time.perf_counter() - started)
    return times


@contextlib.asynccontextmanager
async def api_server(
    dsn: str, port: int, workers: int, root: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``dexnode serve``; ``root``: run another checkout's code (``--server-root``, before/after)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env.update(DEXNODE_DATABASE_URL=dsn, DEXNODE_LOG_LEVEL="WARNING")
    if root is not None:
        env["PYTHONPATH"] = str(root)
    proc = await asyncio.create_subprocess_exec(str(REPO / ".venv" / "bin" / "dexnode"), "serve", "--port",
                                                str(port), "--workers", str(workers), env=env)  # fmt: skip
    try:
        # until every worker answers (a new connection each time: the kernel spreads them), so no
        # worker's start-up lands in a measurement; a loaded machine takes tens of seconds
        seen: set[str] = set()
        async with httpx.AsyncClient(timeout=5, headers={"Connection": "close"}) as probe:
            for _ in range(1800):
                with contextlib.suppress(httpx.TransportError):
                    answer = await probe.get(f"http://127.0.0.1:{port}/health")
                    if answer.status_code == 200:
                        seen.add(answer.headers.get("x-dexnode-worker", "0"))
                        if len(seen) == workers:
                            break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"serve did not start {workers} workers (saw {sorted(seen)})")
        yield proc
    finally:
        proc.terminate()
        await proc.wait()


async def database_backends(conn: asyncpg.Connection) -> list[int]:
    """The Postgres backends of this benchmark's database (the server's pools and the floor's
    connection), whose CPU this host's /proc shows when Postgres runs here."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return local_pids([r["pid"] for r in pids])


def backends_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds per backend still running (the pool may close one during a run: its share is lost)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found[pid] = cpu_seconds(pid)
    return found


def local_pids(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}/stat").exists()]


@contextlib.asynccontextmanager
async def load_client(args: argparse.Namespace) -> AsyncIterator[Callable[[Request, int], Awaitable[Result]]]:
    """``fire(request, total)``: ``total`` requests from ``--clients`` closed-loop clients."""
    if args.client == "httpx":
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        base = f"http://127.0.0.1:{args.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            yield lambda request, total: httpx_load(client, request, total, args.clients)
        return
    load = Load("127.0.0.1", args.port, args.clients)
    try:
        yield load.run
    finally:
        load.close()


def trades_sql(**filters: Any) -> tuple[str, list[Any]]:
    query = Query(kinds.DEX_TRADES, kinds.DEX_TRADES.order, descending=filters.pop("desc", False))
    for column, value in filters.items():
        if column == "token":
            query.any_column(("token_bought_address", "token_sold_address"), value)
        else:
            query.compare(column, "=", value)
    return query.pinned_sql(cursor=None, limit=101), query.params  # the statement a first page runs


GRAPHQL = (
    "query($p: String!) { dexTrades(first: 100, where: {poolAddress: $p}, orderBy: blockNumber,"
    " orderDirection: desc) { blockNumber logIndex taker amountSold amountBought price"
    " pool { token0 { symbol } token1 { symbol } } } }"
)


@dataclass
class Case:
    label: str
    request: Request
    sql: str | None = None  # the SQL the route runs, and its parameters per request
    sql_args: Callable[[int], list[Any]] | None = None


def trades_case(label: str, path: Callable[[int], str], filters: Callable[[int], dict[str, Any]]) -> Case:
    return Case(
        label,
        lambda i: ("GET", path(i), None),
        trades_sql(**filters(0))[0],
        lambda i: trades_sql(**filters(i))[1],
    )


def cases(top: int) -> list[Case]:
    pools = [address(1, p) for p in range(POOLS)]
    takers = [address(3, t) for t in range(TAKERS)]
    end = T0 + 12 * top
    start = end - 86_400
    pool, taker, token = (
        (lambda i: pools[i % POOLS]),
        (lambda i: takers[i % TAKERS]),
        (lambda i: address(2, i % TOKENS)),
    )
    return [
        trades_case("GET /v1/dex/trades?pool=P", lambda i: f"/v1/dex/trades?pool={pool(i)}",
                    lambda i: {"pool_address": pool(i)}),
        trades_case("GET /v1/dex/trades?pool=P&order=desc",
                    lambda i: f"/v1/dex/trades?pool={pool(i)}&order=desc",
                    lambda i: {"pool_address": pool(i), "desc": True}),
        trades_case("GET /v1/dex/trades?taker=T", lambda i: f"/v1/dex/trades?taker={taker(i)}",
                    lambda i: {"taker": taker(i)}),
        trades_case("GET /v1/dex/trades?token=T", lambda i: f"/v1/dex/trades?token={token(i)}",
                    lambda i: {"token": token(i)}),
        trades_case("GET /v1/dex/trades?order=desc", lambda i: "/v1/dex/trades?order=desc",
                    lambda i: {"desc": True}),
        Case("GET /v1/blocks/latest", lambda i: ("GET", "/v1/blocks/latest", None)),
        Case(
            "GET /v1/dex/candles?pool=P&interval=1h (1 day)",
            lambda i: ("GET", f"/v1/dex/candles?pool={pool(i)}&interval=1h&from_time={start}&to_time={end}",
                       None),
            ohlcv.SQL_ASC,
            lambda i: [pool(i), 3600, pool_tokens(i % POOLS)[0], 10**12, start - start % 3600, end + 3600,
                       101],
        ),
        Case(
            "POST /graphql dexTrades(pool) + pool{token0,token1}",
            lambda i: ("POST", "/graphql", {"query": GRAPHQL, "variables": {"p": pool(i)}}),
        ),
    ]  # fmt: skip


async def database_activity(conn: asyncpg.Connection) -> dict[str, int]:
    """Counters of what else Postgres did (``--detail``): checkpoints, autovacuum and autoanalyze of
    ``dex_trades``, blocks read from outside shared buffers and found in them."""
    row = await conn.fetchrow(
        "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints,"
        " (SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables"
        "  WHERE relname = 'dex_trades') AS autovacuum,"
        " (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()) AS blocks_read,"
        " (SELECT blks_hit FROM pg_stat_database WHERE datname = current_database()) AS blocks_hit"
    )
    return {k: int(v) for k, v in row.items()}


def print_detail(result: Result) -> None:
    """Where the tail comes from (``--detail``): per server worker its connections, answers and
    p50/p99; the load generator's own delay (answer read -> its task resumed); and whether the slow
    answers cluster in time (a pause of a whole process) or spread (queueing)."""
    samples = result.samples
    if not samples:
        return
    by_worker: dict[str, list[float]] = {}
    slots: dict[str, set[int]] = {}
    for s in samples:
        by_worker.setdefault(s.worker, []).append(s.received - s.sent)
        slots.setdefault(s.worker, set()).add(s.slot)
    for worker, latencies in sorted(by_worker.items()):
        print(
            f"    worker {worker}: {len(slots[worker])} connections, {len(latencies)} answers,"
            f" p50 {pct(latencies, 0.5):.2f} p99 {pct(latencies, 0.99):.2f} ms"
        )
    own = [s.resumed - s.received for s in samples]
    print(f"    load generator's own delay: p50 {pct(own, 0.5):.3f} p99 {pct(own, 0.99):.3f} ms")
    received = [s.received - s.sent for s in samples]
    limit = pct(received, 0.99) / 1000
    start = min(s.sent for s in samples)
    slow_at = sorted(int((s.received - start) * 100) for s in samples if s.received - s.sent >= limit)
    if slow_at:
        windows = len(set(slow_at))
        span = int((max(s.received for s in samples) - start) * 100) + 1
        print(
            f"    answers >= p99: {len(slow_at)}, ending in {windows} of {span} 10-ms windows"
            f" (clustered when far fewer windows than answers)"
        )


async def run(args: argparse.Namespace, dsn: str) -> None:
    await runner.upgrade(DatabaseInfo(dsn=dsn, embedded=False).sqlalchemy_url)
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT count(*) FROM dex_trades"):
            await generate(conn, args.trades)
        if args.only_generate:
            return
        count = await conn.fetchval("SELECT count(*) FROM dex_trades")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_table_size('dex_trades'))")
        buffers = await conn.fetchval("SHOW shared_buffers")
        top = await conn.fetchval("SELECT max(number) FROM blocks")
        print(
            f"{count:,} dex_trades, head {top:,}; {args.clients} clients, {args.requests} requests per query;"
            f" serve --workers {args.workers}; load average {os.getloadavg()[0]:.1f} at the start;"
            f" dex_trades {size}, shared_buffers {buffers}"
        )
        header = (
            "query",
            "p50 ms",
            "p99 ms",
            "req/s",
            "req/cpu-s",
            "srv",
            "load",
            "pg",
            "SQL p50",
            "SQL p99",
        )
        print("{:<52} {:>7} {:>7} {:>6} {:>9} {:>5} {:>5} {:>5}  {:>7} {:>7}".format(*header))
        async with (
            api_server(dsn, args.port, args.workers, args.server_root) as proc,
            load_client(args) as fire,
        ):
            for case in cases(top):
                if args.only and args.only not in case.label:
                    continue
                await fire(case.request, args.clients * 2)  # warm up
                backends = await database_backends(conn)
                activity = await database_activity(conn) if args.detail else None
                cpu, pg = cpu_seconds(proc.pid), backends_cpu(backends)
                result = await fire(case.request, args.requests)
                used = cpu_seconds(proc.pid) - cpu
                pg = sum(backends_cpu(backends).get(pid, t) - t for pid, t in pg.items())
                sql_cell = ""
                if case.sql is not None and case.sql_args is not None:
                    alone = await floor(conn, case.sql, case.sql_args, min(args.requests, 500))
                    sql_cell = f"{pct(alone, 0.5):7.2f} {pct(alone, 0.99):7.2f}"
                done = max(len(result.latencies), 1)
                rate, per_cpu = len(result.latencies) / result.wall, len(result.latencies) / max(used, 1e-9)
                p50, p99 = pct(result.latencies, 0.5), pct(result.latencies, 0.99)
                shares = " ".join(f"{1000 * s / done:5.2f}" for s in (used, result.cpu, pg))
                failed = f"  ({result.failures} failed)" if result.failures else ""
                print(
                    f"{case.label:<52} {p50:7.2f} {p99:7.2f} {rate:6.0f} {per_cpu:9.0f} {shares}  {sql_cell}"
                    f"{failed}"
                )
                if activity is not None:
                    print_detail(result)
                    after = await database_activity(conn)
                    print("    Postgres during the run: " + ", ".join(
                        f"{k} {after[k] - activity[k]:+d}" for k in activity))  # fmt: skip
        print(
            "srv, load, pg: CPU ms per request of the server's processes, this load generator"
            f" ({args.client}) and the Postgres backends; load average {os.getloadavg()[0]:.1f} at the end"
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=2, help="serve --workers (CPU summed over them)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator: bench/http_load.py (raw asyncio, cheap) or httpx")  # fmt: skip
    parser.add_argument("--server-root", type=Path, help="serve the code of this checkout (before/after)")
    parser.add_argument("--only", help="run only the queries whose label contains this text")
    parser.add_argument("--only-generate", action="store_true")
    parser.add_argument("--detail", action="store_true", help="per-worker latency, the tail's shape")
    parser.add_argument("--data-dir", type=Path, help="keep the embedded Postgres here (reused if filled)")
    parser.add_argument("--shared-buffers", default="auto",
                        help="the embedded server's DEXNODE_EMBEDDED_SHARED_BUFFERS (auto, a size, or off:"
                        " Postgres's 128MB), applied when this run starts it")  # fmt: skip
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url:
        uvloop.run(run(args, asyncpg_dsn(url)))
        return
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="dexnode-bench-api-"))
    try:
        with embedded_server(root, args.shared_buffers) as server:
            dsn = asyncio.run(ensure_database(server, "bench_api"))
            print(f"database: {dsn}")
            uvloop.run(run(args, dsn))
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
