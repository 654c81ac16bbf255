"""Retention: keep ``DEXNODE_RETENTION_DAYS`` of data in Postgres, and only delete what is archived.

Rows go only when their bucket is in the archive's manifest and ended more than N days ago: chain
blocks (with every row inside them: transactions, logs, transfers, DEX trades and liquidity) up to the
last block of the contiguous archived run, CEX rows of each archived minute up to the stream's id
watermark (a row stored late goes once its late part is written). Pools, tokens and reorgs stay (small,
and what newer rows refer to). Progress is kept in ``cursors`` (``retention:<stream>``) so each run
deletes only what the previous one left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

from archive.layout import Stream, Target
from archive.source import BOOK_KIND, CEX_QUERIES
from sinks import schema

log = logging.getLogger("dexnode.archive")

CURSOR_PREFIX = "retention:"
# block tables (children first, blocks last): every row in them belongs to one block
_CHAIN_TABLES = [t.name for t in schema.BLOCK_TABLES if t.name != "blocks"] + ["blocks"]
_BLOCK_COLUMN = {t.name: ("number" if t.name == "blocks" else "block_number") for t in schema.BLOCK_TABLES}


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)  # rows per table


async def _cursor(conn: asyncpg.Connection, stream: Stream) -> int | None:
    value = await conn.fetchval(
        "SELECT block_number FROM cursors WHERE stream = $1", CURSOR_PREFIX + str(stream)
    )
    return None if value is None else int(value)


async def _set_cursor(conn: asyncpg.Connection, stream: Stream, value: int) -> None:
    await conn.execute(
        "INSERT INTO cursors (stream, block_number, block_hash, updated_at) VALUES ($1, $2, '', now())"
        " ON CONFLICT (stream) DO UPDATE SET block_number = excluded.block_number, updated_at = now()",
        CURSOR_PREFIX + str(stream),
        value,
    )


def _count(status: str) -> int:
    return int(status.split()[-1])


async def _trim_chain(
    conn: asyncpg.Connection, target: Target, stream: Stream, cutoff: float, result: RetentionResult
) -> None:
    done = await _cursor(conn, stream)
    first: int | None = None
    upto: int | None = None
    expected: int | None = None
    for entry in target.buckets(stream):
        if (entry.minute + 1) * 60 > cutoff or entry.first_block is None or entry.last_block is None:
            break
        if expected is not None and entry.first_block != expected:
            break  # only the contiguous archived run: never a block the archive skipped
        first = entry.first_block if first is None else first
        upto, expected = entry.last_block, entry.last_block + 1
    if first is None or upto is None or (done is not None and upto <= done):
        return
    async with conn.transaction():
        for table in _CHAIN_TABLES:
            column = _BLOCK_COLUMN[table]
            status = await conn.execute(
                f'DELETE FROM "{table}" WHERE "{column}" BETWEEN $1 AND $2', first, upto
            )
            result.deleted[table] = result.deleted.get(table, 0) + _count(status)
        await _set_cursor(conn, stream, upto)


async def _trim_exchange(
    conn: asyncpg.Connection, target: Target, stream: Stream, cutoff: float, result: RetentionResult
) -> None:
    """Rows of archived minutes that ended before ``cutoff``. Tables with ids: the rows at or below the
    stream's id watermark (``Target.stream_ids``), each in a bucket or a late part by then, so a row
    stored late is deleted only once its late part is written. Candles (no ids; an archive from before
    the watermark): the rows of minutes the manifest names, once."""
    entries = target.buckets(stream)
    if not entries:
        return
    ids = target.stream_ids(stream)
    done = await _cursor(conn, stream)
    last = min(entries[-1].minute, int(cutoff // 60) - 1)
    minutes = [
        e.minute for e in entries if (e.minute + 1) * 60 <= cutoff and (done is None or e.minute > done)
    ]
    if not minutes and (ids is None or last < 0):
        return
    async with conn.transaction():
        for q in CEX_QUERIES:
            book = f" AND kind = '{BOOK_KIND[q.kind.record]}'" if q.kind.record in BOOK_KIND else ""
            if ids is not None and q.select_late is not None:
                where = f'exchange = $1 AND "{q.time_column}" < $2 AND id <= $3' + book
                args: tuple[object, ...] = ((last + 1) * q.per_minute, ids.get(q.kind.table, 0))
            elif minutes:
                where = f'exchange = $1 AND ("{q.time_column}" / {q.per_minute}) = ANY($2::bigint[])' + book
                args = (minutes,)
            else:
                continue
            status = await conn.execute(f'DELETE FROM "{q.kind.table}" WHERE {where}', stream.name, *args)
            result.deleted[q.kind.table] = result.deleted.get(q.kind.table, 0) + _count(status)
        if minutes:
            await _set_cursor(conn, stream, max(minutes))


async def apply_retention(pool: asyncpg.Pool, target: Target, *, days: int, now: float) -> RetentionResult:
    """Delete from Postgres the archived rows of buckets that ended more than ``days`` days before ``now``."""
    cutoff = now - days * 86_400
    result = RetentionResult()
    target.forget_cache()
    async with pool.acquire() as conn:
        for stream in target.streams():
            if stream.venue == "chain":
                await _trim_chain(conn, target, stream, cutoff, result)
            else:
                await _trim_exchange(conn, target, stream, cutoff, result)
    if any(result.deleted.values()):
        log.info("retention (%d days): deleted %s", days, result.deleted)
    return result
