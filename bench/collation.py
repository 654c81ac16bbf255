"""What the database collation costs dexnode's keys: ``C`` against ``C.UTF-8``, in one run.

Every key dexnode stores is lower-case hex (hashes, addresses), which both collations order the
same way (by code point); ``C`` compares with ``memcmp``, ``C.UTF-8`` through ``strcoll``. Two fresh
databases, one per collation, get the same rows (a 32-byte hash as primary key and a 20-byte address
with a secondary index, as ``transactions`` and ``logs`` have) by COPY, then a sort and a DISTINCT
over them; the collations alternate for ``--rounds`` rounds and the best of each is kept.

Server: ``DATABASE_URL`` if set (scratch databases created and dropped there), else an embedded
pgserver in a temporary directory.

    .venv/bin/python bench/collation.py [--rows 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from core.database import asyncpg_dsn, embedded_server

COLLATIONS = ("C.UTF-8", "C")


def _on(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def one_round(server: str, collation: str, rows: list[tuple[str, str, int]]) -> tuple[float, float]:
    """(COPY into the indexed table, sort + DISTINCT) seconds in a fresh database of ``collation``."""
    name = f"dexnode_bench_collation_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        # name is ours; the collation is one of COLLATIONS
        await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LC_COLLATE '{collation}'")
        db = await asyncpg.connect(asyncpg_dsn(_on(server, name)))
        try:
            await db.execute("CREATE TABLE keys (hash text PRIMARY KEY, address text, n int)")
            await db.execute("CREATE INDEX ON keys (address)")
            t0 = time.perf_counter()
            await db.copy_records_to_table("keys", records=rows)
            t1 = time.perf_counter()
            await db.fetch("SELECT hash FROM keys ORDER BY hash DESC LIMIT 5 OFFSET 1000")
            await db.fetchval("SELECT count(*) FROM (SELECT DISTINCT address FROM keys) s")
            t2 = time.perf_counter()
        finally:
            await db.close()
        await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()
    return t1 - t0, t2 - t1


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = [("0x" + os.urandom(32).hex(), "0x" + os.urandom(20).hex(), i) for i in range(args.rows)]
    with ExitStack() as stack:
        server = os.environ.get("DATABASE_URL")
        if not server:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dexnode-bench-")))
            server = stack.enter_context(embedded_server(data_dir))
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for collation in COLLATIONS:
                copy_s, query_s = await one_round(server, collation, rows)
                old = best.get(collation, (float("inf"), float("inf")))
                best[collation] = (min(old[0], copy_s), min(old[1], query_s))
    print(f"{args.rows:,} rows (32-byte hex primary key, 20-byte hex indexed), best of {args.rounds}")
    for collation in COLLATIONS:
        copy_s, query_s = best[collation]
        print(f"{collation:8}  COPY into the indexed table {copy_s:6.2f}s   sort + DISTINCT {query_s:6.2f}s")
    (c_copy, c_query), (u_copy, u_query) = best["C"], best["C.UTF-8"]
    print(
        f"C against C.UTF-8: COPY {c_copy / u_copy:.2f}x the time, sort + DISTINCT {c_query / u_query:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
