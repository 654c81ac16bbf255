"""Keyset-paged reads of a record kind, pinned to the indexed head: the engine REST and GraphQL share.

A ``Query`` collects conditions as SQL fragments over column names taken from ``sinks.schema`` (never
from input) with every value an asyncpg parameter. ``page`` runs it in one read-only repeatable-read
transaction:

1. the head it is pinned to: the newest block on a first page, the cursor's block on the next ones;
   a cursor whose block is no longer canonical (orphaned by a reorg) is a 409 carrying the reorg;
2. the rows at or below that head, after the cursor's key, in the requested order, ``limit + 1`` of
   them (the extra one says whether there is a next page).

Rows become records through ``sinks.postgres_read.record_of`` and JSON through ``records.to_dict``:
the fields are exactly the records' JSON ``data`` fields, as on Kafka.

The hot path reads a page in one statement instead (``Query.pinned_sql``): the pinned head is a CTE of
the same statement (one snapshot, so no transaction: BEGIN, the head's read and COMMIT were three of the
five round trips of a page, most of a page's server CPU on loopback), its number and hash ride along
as two extra columns. A statement that returns no row (an orphaned cursor, nothing indexed, or simply
no match) falls back to the transaction above, which tells them apart. Connections read this way leave
no session state behind, so their release skips asyncpg's reset query (``reading``).

A page's JSON is written from its rows in C (``records_json_bytes``, ``api/_pagejson.c``). Having
Postgres write it instead was measured twice and dropped: one ``string_agg`` text per 100-trade page
cost Postgres 0.9 CPU-ms more with ``row_to_json`` and 0.5 more with a hand-written ``concat`` (hex
columns unescaped, ``to_json`` for symbols), against 0.45 for the rows, while the API process saved
~0.3; Postgres is the part that does not scale out.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from api.cursor import Cursor
from api.errors import ApiError
from records import Record, from_dict
from records.kinds import Kind
from sinks import schema
from sinks.postgres_read import as_read, record_columns, row_json


def _native_objects() -> Callable[[tuple[bytes, ...], list[Any], int], bytes] | None:
    """``api._pagejson.objects`` (an optional C extension, pyproject.toml), or None without it: the
    same bytes then come from orjson."""
    try:
        from api._pagejson import objects
    except ImportError as error:  # pragma: no cover - make install builds it
        if not isinstance(error, ModuleNotFoundError):  # built, but not loadable here (another Python)
            logging.getLogger(__name__).warning("api._pagejson not loaded, pages through orjson: %s", error)
        return None
    return objects


_objects = _native_objects()

Json = dict[str, Any]
PIN_NUMBER, PIN_HASH = "_pin_number", "_pin_hash"  # the extra columns of a one-statement page
_LATEST = "SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1"
_AT = "SELECT number, hash FROM blocks WHERE number = {number} AND hash = {hash}"

# True while a hot path holds a pooled connection it only ran plain SELECTs on (see ``reading``)
_CLEAN: contextvars.ContextVar[bool] = contextvars.ContextVar("dexnode_api_clean", default=False)


async def reset_connection(conn: asyncpg.Connection) -> None:
    """The pool's ``reset``: asyncpg's reset query (UNLISTEN, RESET ALL, advisory locks...: a round trip
    per release) unless the release comes from ``reading``. asyncpg rolls back an open transaction and
    drops listeners before calling this either way."""
    if not _CLEAN.get():
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)


@contextlib.asynccontextmanager
async def reading(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for plain reads (SELECTs and read-only transactions: no SET, LISTEN, locks
    or cursors that outlive them), released without the reset query. Anything else (the SQL route runs
    users' text) acquires normally and gets the full reset."""
    token = _CLEAN.set(True)
    try:
        async with pool.acquire() as conn:
            yield conn
    finally:
        _CLEAN.reset(token)


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():  # schema names only; a guard against misuse
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'


def _count(limit: int) -> int:
    """A page's LIMIT, written into the statement rather than passed as a parameter: with ``LIMIT $n``
    Postgres's generic plan assumes a tenth of the rows match, costs more than every custom plan and is
    never chosen, so each execution of the cached prepared statement was planned anew (a fifth of a
    100-row page's Postgres CPU). Only an int (validated 1..1000 at the edge, +1) gets here."""
    if type(limit) is not int or limit < 0:
        raise ValueError(f"not a row count: {limit!r}")
    return limit


_PINNED_SQL: dict[tuple[Any, ...], str] = {}  # Query.pinned_sql's text per query shape
_PINNED_SQL_MAX = 4096


@dataclass
class Query:
    """A read of one kind: conditions and their parameters, the sort key and direction."""

    kind: Kind[Any]
    order: tuple[str, ...]  # sort columns (a unique key in chain order)
    descending: bool = False
    conditions: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    @property
    def table(self) -> sa.Table:
        return schema.metadata.tables[self.kind.table]

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def column(self, name: str) -> str:
        if name not in self.table.c:
            raise ValueError(f"{self.kind.table} has no column {name!r}")
        return _quote(name)

    def compare(self, name: str, op: str, value: Any) -> None:
        """``name op value``; op is one of = <> < <= > >=."""
        if op not in {"=", "<>", "<", "<=", ">", ">="}:
            raise ValueError(op)
        self.conditions.append(f"{self.column(name)} {op} {self.param(value)}")

    def one_of(self, name: str, values: list[Any]) -> None:
        self.conditions.append(f"{self.column(name)} = ANY({self.param(values)})")

    def any_column(self, names: tuple[str, ...], value: Any) -> None:
        """Any of the columns equals the value (an address as sender or receiver)."""
        p = self.param(value)
        self.conditions.append("(" + " OR ".join(f"{self.column(n)} = {p}" for n in names) + ")")

    def key_types(self) -> tuple[type, ...]:
        return tuple(int if self.table.c[c].type.python_type is int else str for c in self.order)

    def key_of(self, row: asyncpg.Record) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.order)

    def sql(self, *, head: int | None, after: tuple[Any, ...] | None, limit: int, offset: int = 0) -> str:
        where = list(self.conditions)
        if head is not None and self.kind.block is not None:
            block = self.column(self.kind.block)
            nullable = self.table.c[self.kind.block].nullable
            cond = f"{block} <= {self.param(head)}"
            where.append(f"({block} IS NULL OR {cond})" if nullable else cond)
        if after is not None:
            cols = ", ".join(self.column(c) for c in self.order)
            marks = ", ".join(self.param(v) for v in after)
            where.append(f"({cols}) {'<' if self.descending else '>'} ({marks})")
        direction = " DESC" if self.descending else ""
        text = f"SELECT {record_columns(self.kind)} FROM {_quote(self.kind.table)}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += " ORDER BY " + ", ".join(self.column(c) + direction for c in self.order)
        text += f" LIMIT {_count(limit)}"
        if offset:
            text += f" OFFSET {self.param(offset)}"
        return text

    def pinned_sql(self, *, cursor: Cursor | None, limit: int, offset: int = 0) -> str:
        """``sql`` with the pinned head read in the same statement: the newest block (a first page) or
        the cursor's block if still canonical at its height (else the CTE is empty and so is the
        answer). Each row carries the head as ``_pin_number``, ``_pin_hash``. The text depends only on
        the query's shape (kind, order, conditions, a cursor or not, limit, an offset or not), so it is
        built once per shape and the values are only appended as parameters (~20 µs a request)."""
        shape = (
            self.kind.name,
            self.order,
            self.descending,
            tuple(self.conditions),
            len(self.params),
            cursor is None,
            _count(limit),
            bool(offset),
        )
        text = _PINNED_SQL.get(shape)
        if text is None:
            text = self._pinned_text(cursor=cursor, limit=limit, offset=offset)
            if len(_PINNED_SQL) >= _PINNED_SQL_MAX:
                _PINNED_SQL.clear()  # shapes are few; a bound against a client cycling through limits
            _PINNED_SQL[shape] = text
            return text
        if cursor is not None:  # the parameters ``_pinned_text`` appends, in its order
            self.params += [cursor.head_number, cursor.head_hash, *cursor.key]
        if offset:
            self.params.append(offset)
        return text

    def _pinned_text(self, *, cursor: Cursor | None, limit: int, offset: int) -> str:
        if cursor is None:
            pin = _LATEST
        else:
            pin = _AT.format(number=self.param(cursor.head_number), hash=self.param(cursor.head_hash))
        where = list(self.conditions)
        where.append('EXISTS (SELECT 1 FROM "_pin")')
        if self.kind.block is not None:
            block = self.column(self.kind.block)
            cond = f'{block} <= (SELECT "number" FROM "_pin")'
            where.append(f"({block} IS NULL OR {cond})" if self.table.c[self.kind.block].nullable else cond)
        if cursor is not None:
            cols = ", ".join(self.column(c) for c in self.order)
            marks = ", ".join(self.param(v) for v in cursor.key)
            where.append(f"({cols}) {'<' if self.descending else '>'} ({marks})")
        direction = " DESC" if self.descending else ""
        text = (
            f'WITH "_pin" AS MATERIALIZED ({pin}) SELECT {record_columns(self.kind)},'
            f' (SELECT "number" FROM "_pin") AS "{PIN_NUMBER}", (SELECT "hash" FROM "_pin") AS "{PIN_HASH}"'
            f" FROM {_quote(self.kind.table)} WHERE " + " AND ".join(where)
        )
        text += " ORDER BY " + ", ".join(self.column(c) + direction for c in self.order)
        text += f" LIMIT {_count(limit)}"
        if offset:
            text += f" OFFSET {self.param(offset)}"
        return text


@dataclass(frozen=True)
class Head:
    number: int
    hash: str


@dataclass
class Page:
    rows: list[asyncpg.Record]
    head: Head | None
    more: bool


async def indexed_head(conn: asyncpg.Connection) -> Head | None:
    row = await conn.fetchrow("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
    return None if row is None else Head(row["number"], row["hash"])


async def pinned_head(conn: asyncpg.Connection, cursor: Cursor | None) -> Head | None:
    """The head a list's pages are pinned to: the cursor's (409 if it was orphaned since), else the
    indexed head at the first page (None: nothing indexed yet)."""
    if cursor is None:
        return await indexed_head(conn)
    head = Head(cursor.head_number, cursor.head_hash)
    await check_pinned(conn, head)
    return head


async def check_pinned(conn: asyncpg.Connection, head: Head) -> None:
    """409 when the pinned block is no longer the canonical one at its height."""
    current = await conn.fetchval("SELECT hash FROM blocks WHERE number = $1", head.number)
    if current == head.hash:
        return
    row = await conn.fetchrow(
        "SELECT common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes, new_hashes"
        " FROM reorgs WHERE $1 = ANY(orphaned_hashes) ORDER BY id DESC LIMIT 1",
        head.hash,
    )
    reorg: Json | None = None
    if row is not None:
        ancestor = row["common_ancestor_number"]
        reorg = {
            "common_ancestor": {"number": ancestor, "hash": row["common_ancestor_hash"]},
            "depth": row["depth"],
            "orphaned": [
                {"number": ancestor + 1 + i, "hash": h} for i, h in enumerate(row["orphaned_hashes"])
            ],
            # the new branch as the follower first saw it (later blocks arrive as ordinary blocks)
            "new": [{"number": ancestor + 1 + i, "hash": h} for i, h in enumerate(row["new_hashes"])],
        }
    top = await indexed_head(conn)
    raise ApiError(
        409,
        f"the cursor's pinned block {head.number} ({head.hash}) was orphaned by a reorg; the canonical"
        f" block there is now {current}. Start the query again without a cursor.",
        pinned={"number": head.number, "hash": head.hash},
        reorg=reorg,
        new_head=None if top is None else {"number": top.number, "hash": top.hash},
    )


async def page(
    pool: asyncpg.Pool,
    query: Query,
    *,
    limit: int,
    cursor: Cursor | None,
    offset: int = 0,
) -> Page:
    """A page pinned to the head: one statement when it finds rows, else the transaction that tells
    an orphaned cursor (409) and an empty index from an empty page."""
    params = len(query.params)
    async with reading(pool) as conn:
        sql = query.pinned_sql(cursor=cursor, limit=limit + 1, offset=offset)
        rows = await conn.fetch(sql, *query.params)
        if rows:
            head = Head(rows[0][PIN_NUMBER], rows[0][PIN_HASH])
            return Page(rows[:limit], head, len(rows) > limit)
        del query.params[params:]  # the same conditions again, without the one-statement parameters
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            found = await pinned_head(conn, cursor)
            if found is None:
                return Page([], None, False)
            after = cursor.key if cursor is not None else None
            sql = query.sql(head=found.number, after=after, limit=limit + 1, offset=offset)
            rows = await conn.fetch(sql, *query.params)
    return Page(rows[:limit], found, len(rows) > limit)


def record_json(cls: type[Record], row: asyncpg.Record) -> Json:
    """The row as its record's JSON ``data`` (``to_dict(record_of(cls, row))["data"]``, without
    building the record: a page of 1000 rows is the API's hottest path)."""
    data = row_json(cls, row)
    if PIN_NUMBER in data:  # a one-statement page's head columns
        del data[PIN_NUMBER], data[PIN_HASH]
    return data


def records_json(cls: type[Record], rows: list[asyncpg.Record]) -> list[Json]:
    """``record_json`` of each row; for the kinds whose JSON is their columns as read (``as_read``),
    one ``dict(zip(...))`` per row with the column names taken once per page: a third less CPU than
    ``record_json`` on a 100-trade page."""
    if not rows:
        return []
    if not as_read(cls):
        return [record_json(cls, r) for r in rows]
    names = tuple(rows[0].keys())
    if names[-2:] == (PIN_NUMBER, PIN_HASH):
        names = names[:-2]  # a one-statement page's head columns, last: ``zip`` stops before them
    return [dict(zip(names, r, strict=False)) for r in rows]


# the column names of a page's rows -> the text before each value (``{"name":``, then ``,"name":``)
_KEYS: dict[tuple[str, ...], tuple[bytes, ...]] = {}


def records_json_bytes(cls: type[Record], rows: list[asyncpg.Record]) -> bytes:
    """``orjson.dumps(records_json(cls, rows))``, the same bytes; for the ``as_read`` kinds written
    straight from the rows by ``api._pagejson`` (no dict per row: ~0.2 CPU-ms less per 100-trade
    page). A value it does not write (it writes str, int, None and bool: a kind's list or float column
    does not go through it) sends the page through orjson."""
    if rows and _objects is not None and as_read(cls):
        names = tuple(rows[0].keys())
        if names[-2:] == (PIN_NUMBER, PIN_HASH):
            names = names[:-2]  # a one-statement page's head columns, last: not written
        keys = _KEYS.get(names)
        if keys is None:
            keys = _KEYS[names] = tuple(
                ("{" if i == 0 else ",").encode() + orjson.dumps(name) + b":" for i, name in enumerate(names)
            )
        try:
            return _objects(keys, rows, len(keys))
        except (TypeError, ValueError):  # a value it does not write (a lone surrogate: orjson's error)
            pass
    return orjson.dumps(records_json(cls, rows))


def record_from(cls: type[Record], row: asyncpg.Record) -> Record:
    """The row as its record (``sinks.postgres_read.record_of`` for a row of ``page``)."""
    return from_dict({"type": cls.TYPE, "version": cls.VERSION, "data": record_json(cls, row)})


def next_cursor(query: Query, result: Page, fingerprint: str) -> str | None:
    if not result.more or not result.rows or result.head is None:
        return None
    last = query.key_of(result.rows[-1])
    return Cursor(result.head.number, result.head.hash, last, fingerprint).encode()
