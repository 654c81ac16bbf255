"""Reading CEX records back from Postgres: the API's routes, its live listener and ``cex.store`` share it.

Tables and columns come from ``sinks.schema`` (never from input); values are asyncpg parameters. NUMERIC is
read as Postgres's text, which is the records' JSON decimal string exactly as stored (``"50000.10"`` keeps
its digits), so a row's JSON is the record's JSON ``data`` without a round trip through ``Decimal``.

- ``rows_json``/``records_between``: rows of one CEX table as JSON data or as records (book events: a
  ``BookDelta``, a ``BookSnapshot`` or a ``StoredResync``).
- ``page``: a keyset page by ``id`` (arrival order) for the REST lists, filtered by exchange, symbol and
  receipt time (``atom_timestamp``, µs), never past ``pin`` (the newest id when the first page was read).
- ``candles``: the stored 1-minute candles aggregated to 1m..1d in SQL.
- ``rebuild_book`` (from ``sinks.cex_books``): the book at a moment, L2 by level or L3 by order id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa

from records import Record, from_dict
from records.cex import BookDelta, BookSnapshot, Candle, FundingRate, OpenInterest, Ticker, Trade
from sinks import schema
from sinks.cex_books import StoredBook as StoredBook  # re-exported: the book readers' names
from sinks.cex_books import json_levels
from sinks.cex_books import rebuild_book as rebuild_book

NOTIFY_CHANNEL = "dexnode_cex"  # CexStore announces committed rows here (api.stream.listener listens)

# table -> the record class its rows are (cex_book_events: by its ``kind`` column)
TABLES: dict[str, type[Record]] = {
    "cex_trades": Trade,
    "cex_tickers": Ticker,
    "funding_rates": FundingRate,
    "open_interest": OpenInterest,
    "cex_book_events": BookDelta,
}


@dataclass(frozen=True, slots=True)
class StoredResync:
    """A stored ``resync`` book event: the book was invalid from here until the next snapshot, and why
    (``gap``, ``checksum``, ...; null on rows stored before migration 0008)."""

    exchange: str
    symbol: str
    reason: str | None
    sequence: int | None
    atom_timestamp: int | None = None


def _select(table: sa.Table, names: Sequence[str]) -> str:
    cols = []
    for name in names:
        column = table.c[name]
        cols.append(f'"{name}"::text AS "{name}"' if isinstance(column.type, sa.Numeric) else f'"{name}"')
    return ", ".join(cols)


def _fields(cls: type[Record]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_BOOK_COLUMNS = ("id", "kind", *_fields(BookDelta), "bids", "asks", "reason")
_SQL_COLUMNS = {
    name: _select(
        schema.metadata.tables[name], ("id", *_fields(cls)) if cls is not BookDelta else _BOOK_COLUMNS
    )
    for name, cls in TABLES.items()
}
_CANDLE_FIELDS = _fields(Candle)
_CANDLE_COLUMNS = _select(schema.candles, _CANDLE_FIELDS)


def row_json(table: str, row: asyncpg.Record) -> dict[str, Any]:
    """A row as its record's JSON ``data`` (book events: the delta's or the snapshot's fields)."""
    cls = TABLES[table]
    if cls is not BookDelta:
        return {name: row[name] for name in _fields(cls)}
    if row["kind"] == "snapshot":
        data = {n: row[n] for n in _fields(BookSnapshot) if n not in ("bids", "asks")}
        return {**data, "bids": json_levels(row["bids"]), "asks": json_levels(row["asks"])}
    return {name: row[name] for name in _fields(BookDelta)}


def record_of(table: str, row: asyncpg.Record) -> Record | StoredResync:
    cls = TABLES[table]
    if cls is BookDelta:
        if row["kind"] == "resync":
            return StoredResync(
                row["exchange"], row["symbol"], row["reason"], row["sequence"], row["atom_timestamp"]
            )
        if row["kind"] == "snapshot":
            cls = BookSnapshot
    return from_dict({"type": cls.TYPE, "version": cls.VERSION, "data": row_json(table, row)})


async def records_between(
    conn: asyncpg.Connection | asyncpg.Pool, table: str, first: int, last: int
) -> list[tuple[int, Record | StoredResync]]:
    """(id, record) of the rows with ``first <= id <= last``, in id order."""
    rows = await conn.fetch(
        f'SELECT {_SQL_COLUMNS[table]} FROM "{table}" WHERE id BETWEEN $1 AND $2 ORDER BY id', first, last
    )
    return [(r["id"], record_of(table, r)) for r in rows]


async def candles_at(
    conn: asyncpg.Connection | asyncpg.Pool, keys: Sequence[tuple[str, str, str, int]]
) -> list[Candle]:
    """The stored candles of these (exchange, symbol, interval, start) keys."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"SELECT {_CANDLE_COLUMNS} FROM candles"
        " JOIN unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
        " AS k(exchange, symbol, interval, start) USING (exchange, symbol, interval, start) ORDER BY start",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
    )
    doc = {"type": Candle.TYPE, "version": Candle.VERSION}
    return [from_dict({**doc, "data": dict(r)}) for r in rows]  # type: ignore[misc]


async def newest_id(conn: asyncpg.Connection | asyncpg.Pool, table: str) -> int:
    return int(await conn.fetchval(f'SELECT coalesce(max(id), 0) FROM "{table}"'))


async def page(
    conn: asyncpg.Connection | asyncpg.Pool,
    table: str,
    *,
    exchange: str | None,
    symbol: str | None,
    from_us: int | None,
    to_us: int | None,
    after: int | None,
    pin: int,
    limit: int,
    descending: bool,
) -> list[tuple[int, dict[str, Any]]]:
    """(id, JSON data) of up to ``limit`` rows after ``after`` (ids up to ``pin``), in id order."""
    where, params = ["id <= $1"], [pin]

    def add(cond: str, value: Any) -> None:
        params.append(value)
        where.append(cond.format(f"${len(params)}"))

    if exchange is not None:
        add("exchange = {}", exchange)
    if symbol is not None:
        add("symbol = {}", symbol)
    if from_us is not None:
        add("atom_timestamp >= {}", from_us)
    if to_us is not None:
        add("atom_timestamp <= {}", to_us)
    if after is not None:
        add("id < {}" if descending else "id > {}", after)
    if table == "cex_book_events":
        where.append("kind <> 'resync'")
    params.append(limit)
    sql = (
        f'SELECT {_SQL_COLUMNS[table]} FROM "{table}" WHERE {" AND ".join(where)}'
        f" ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ${len(params)}"
    )
    rows = await conn.fetch(sql, *params)
    return [(r["id"], row_json(table, r)) for r in rows]


CANDLE_INTERVALS_MS = {
    "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000,
}  # fmt: skip

_CANDLES_SQL = """
SELECT start - start % $3 AS bucket,
  (array_agg(open ORDER BY start))[1]::text AS open,
  max(high)::text AS high,
  min(low)::text AS low,
  (array_agg(close ORDER BY start DESC))[1]::text AS close,
  sum(volume)::text AS volume,
  sum(trades) AS trades,
  max(start) AS last_start,
  (array_agg(coalesce(closed, false) ORDER BY start DESC))[1] AS last_closed
FROM candles
WHERE exchange = $1 AND symbol = $2 AND interval = '1m' AND start >= $4 AND start < $5
GROUP BY bucket ORDER BY bucket {direction} LIMIT $6
"""


async def candles(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    exchange: str,
    symbol: str,
    interval: str,
    first_ms: int,
    stop_ms: int,
    limit: int,
    descending: bool,
) -> list[dict[str, Any]]:
    """Candles of ``interval`` whose start lies in ``[first_ms, stop_ms)``, from the stored 1-minute
    candles: open of the first minute, close of the last, high/low extremes, volume and trades summed.
    ``closed``: a later minute is stored, or the bucket's own last minute is stored closed."""
    width = CANDLE_INTERVALS_MS[interval]
    sql = _CANDLES_SQL.format(direction="DESC" if descending else "ASC")
    rows = await conn.fetch(sql, exchange, symbol, width, first_ms, stop_ms, limit)
    newest = await conn.fetchval(
        "SELECT max(start) FROM candles WHERE exchange = $1 AND symbol = $2 AND interval = '1m'",
        exchange,
        symbol,
    )
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "interval": interval,
            "start": r["bucket"],
            "end": r["bucket"] + width - 1,
            "open": r["open"],
            "high": r["high"],
            "low": r["low"],
            "close": r["close"],
            "volume": r["volume"],
            "trades": None if r["trades"] is None else int(r["trades"]),
            "closed": (newest is not None and newest >= r["bucket"] + width)
            or (r["last_start"] == r["bucket"] + width - 60_000 and bool(r["last_closed"])),
        }
        for r in rows
    ]
