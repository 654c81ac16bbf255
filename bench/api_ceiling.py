"""The ceiling any API server on this machine can reach: Postgres alone answering the routes' own SQL.

``bench/api.py`` measures the API at 50 closed-loop clients; its target is p99 < 25 ms for the indexed REST
queries. This runs the same statements (``bench.api.cases``: the SQL text each route runs, built by
``api.query.Query``) from pgbench, Postgres's own C client, over ``--clients`` prepared connections, closed
loop, for ``--seconds`` per query, with no HTTP server at all; so its p99 and pages/s bound from above what
any server could answer on the same cores (the server only adds work: HTTP, decoding the rows, JSON).
When Postgres runs on this host it also prints Postgres's and pgbench's CPU milliseconds per page.

Each request's values (a pool, a taker, a token, ...) are those ``bench/api.py`` sends, looked up per
transaction in a small table: ``$n`` becomes ``(SELECT a<n> FROM bench_ceiling_args WHERE q = .. AND
i = :i)``, an index lookup of a few microseconds evaluated once per statement.

Run it on a database ``bench/api.py --data-dir DIR`` filled (or ``DATABASE_URL``'s):

    .venv/bin/python bench/api_ceiling.py --data-dir DIR [--clients 50] [--seconds 15] [--only TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from bench.api import Case, cases, pct
from core.database import asyncpg_dsn, embedded_server, ensure_database

ARGS_TABLE = "bench_ceiling_args"
VALUES = 10_000  # per query: i in [0, VALUES), as bench/api.py's i-th request


def sql_type(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"no SQL type for {value!r}")
    return "bigint" if isinstance(value, int) else "text"


async def load_args(conn: asyncpg.Connection, q: int, case: Case) -> str:
    """Stores the case's per-request values; returns its SQL with ``$n`` read from the table."""
    assert case.sql is not None and case.sql_args is not None
    rows = [case.sql_args(i) for i in range(VALUES)]
    width = len(rows[0])
    sql = case.sql
    for n in range(width, 0, -1):  # $10 before $1
        cast = "::" + sql_type(rows[0][n - 1])
        sql = sql.replace(f"${n}", f"(SELECT a{n}{cast} FROM {ARGS_TABLE} WHERE q = {q} AND i = :i)")
    await conn.executemany(
        f"INSERT INTO {ARGS_TABLE} VALUES ($1, $2, {', '.join(f'${n + 3}' for n in range(8))})",
        [(q, i, *(str(v) for v in row), *([None] * (8 - width))) for i, row in enumerate(rows)],
    )
    return sql


def postmaster_cpu(pid: int | None) -> float:
    """CPU seconds of the postmaster, its live children and the children it has reaped (pgbench's
    backends end with it: their time moves into the postmaster's cutime/cstime)."""
    if pid is None:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int, reaped: bool) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        return used / tick

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return stat(pid, True) + sum(stat(int(c), False) for c in children)


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    try:
        data_dir = await conn.fetchval("SHOW data_directory")
        return int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, asyncpg.PostgresError):
        return None  # Postgres elsewhere, or not readable: no CPU column


def pgbench(uri: str, script: Path, clients: int, seconds: int, logs: Path) -> tuple[list[float], float]:
    """Latencies (s) of every transaction and pgbench's own CPU seconds."""
    before = os.times()
    subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "1", "-T", str(seconds),
         "-f", str(script), "-l", f"--log-prefix={logs}/tx", uri],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    after = os.times()
    latencies = []
    for log in logs.glob("tx*"):
        latencies += [int(line.split()[2]) / 1e6 for line in log.read_text().splitlines()]
        log.unlink()
    own = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return latencies, own


async def run(args: argparse.Namespace, dsn: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    work = Path(tempfile.mkdtemp(prefix="dexnode-ceiling-"))
    try:
        top = await conn.fetchval("SELECT max(number) FROM blocks")
        if top is None:
            raise SystemExit("no data: fill the database with bench/api.py --data-dir DIR first")
        await conn.execute(f"DROP TABLE IF EXISTS {ARGS_TABLE}")
        await conn.execute(
            f"CREATE UNLOGGED TABLE {ARGS_TABLE} (q int, i int, "
            + ", ".join(f"a{n} text" for n in range(1, 9))
            + ", PRIMARY KEY (q, i))"
        )
        pid = await postmaster_pid(conn)
        print(
            f"pgbench, {args.clients} prepared connections, closed loop, {args.seconds} s per query;"
            f" shared_buffers {await conn.fetchval('SHOW shared_buffers')};"
            f" load average {os.getloadavg()[0]:.1f} at the start"
        )
        header = ("query", "p50 ms", "p99 ms", "pages/s", "pg", "pgbench")
        print("{:<52} {:>7} {:>7} {:>7} {:>6} {:>8}".format(*header))
        for q, case in enumerate(cases(top)):
            if case.sql is None or (args.only and args.only not in case.label):
                continue
            script = work / f"q{q}.sql"
            sql = await load_args(conn, q, case) if case.sql_args else case.sql
            script.write_text(f"\\set i random(0, {VALUES - 1})\n{sql};\n")
            await conn.execute(f"ANALYZE {ARGS_TABLE}")
            pgbench(dsn, script, args.clients, 2, work)  # warm up: caches, plans
            cpu = postmaster_cpu(pid)
            started = time.perf_counter()
            latencies, own = pgbench(dsn, script, args.clients, args.seconds, work)
            wall = time.perf_counter() - started
            await asyncio.sleep(0.2)  # the backends are reaped
            pg = postmaster_cpu(pid) - cpu
            n = max(len(latencies), 1)
            print(
                f"{case.label:<52} {pct(latencies, 0.5):7.2f} {pct(latencies, 0.99):7.2f}"
                f" {len(latencies) / wall:7.0f} {1000 * pg / n:6.2f} {1000 * own / n:8.2f}"
            )
        print(
            "pg, pgbench: CPU ms per page of the Postgres server's processes and of pgbench;"
            f" load average {os.getloadavg()[0]:.1f} at the end"
        )
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {ARGS_TABLE}")
        await conn.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="the embedded Postgres bench/api.py --data-dir filled")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--only", help="run only the queries whose label contains this text")
    args = parser.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found: it comes with PostgreSQL (Debian: the postgresql package)")
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(run(args, url))
        return
    if args.data_dir is None or not (args.data_dir / "postgres").is_dir():
        raise SystemExit("--data-dir DIR: a directory bench/api.py --data-dir DIR filled, or DATABASE_URL")
    with embedded_server(args.data_dir) as server:
        asyncio.run(run(args, asyncio.run(ensure_database(server, "bench_api"))))


if __name__ == "__main__":
    main()
