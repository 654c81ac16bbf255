"""What each secondary index costs Postgres when a backfill keeps the indexes, on the bench's blocks.

``dexnode backfill`` fills a source database once from the devnet of ``bench/backfill.py`` (same
seed, blocks and rate; the anvil state cache makes it quick). Then, for every block-keyed table,
its rows are inserted again, 50 blocks a transaction as the backfill's chunks, into an empty copy of
the table (schema ``bench_ix``) carrying its primary key and:

- nothing else (the base every other line is measured against),
- each secondary index of ``sinks.schema`` alone,
- all of them (the table as a backfill with kept indexes maintains it),
- each candidate definition of ``CANDIDATES`` alone (e.g. the B-tree an index replaced), to compare.

For each it prints the backend's CPU seconds (``/proc/<pid>/stat`` of the connection's backend, so the
server must run on this machine), the WAL written (``pg_current_wal_insert_lsn`` before and after)
and the index's size, each as the extra over the primary key alone: the part of the kept-index
backfill that index is. Variants are run in alternated rounds; the median is printed with the spread.

    .venv/bin/python bench/index_cost.py [--rounds 3] [--tables logs,transactions]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

# the repository before bench/ on the path: bench/api.py would shadow the api package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from bench.backfill import REPO, dexnode_command, run_measured, server
from core.database import ensure_database
from devnet import Devnet
from devnet.cache import DevnetCache
from indexer.backfill.plan import BlockRange
from sinks import schema

SCRATCH = "bench_ix"
CHUNK_BLOCKS = 50
# Definitions to compare with the schema's (name → (table, DDL with {table} for the scratch table)):
# the B-tree the hash index replaced in migration 0010, and B-tree deduplication turned off on the two
# costliest (many equal keys). Tried, not kept (docs/backfill.md): no CPU gain, 2.7-4.4x the size,
# 1.3-1.4x the WAL.
CANDIDATES: dict[str, tuple[str, str]] = {
    "ix_logs_transaction as a B-tree (before 0010)": (
        "logs",
        "CREATE INDEX ix_candidate ON {table} (transaction_hash)",
    ),
    "ix_logs_address dedup off": (
        "logs",
        "CREATE INDEX ix_c ON {table} (address, block_number) WITH (deduplicate_items = off)",
    ),
    "ix_logs_topic0 dedup off": (
        "logs",
        "CREATE INDEX ix_c ON {table} (topic0, block_number) WITH (deduplicate_items = off)",
    ),
}


@dataclass
class Cost:
    cpu: list[float] = field(default_factory=list)
    wal: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)


def _ddl(element: sa.schema.ExecutableDDLElement) -> str:
    return str(element.compile(dialect=postgresql.dialect()))


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def variants(table: sa.Table) -> dict[str, list[str]]:
    """Variant name → the index DDL it creates on the scratch copy of ``table`` (primary key aside)."""
    copy = table.to_metadata(sa.MetaData(), schema=SCRATCH)
    secondary = sorted((ix for ix in copy.indexes if not ix.unique), key=lambda ix: str(ix.name))
    out: dict[str, list[str]] = {"primary key only": []}
    for ix in secondary:
        out[f"+ {ix.name}"] = [_ddl(CreateIndex(ix))]
    out["+ all secondary indexes"] = [_ddl(CreateIndex(ix)) for ix in secondary]
    for name, (target, ddl) in CANDIDATES.items():
        if target == table.name:
            out[f"+ {name}"] = [ddl.format(table=f"{SCRATCH}.{table.name}")]
    return out


async def insert_once(
    conn: asyncpg.Connection, table: sa.Table, indexes: list[str], last: int
) -> tuple[float, int, int]:
    """Fill an empty scratch copy of ``table`` chunk by chunk; → (backend CPU-s, WAL bytes, index bytes)."""
    copy = table.to_metadata(sa.MetaData(), schema=SCRATCH)
    await conn.execute(f'DROP TABLE IF EXISTS {SCRATCH}."{table.name}"')
    await conn.execute(_ddl(CreateTable(copy)))
    for ddl in indexes:
        await conn.execute(ddl)
    column = next(c for c in ("block_number", "number") if c in table.c)
    insert = (
        f'INSERT INTO {SCRATCH}."{table.name}" SELECT * FROM public."{table.name}"'
        f' WHERE "{column}" BETWEEN $1 AND $2'
    )
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    wal0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    cpu0 = _backend_cpu(pid)
    for first in range(0, last + 1, CHUNK_BLOCKS):
        await conn.execute(insert, first, first + CHUNK_BLOCKS - 1)
    cpu = _backend_cpu(pid) - cpu0
    wal = await conn.fetchval("SELECT pg_current_wal_insert_lsn()") - wal0  # asyncpg reads pg_lsn as int
    size = await conn.fetchval(
        "SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_index"
        " WHERE indrelid = $1::regclass AND NOT indisprimary",
        f'{SCRATCH}."{table.name}"',
    )
    await conn.execute(f'DROP TABLE {SCRATCH}."{table.name}"')
    return cpu, int(wal), int(size)


async def measure(uri: str, devnet: Devnet, args: argparse.Namespace) -> None:
    dsn = await ensure_database(uri, f"dexnode_bench_ix_{os.getpid()}_{secrets.token_hex(3)}")
    head = devnet.head()[0]
    argv, env = dexnode_command(dsn, devnet, BlockRange(0, head), 8, CHUNK_BLOCKS, True)
    await asyncio.to_thread(run_measured, argv, env, None)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCRATCH}")
        await conn.execute("SET synchronous_commit = off")  # as the writer's sessions
        tables = [t for t in schema.BLOCK_TABLES if not args.tables or t.name in args.tables]
        for table in tables:
            rows = await conn.fetchval(f'SELECT count(*) FROM public."{table.name}"')
            await conn.execute(f'SELECT * FROM public."{table.name}"')  # read into the cache once
            costs = {name: Cost() for name in variants(table)}
            for rnd in range(args.rounds):
                order = list(variants(table).items())
                for name, ddl in order if rnd % 2 == 0 else order[::-1]:
                    cpu, wal, size = await insert_once(conn, table, ddl, head)
                    costs[name].cpu.append(cpu)
                    costs[name].wal.append(wal)
                    costs[name].size.append(size)
            base = costs["primary key only"]
            print(
                f"\n{table.name}: {rows:,} rows, {args.rounds} rounds alternated,"
                f" load {os.getloadavg()[0]:.1f}"
            )
            print(f"  {'variant':<52} {'CPU-s (min-max)':>18} {'+CPU-s':>7} {'+WAL MB':>8} {'index MB':>9}")
            for name, c in costs.items():
                extra_cpu = statistics.median(c.cpu) - statistics.median(base.cpu)
                extra_wal = (statistics.median(c.wal) - statistics.median(base.wal)) / 1e6
                spread = f"{statistics.median(c.cpu):.2f} ({min(c.cpu):.2f}-{max(c.cpu):.2f})"
                print(f"  {name:<52} {spread:>18} {extra_cpu:>7.2f} {extra_wal:>8.1f}"
                      f" {statistics.median(c.size) / 1e6:>9.1f}", flush=True)  # fmt: skip
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--blocks", type=int, default=2000, help="blocks of devnet activity (as bench/backfill.py)"
    )
    parser.add_argument("--rate", type=float, default=13.0, help="transactions per non-empty block")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternated repetitions of every variant")
    parser.add_argument(
        "--tables", type=lambda s: s.split(","), default=[], help="block tables to measure (all)"
    )
    args = parser.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"dexnode-bench-ix-anvil-{os.getpid()}"
    logs.mkdir()
    cache = DevnetCache(REPO / ".dexnode-test-cache", logs, args.seed, args.blocks, args.rate, True)
    devnet = cache.load(headroom=0)
    try:
        with server() as (uri, _where, _postmaster):
            asyncio.run(measure(uri, devnet, args))
    finally:
        devnet.stop()
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
