"""CEX records into Postgres, derived from the registry (``records.kinds.CEX``) and ``sinks.schema``.

Each CEX kind names its table; a record's fields that are columns of that table are written as they are
(``Decimal`` into ``NUMERIC`` exactly). The book's two kinds share ``cex_book_events``, told apart by its
``kind`` column (``delta`` | ``snapshot``; ``resync`` rows with their ``reason``), a snapshot's levels as JSON
``[[price, size], ...]`` of decimal strings. Rows go in with COPY into a per-connection staging table, then
``INSERT ... ON CONFLICT DO NOTHING`` on the table's unique natural key where it has one (trades: exchange,
symbol, trade_id), so a trade delivered again after a reconnect or by a second connection is stored once.
Candles are upserted by (exchange, symbol, interval, start): the open candle is rewritten until it closes.

Storing every delta plus a snapshot now and then makes the book at any moment rebuildable
(``rebuild_book``, ``sinks.cex_books``, which the API shares): the last snapshot at or before the moment,
then the deltas after it, in order; an L3 book (``cex.l3``) by order id, its snapshot followed by one delta
per resting order.

Each batch announces what it committed with ``pg_notify('dexnode_cex', ...)`` inside its transaction (so
it is delivered at COMMIT): per table the range of ids it wrote, and the candles' keys (at most
``NOTIFY_CANDLES``, the newest), a few hundred bytes, well under Postgres's 8000-byte payload limit. An API
process (``api.stream.listener``) reads those rows back and fans them out to its websocket clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from cex.sync import Resync
from core.database import asyncpg_dsn
from records.cex import BookDelta, BookSnapshot, Candle
from records.codec import Record
from records.kinds import CEX, Kind
from sinks import cex_read, schema
from sinks.cex_read import NOTIFY_CHANNEL, StoredBook

__all__ = ["NOTIFY_CANDLES", "CexStore", "StoredBook"]
NOTIFY_CANDLES = 100  # candle keys per notification (a batch rarely has more than two per symbol)


def _levels_json(levels: Sequence[tuple[Decimal, Decimal]]) -> str:
    return orjson.dumps([[format(p, "f"), format(s, "f")] for p, s in levels]).decode()


@dataclass(frozen=True)
class _Writer:
    table: str
    columns: tuple[str, ...]
    to_row: Callable[[Any], tuple[Any, ...]]
    insert_sql: str | None  # None: COPY straight in (no natural key to conflict on; keeps arrival order)


# the book's kinds (and resyncs) share one table: one column list, so a batch's book events go in with one
# COPY in arrival order (the ids then order them: a snapshot taken between two deltas stays between them)
_BOOK_COLUMNS = (
    "exchange", "symbol", "kind", "side", "price", "size", "order_id", "sequence", "bids", "asks",
    "event_timestamp", "atom_timestamp", "engine_sequence", "engine_timestamp", "reason",
)  # fmt: skip


def _delta_row(r: BookDelta) -> tuple[Any, ...]:
    return (r.exchange, r.symbol, "delta", r.side, r.price, r.size, r.order_id, r.sequence, None, None,
            r.event_timestamp, r.atom_timestamp, r.engine_sequence, r.engine_timestamp, None)  # fmt: skip


def _snapshot_row(r: BookSnapshot) -> tuple[Any, ...]:
    return (r.exchange, r.symbol, "snapshot", None, None, None, None, r.sequence, _levels_json(r.bids),
            _levels_json(r.asks), r.event_timestamp, r.atom_timestamp, r.engine_sequence,
            r.engine_timestamp, None)  # fmt: skip


def _resync_row(r: Resync) -> tuple[Any, ...]:
    # a resync is stored when it is written: its moment orders it against the snapshot that follows; its
    # reason goes with it, so a reader of the row (the NOTIFY listener) tells clients what in-process did
    return (r.exchange, r.symbol, "resync", None, None, None, None, r.sequence, None, None, None,
            time.time_ns() // 1000, None, None, r.reason)  # fmt: skip


def _writer(kind: Kind[Any]) -> _Writer:
    table = schema.metadata.tables[kind.table]
    if kind.table == "cex_book_events":
        return _Writer(
            kind.table, _BOOK_COLUMNS, _delta_row if kind.record is BookDelta else _snapshot_row, None
        )
    fields = set(kind.record.__dataclass_fields__)
    names = tuple(c.name for c in table.columns if c.name in fields)

    def to_row(record: Any) -> tuple[Any, ...]:
        return tuple(getattr(record, c) for c in names)

    cols = ", ".join(f'"{c}"' for c in names)
    stage = f"_cex_stage_{table.name}"
    unique = [tuple(c.name for c in i.columns) for i in table.indexes if i.unique]
    pk = tuple(c.name for c in table.primary_key.columns)
    if kind.record is Candle:
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in names if c not in pk)
        conflict = f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {updates} RETURNING {', '.join(pk)}"
    elif unique:
        conflict = f"ON CONFLICT ({', '.join(unique[0])}) DO NOTHING RETURNING id"
    else:
        return _Writer(table.name, names, to_row, None)
    insert_sql = (
        f"WITH staged AS (DELETE FROM {stage} RETURNING {cols}) "
        f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM staged {conflict}'
    )
    return _Writer(table.name, names, to_row, insert_sql)


_WRITERS: dict[type[Any], _Writer] = {k.record: _writer(k) for k in CEX}
_WRITERS[Resync] = _Writer("cex_book_events", _BOOK_COLUMNS, _resync_row, None)


async def _create_staging(conn: asyncpg.Connection) -> None:
    for table in {w.table for w in _WRITERS.values()}:
        await conn.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS _cex_stage_{table} "
            f'(LIKE "{table}" INCLUDING DEFAULTS INCLUDING IDENTITY)'
        )


class CexStore:
    """Writes CEX records in batches (one transaction each); reads a stored book back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 2) -> CexStore:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn), min_size=1, max_size=max_size, init=_create_staging
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def write(self, records: Iterable[Record | Resync]) -> None:
        """Store records (any CEX kinds, in any mix) and resyncs (a ``resync`` book event: the book was
        invalid from there until the next snapshot) in one transaction (a ``cex.pipeline.CexSink``)."""
        by_table: dict[str, tuple[_Writer, list[tuple[Any, ...]]]] = {}
        candles: dict[tuple[str, str, str, int], Candle] = {}
        for record in records:
            if isinstance(record, Candle):  # an upsert takes one row per key: the candle's latest state
                candles[(record.exchange, record.symbol, record.interval, record.start)] = record
                continue
            writer = _WRITERS.get(type(record))
            if writer is None:
                raise TypeError(f"not a CEX record kind (records.kinds.CEX): {type(record).__name__}")
            by_table.setdefault(writer.table, (writer, []))[1].append(writer.to_row(record))
        if candles:
            writer = _WRITERS[Candle]
            by_table[writer.table] = (writer, [writer.to_row(c) for c in candles.values()])
        async with self.pool.acquire() as conn, conn.transaction():
            ranges: dict[str, list[int]] = {}
            keys: list[list[Any]] = []
            for writer, rows in by_table.values():
                if writer.insert_sql is None:
                    # ids come from the table's identity: the range between a value taken before the
                    # COPY and the last one after it holds every row written (and maybe another
                    # writer's, which a reader tells apart by id)
                    seq = f"pg_get_serial_sequence('\"{writer.table}\"', 'id')"
                    before = await conn.fetchval(f"SELECT nextval({seq})")
                    await conn.copy_records_to_table(writer.table, records=rows, columns=writer.columns)
                    ranges[str(writer.table)] = [before + 1, await conn.fetchval(f"SELECT currval({seq})")]
                    continue
                await conn.copy_records_to_table(
                    f"_cex_stage_{writer.table}", records=rows, columns=writer.columns
                )
                written = await conn.fetch(writer.insert_sql)
                if writer.table == "candles":
                    keys = [list(r.values()) for r in written][-NOTIFY_CANDLES:]
                elif written:
                    ids = [r["id"] for r in written]
                    ranges[str(writer.table)] = [min(ids), max(ids)]
            if ranges or keys:
                payload = orjson.dumps({"v": 1, "ranges": ranges, "candles": keys}).decode()
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)

    async def rebuild_book(self, exchange: str, symbol: str, at: int | None = None) -> StoredBook:
        """The stored book at ``atom_timestamp <= at`` (µs; None: the latest), from the last snapshot and
        the deltas stored after it; not valid when a resync came after them (``sinks.cex_read``)."""
        return await cex_read.rebuild_book(self.pool, exchange, symbol, at)
