"""Complete buckets read from Postgres: confirmed chain minutes and closed CEX minutes.

Chain: a block is confirmed when it is ``confirmations`` below the stored head (the rule of Kafka's
``confirmed.*`` and the websocket's ``finalized``), so nothing archived is ever reverted. A minute of
chain data is complete once a confirmed block has a timestamp past the minute's end (block
timestamps never go back on a canonical chain) and every block from the bucket's first to its last
is stored (a backfill gap waits). A bucket holds those blocks with every record derived from them
(``sinks.postgres_read.StoredChain.batch_between``: the pools and tokens they name come along, as on
``confirmed.*``).

CEX: a minute of one exchange is complete once the clock is ``grace`` seconds past its end (the store
writes in batches; the grace covers a batch in flight). Records are bucketed by ``atom_timestamp``
(when dexnode received them), candles by their last millisecond (``end``), so a candle is archived
once, closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from records import Block, BookDelta, BookSnapshot, Candle, Record, from_dict, kinds
from records.kinds import Kind
from sinks import schema
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.archive")

US_PER_MINUTE = 60_000_000
MS_PER_MINUTE = 60_000


@dataclass(frozen=True)
class Bucket:
    """One complete minute of a stream, read from Postgres: records per class, in stored order."""

    minute: int
    records: dict[type[Record], list[Record]]
    first_block: int | None = None
    last_block: int | None = None


# -- chain -------------------------------------------------------------------------------------------

# what a chain bucket holds: every kind of a batch (blocks, the records in them, the pools and
# tokens they name); reorgs stay in Postgres (the archive is the canonical chain only)
CHAIN_KINDS: tuple[Kind[Any], ...] = kinds.BATCH_KINDS


class ChainSource:
    def __init__(self, pool: asyncpg.Pool, confirmations: int) -> None:
        self.pool = pool
        self.confirmations = confirmations
        self.chain = StoredChain(pool)

    async def watermark(self) -> int | None:
        """The highest confirmed block number (None: nothing stored yet)."""
        head = await self.pool.fetchval("SELECT max(number) FROM blocks")
        return None if head is None else int(head) - self.confirmations

    async def next_bucket(self, after_block: int | None) -> Bucket | None:
        """The complete minute starting at the block after ``after_block`` (the lowest stored block when
        None), or None when that minute is not complete yet."""
        watermark = await self.watermark()
        if watermark is None:
            return None
        if after_block is None:
            first = await self.pool.fetchrow("SELECT number, timestamp FROM blocks ORDER BY number LIMIT 1")
        else:
            first = await self.pool.fetchrow(
                "SELECT number, timestamp FROM blocks WHERE number = $1", after_block + 1
            )
        if first is None or first["number"] > watermark:
            return None
        minute = int(first["timestamp"]) // 60
        # the first confirmed block past the minute's end: its presence makes the minute complete
        past = await self.pool.fetchval(
            "SELECT min(number) FROM blocks WHERE number > $1 AND number <= $2 AND timestamp >= $3",
            first["number"],
            watermark,
            (minute + 1) * 60,
        )
        if past is None:
            return None
        start, last = int(first["number"]), int(past) - 1
        run = await self.chain.contiguous_up_to(start, last)
        if run is None or run.number != last:
            log.info("archive: blocks %d..%d not all stored yet; waiting", start, last)
            return None
        batch = await self.chain.batch_between(start, last)
        records: dict[type[Record], list[Record]] = {Block: list(batch.blocks)}
        for kind in CHAIN_KINDS:
            if kind.record is not Block:
                records[kind.record] = list(batch.of(kind.record))
        return Bucket(minute, records, start, last)


# -- CEX ---------------------------------------------------------------------------------------------

BOOK_KIND = {BookDelta: "delta", BookSnapshot: "snapshot"}


@dataclass(frozen=True)
class _CexQuery:
    kind: Kind[Any]
    time_column: str
    per_minute: int  # the time column's units per minute
    select: str  # rows of one exchange and time range, in stored order
    json_columns: tuple[str, ...]


def _cex_query(kind: Kind[Any]) -> _CexQuery:
    table = schema.metadata.tables[kind.table]
    fields = set(kind.record.__dataclass_fields__)
    columns = [c for c in table.columns if c.name in fields]
    select = ", ".join(
        f'"{c.name}"::text AS "{c.name}"' if isinstance(c.type, sa.Numeric) else f'"{c.name}"'
        for c in columns
    )
    # candles by their last millisecond (archived once, closed); everything else by arrival
    time_column, per_minute = (
        ("end", MS_PER_MINUTE) if kind.record is Candle else ("atom_timestamp", US_PER_MINUTE)
    )
    where = f'exchange = $1 AND "{time_column}" >= $2 AND "{time_column}" < $3'
    if kind.record in BOOK_KIND:
        where += f" AND kind = '{BOOK_KIND[kind.record]}'"
    # arrival order (the identity) where the table has one: a book's events must replay in order
    order = "id" if "id" in table.c else ", ".join(f'"{c}"' for c in ("symbol", "interval", "start"))
    sql = f'SELECT {select} FROM "{kind.table}" WHERE {where} ORDER BY "{time_column}", {order}'
    json_columns = tuple(c.name for c in columns if isinstance(c.type, JSONB))
    return _CexQuery(kind, time_column, per_minute, sql, json_columns)


CEX_QUERIES: tuple[_CexQuery, ...] = tuple(_cex_query(k) for k in kinds.CEX)
_CEX_TABLES = sorted({k.table for k in kinds.CEX})


def _cex_record(query: _CexQuery, row: asyncpg.Record) -> Record:
    data = dict(row.items())
    for name in query.json_columns:
        if isinstance(data.get(name), str):
            data[name] = orjson.loads(data[name])
    cls = query.kind.record
    return from_dict({"type": cls.TYPE, "version": cls.VERSION, "data": data})


class CexSource:
    def __init__(self, pool: asyncpg.Pool, grace_seconds: float) -> None:
        self.pool = pool
        self.grace_seconds = grace_seconds

    async def exchanges(self) -> list[str]:
        """Every exchange with stored rows (a skip scan over each table's leading ``exchange``)."""
        found: set[str] = set()
        for table in _CEX_TABLES:
            rows = await self.pool.fetch(
                f'WITH RECURSIVE e AS (SELECT min(exchange) AS x FROM "{table}" UNION ALL'
                f' SELECT (SELECT min(exchange) FROM "{table}" WHERE exchange > e.x) FROM e'
                " WHERE e.x IS NOT NULL)"
                " SELECT x FROM e WHERE x IS NOT NULL"
            )
            found.update(r["x"] for r in rows)
        return sorted(found)

    async def next_minute(self, exchange: str, after_minute: int | None) -> int | None:
        """The first minute after ``after_minute`` with rows of ``exchange`` (None: none stored)."""
        first: int | None = None
        for q in CEX_QUERIES:
            start = 0 if after_minute is None else (after_minute + 1) * q.per_minute
            value = await self.pool.fetchval(
                f'SELECT min("{q.time_column}") FROM "{q.kind.table}"'
                f' WHERE exchange = $1 AND "{q.time_column}" >= $2',
                exchange,
                start,
            )
            if value is not None:
                minute = int(value) // q.per_minute
                first = minute if first is None else min(first, minute)
        return first

    def closed(self, minute: int, now: float) -> bool:
        return (minute + 1) * 60 + self.grace_seconds <= now

    async def bucket(self, exchange: str, minute: int) -> Bucket:
        records: dict[type[Record], list[Record]] = {}
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            for q in CEX_QUERIES:
                rows = await conn.fetch(
                    q.select, exchange, minute * q.per_minute, (minute + 1) * q.per_minute
                )
                records[q.kind.record] = [_cex_record(q, r) for r in rows]
        return Bucket(minute, records)
