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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import sqlalchemy as sa

from api.cursor import Cursor
from api.errors import ApiError
from records import Record
from records.kinds import Kind
from sinks import schema
from sinks.postgres_read import record_columns, row_json

Json = dict[str, Any]


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():  # schema names only; a guard against misuse
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'


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
        text += f" LIMIT {self.param(limit)}"
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
    pool: asyncpg.Pool, query: Query, *, limit: int, cursor: Cursor | None, offset: int = 0
) -> Page:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head = await pinned_head(conn, cursor)
        if head is None:
            return Page([], None, False)
        after = cursor.key if cursor is not None else None
        sql = query.sql(head=head.number, after=after, limit=limit + 1, offset=offset)
        rows = await conn.fetch(sql, *query.params)
    return Page(rows[:limit], head, len(rows) > limit)


def record_json(cls: type[Record], row: asyncpg.Record) -> Json:
    """The row as its record's JSON ``data`` (``to_dict(record_of(cls, row))["data"]``, without
    building the record: a page of 1000 rows is the API's hottest path)."""
    return row_json(cls, row)


def next_cursor(query: Query, result: Page, fingerprint: str) -> str | None:
    if not result.more or not result.rows or result.head is None:
        return None
    last = query.key_of(result.rows[-1])
    return Cursor(result.head.number, result.head.hash, last, fingerprint).encode()
