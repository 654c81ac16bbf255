"""Complete buckets read from Postgres: confirmed chain minutes and closed CEX minutes.

Chain: a block is confirmed when it is ``confirmations`` below the stored head (the rule of Kafka's
``confirmed.*`` and the websocket's ``finalized``), so nothing archived is ever reverted. A minute of
chain data is complete once a confirmed block has a timestamp past the minute's end (block
timestamps never go back on a canonical chain) and every block from the bucket's first to its last
is stored (a backfill gap waits). A bucket holds those blocks with every record derived from them
(``sinks.postgres_read.StoredChain.batch_between``: the pools and tokens they name come along, as on
``confirmed.*``).

CEX: a minute of one exchange is archived once the clock is ``grace`` seconds past its end, with the
rows stored by then up to a settled id watermark (``archive.watermark``); rows of the minute stored
later (above that watermark) are archived as the bucket's late parts (``late``; ``archive.archiver``).
Records are bucketed by ``atom_timestamp`` (when dexnode received them), candles by their last
millisecond (``end``), so a candle is archived once, closed; book resyncs (``book_resync``) by where the
live stream published them (``archive.resyncs``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from archive.resyncs import TABLE as BOOK_TABLE
from archive.resyncs import BookResync, late_resyncs, resyncs_between
from records import Block, BookDelta, BookSnapshot, Candle, Pool, Record, Token, from_dict, kinds
from records.batch import Batch
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

    async def next_buckets(self, after_block: int | None, max_blocks: int = 1_000) -> list[Bucket]:
        """The complete minutes from the block after ``after_block`` (the lowest stored block when None)
        on, at most about ``max_blocks`` blocks of them, read in one snapshot; [] when the first minute
        is not complete yet (or its first block is not stored: a gap waits)."""
        watermark = await self.watermark()
        if watermark is None:
            return []
        start = (
            await self.pool.fetchval("SELECT min(number) FROM blocks")
            if after_block is None
            else after_block + 1
        )
        if start is None:
            return []
        limit = max_blocks
        while True:
            rows = await self.pool.fetch(
                "SELECT number, timestamp FROM blocks WHERE number >= $1 AND number <= $2"
                " ORDER BY number LIMIT $3",
                start,
                watermark,
                limit + 1,
            )
            run = [
                (int(r["number"]), int(r["timestamp"]) // 60)
                for i, r in enumerate(rows)
                if r["number"] == start + i
            ]
            if len(run) < len(rows):
                log.info("archive: block %d not stored yet; archiving waits there", start + len(run))
            if run and len(rows) > limit and len(run) == len(rows) and run[0][1] == run[-1][1]:
                limit *= 4  # one minute holds more blocks than asked for: read further
                continue
            break
        # a bucket is the run of blocks from one whose minute is later than the bucket before's up to
        # the next such block (timestamps only grow on a canonical chain; a devnet whose clock was set
        # back stays in order by number this way), complete once a confirmed block of a later minute
        # follows it
        bucket_of: list[tuple[int, int]] = []  # (block number, the minute of its bucket)
        for number, minute in run:
            if bucket_of and minute <= bucket_of[-1][1]:
                minute = bucket_of[-1][1]
            bucket_of.append((number, minute))
        complete = [(n, m) for n, m in bucket_of if m < bucket_of[-1][1]]
        if not complete:
            return []
        batch = await self.chain.batch_between(start, complete[-1][0])
        return split_minutes(batch, dict(complete))


def _named(records: dict[type[Record], list[Record]], target: str) -> set[str]:
    """The keys of kind ``target`` that these records name (``Kind.refers``)."""
    return {
        getattr(r, name)
        for kind in CHAIN_KINDS
        if kind.block is not None
        for name, refers in kind.refers.items()
        if refers == target
        for r in records.get(kind.record, ())
        if getattr(r, name) is not None
    }


def split_minutes(batch: Batch, minute_of: dict[int, int]) -> list[Bucket]:
    """A batch of whole minutes as one bucket per minute, each holding what ``batch_between`` of that
    minute's blocks holds: the records in its blocks, the pools created in them or named by their
    records, and the tokens those records (and the pools created) name (``Kind.refers``)."""
    per: dict[int, dict[type[Record], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for kind in CHAIN_KINDS:
        if kind.block is None:
            continue
        for r in batch.of(kind.record):
            number = getattr(r, kind.block)
            if number in minute_of:
                per[minute_of[number]][kind.record].append(r)
    pools = {p.address: p for p in batch.of(Pool)}
    tokens = {t.address: t for t in batch.of(Token)}
    for records in per.values():
        # tokens named by the minute's records and the pools created in it; pools created or named
        named_tokens = _named(records, kinds.TOKENS.name)
        named_pools = _named(records, kinds.POOLS.name) - {p.address for p in records.get(Pool, ())}  # type: ignore[attr-defined]
        records[Pool] = sorted(
            [*records.get(Pool, ()), *(pools[a] for a in named_pools if a in pools)],
            key=lambda p: p.address,  # type: ignore[attr-defined]
        )
        records[Token] = [tokens[a] for a in sorted(named_tokens) if a in tokens]
    buckets = []
    for minute in sorted(per):
        records = per[minute]
        blocks = records[Block]
        buckets.append(Bucket(minute, dict(records), blocks[0].number, blocks[-1].number))  # type: ignore[attr-defined]
    return buckets


# -- CEX ---------------------------------------------------------------------------------------------

BOOK_KIND = {BookDelta: "delta", BookSnapshot: "snapshot"}


@dataclass(frozen=True)
class _CexQuery:
    kind: Kind[Any]
    time_column: str
    per_minute: int  # the time column's units per minute
    select: str  # rows of one exchange and time range, in stored order
    json_columns: tuple[str, ...]
    # tables with an identity (all but candles): the rows of a time range up to an id ($4), and the
    # rows of ids ($2, $3] before a time ($4), each with its id
    select_upto: str | None = None
    select_late: str | None = None


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
    if "id" not in table.c:
        return _CexQuery(kind, time_column, per_minute, sql, json_columns)
    upto = f'SELECT {select} FROM "{kind.table}" WHERE {where} AND id <= $4 ORDER BY "{time_column}", id'
    late_where = f'exchange = $1 AND id > $2 AND id <= $3 AND "{time_column}" < $4'
    if kind.record in BOOK_KIND:
        late_where += f" AND kind = '{BOOK_KIND[kind.record]}'"
    late = f'SELECT id AS _id, {select} FROM "{kind.table}" WHERE {late_where} ORDER BY "{time_column}", id'
    return _CexQuery(kind, time_column, per_minute, sql, json_columns, upto, late)


CEX_QUERIES: tuple[_CexQuery, ...] = tuple(_cex_query(k) for k in kinds.CEX)
_CEX_TABLES = sorted({k.table for k in kinds.CEX})
# what a CEX bucket holds: every CEX kind, and the book resyncs (``archive.resyncs``)
CEX_CLASSES: tuple[type[Record], ...] = (*(q.kind.record for q in CEX_QUERIES), BookResync)


def _cex_record(query: _CexQuery, row: asyncpg.Record) -> Record:
    data = dict(row.items())
    data.pop("_id", None)
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
        found = await self.buckets(exchange, minute, minute + 1)
        return found[0] if found else Bucket(minute, {cls: [] for cls in CEX_CLASSES})

    async def buckets(
        self, exchange: str, first_minute: int, end_minute: int, upto: dict[str, int] | None = None
    ) -> list[Bucket]:
        """The minutes ``[first_minute, end_minute)`` of one exchange that hold rows, one snapshot; with
        ``upto``, only the rows with ids at or below it (per table) where the table has ids."""
        per: dict[int, dict[type[Record], list[Record]]] = defaultdict(dict)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            for q in CEX_QUERIES:
                start, end = first_minute * q.per_minute, end_minute * q.per_minute
                args: tuple[Any, ...] = (q.select, exchange, start, end)
                if upto is not None and q.select_upto is not None:
                    args = (q.select_upto, exchange, start, end, upto.get(q.kind.table, 0))
                for r in await conn.fetch(*args):
                    minute = int(r[q.time_column]) // q.per_minute
                    per[minute].setdefault(q.kind.record, []).append(_cex_record(q, r))
            limit = None if upto is None else upto.get(BOOK_TABLE, 0)
            start, end = first_minute * US_PER_MINUTE, end_minute * US_PER_MINUTE
            for resync in await resyncs_between(conn, exchange, start, end, limit):
                per[resync.atom_timestamp // US_PER_MINUTE].setdefault(BookResync, []).append(resync)
        return [Bucket(m, {cls: per[m].get(cls, []) for cls in CEX_CLASSES}) for m in sorted(per)]

    async def late(
        self, exchange: str, after: dict[str, int], upto: dict[str, int], end_minute: int
    ) -> dict[int, dict[type[Record], list[tuple[str, int, Record]]]]:
        """Rows of minutes before ``end_minute`` with ids in ``(after, upto]`` (per table), by minute and
        class, each as (table, id, record), in stored order; one snapshot. Candles (no ids) are not
        among them."""
        per: dict[int, dict[type[Record], list[tuple[str, int, Record]]]] = defaultdict(dict)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            for q in CEX_QUERIES:
                table = q.kind.table
                if q.select_late is None or upto.get(table, 0) <= after.get(table, 0):
                    continue
                end = end_minute * q.per_minute
                for r in await conn.fetch(q.select_late, exchange, after.get(table, 0), upto[table], end):
                    minute = int(r[q.time_column]) // q.per_minute
                    row = (table, int(r["_id"]), _cex_record(q, r))
                    per[minute].setdefault(q.kind.record, []).append(row)
            after_id, upto_id = after.get(BOOK_TABLE, 0), upto.get(BOOK_TABLE, 0)
            if upto_id > after_id:
                end = end_minute * US_PER_MINUTE
                for id_, resync in await late_resyncs(conn, exchange, after_id, upto_id, end):
                    rows = per[resync.atom_timestamp // US_PER_MINUTE].setdefault(BookResync, [])
                    rows.append((BOOK_TABLE, id_, resync))
        return dict(per)
