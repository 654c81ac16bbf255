"""The settled id watermark of the CEX tables: ids below which no row can still appear.

Postgres hands out identity ids when a row is inserted, not when its transaction commits, so a batch
that took ids 100-200 can commit after one that took 201-300: the highest visible id says nothing
about rows still in flight. A watermark is settled when every transaction that could hold an id at or
below it has ended:

1. read each table's sequence position (``pg_sequence_last_value``: the last id handed out, committed
   or not);
2. then list the transactions open in this database (every transaction, even one that has written
   nothing yet, holds a lock on its virtual transaction id from its start);
3. wait until all of those have ended.

A transaction that took an id at or below the position read in 1 had started before 1, so it is open
in 2 or already over: after 3, every row with such an id is committed (or rolled back, never to
appear), and a snapshot taken then sees all of them. The archiver reads CEX rows only up to a settled
watermark, so it knows exactly which rows a bucket holds: those up to the watermark; a row above it is
archived later, as a late part if its minute is archived by then.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from records import kinds
from sinks import schema

log = logging.getLogger("dexnode.archive")

# the CEX tables with an identity (candles are keyed by symbol, interval and start instead)
ID_TABLES: tuple[str, ...] = tuple(
    sorted({k.table for k in kinds.CEX if "id" in schema.metadata.tables[k.table].c})
)

_OPEN = (
    "SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'virtualxid' AND l.pid <> pg_backend_pid() AND a.datname = current_database()"
)
_STILL_OPEN = (
    "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'virtualxid' AND l.virtualxid = ANY($1::text[])"
)


async def settle(pool: asyncpg.Pool, timeout: float, poll: float = 0.02) -> dict[str, int] | None:
    """A settled watermark per table (0: no id handed out yet), or None when a transaction open at the
    start was still open after ``timeout`` seconds (logged; the caller keeps its previous watermark)."""
    async with pool.acquire() as conn:
        ids: dict[str, int] = {}
        for table in ID_TABLES:
            value = await conn.fetchval(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)", f'"{table}"'
            )
            ids[table] = int(value or 0)
        open_before = [r["virtualxid"] for r in await conn.fetch(_OPEN)]
        deadline = time.monotonic() + timeout
        while open_before:
            pids = [r["pid"] for r in await conn.fetch(_STILL_OPEN, open_before)]
            if not pids:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "archive: transactions of pids %s still open after %.0fs; CEX rows wait", pids, timeout
                )
                return None
            await asyncio.sleep(poll)
    return ids
