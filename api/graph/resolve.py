"""Resolving GraphQL lists and objects through the REST API's engine (``api.query``): the same SQL,
pinning and cursors; records as the source objects (the types read their fields by name).

Relations are loaded by a per-request ``DataLoader`` per kind (one ``= ANY($1)`` query for every pool
or token a page of trades names), so ``dexTrades { pool { token0 { symbol } } }`` is three queries,
not one per row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from graphql import GraphQLError
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from api.cursor import Cursor, decode, fingerprint
from api.errors import ApiError
from api.graph.types import Entity
from api.query import Head, Query, indexed_head, page, pinned_head, reading, record_from
from records import Record
from records.kinds import BY_NAME, Kind
from sinks.postgres_read import record_columns, record_of

MAX_FIRST = 1000
MAX_SKIP = 5000
_HEX = re.compile(r"^0x[0-9a-fA-F]*$")


class Context(BaseContext):
    """Per request: the pool, and the loaders made on first use."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.pool = pool
        self.loaders: dict[str, DataLoader[Any, Any]] = {}


def loader_of(info: Info, kind_name: str) -> DataLoader[Any, Any]:
    context: Context = info.context
    loader = context.loaders.get(kind_name)
    if loader is None:
        kind = BY_NAME[kind_name]

        async def load(keys: Sequence[Any]) -> list[Record | None]:
            return await _by_key(context.pool, kind, list(keys))

        loader = context.loaders[kind_name] = DataLoader(load_fn=load)
    return loader


async def _by_key(pool: asyncpg.Pool, kind: Kind[Any], keys: list[Any]) -> list[Record | None]:
    (column,) = kind.key
    sql = f'SELECT {record_columns(kind)} FROM "{kind.table}" WHERE "{column}" = ANY($1)'
    async with reading(pool) as conn:
        rows = await conn.fetch(sql, keys)
    found = {r[column]: record_of(kind.record, r) for r in rows}
    return [found.get(k) for k in keys]


async def prime(info: Info, entity: Entity, objects: Sequence[Any], selections: Sequence[Any]) -> None:
    """Load the relations a list's selection asks for (``dexTrades { pool { token0 { symbol } } }``),
    level by level with one batched query each, before the list is resolved: its rows' relation
    resolvers then find their records loaded and answer without awaiting (see ``types._relation``).
    Fields under fragments are left to the loaders as they come."""
    for selected in selections:
        if not isinstance(selected, SelectedField) or not selected.selections:
            continue
        relation = entity.relations.get(selected.name)
        if relation is None:
            continue
        field, target = relation
        keys = list(dict.fromkeys(v for o in objects if (v := getattr(o, field)) is not None))
        if keys:
            loaded = await loader_of(info, target.kind.name).load_many(keys)
            await prime(info, target, [r for r in loaded if r is not None], selected.selections)


def error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


def _value(value: Any) -> Any:
    if isinstance(value, str) and _HEX.match(value):
        return value.lower()
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def apply_where(entity: Entity, query: Query, where: Any) -> dict[str, Any]:
    """The filter input as conditions; returns the filters given (for the cursor's fingerprint)."""
    given: dict[str, Any] = {}
    if where is None:
        return given
    for attr, (column, op) in entity.where_ops.items():
        value = getattr(where, attr, None)
        if value is None:
            continue
        value = _value(value)
        given[attr] = value
        if op == "in":
            if len(value) > MAX_FIRST:
                raise error(f"{attr}: at most {MAX_FIRST} values", "BAD_USER_INPUT")
            query.one_of(column, value)
        else:
            query.compare(column, op, value)
    return given


@dataclass
class Page:
    nodes: list[Record]
    end_cursor: str | None
    has_next_page: bool


async def list_page(
    info: Info,
    entity: Entity,
    *,
    first: int,
    skip: int,
    where: Any,
    order_by: Any,
    order_direction: Any,
    block: Any,
    after: str | None,
) -> Page:
    if not 0 <= first <= MAX_FIRST:
        raise error(f"first must be between 0 and {MAX_FIRST} (got {first})", "BAD_USER_INPUT")
    if not 0 <= skip <= MAX_SKIP:
        raise error(f"skip must be between 0 and {MAX_SKIP} (got {skip}); page with after", "BAD_USER_INPUT")
    kind = entity.kind
    column = order_by.value if order_by is not None else None
    order = tuple(dict.fromkeys(((column,) if column else ()) + kind.order))
    descending = order_direction is not None and order_direction.value == "desc"
    query = Query(kind, order, descending=descending)
    given = apply_where(entity, query, where)
    fp = fingerprint(entity.name, f"{'desc' if descending else 'asc'}:{','.join(order)}", given)
    cursor = None
    if after is not None:
        try:
            cursor = decode(after, query.key_types(), fp)
        except ApiError as exc:
            raise error(exc.detail, "BAD_USER_INPUT") from None
    context: Context = info.context
    if block is None:  # pinned to the head or the cursor's block: the REST engine's one-statement page
        try:
            found = await page(context.pool, query, limit=first, cursor=cursor, offset=skip)
        except ApiError as exc:  # the cursor's block was orphaned
            raise GraphQLError(exc.detail, extensions={"code": "REORG", **exc.extra}) from None
        rows, more, head = found.rows, found.more, found.head
    else:
        async with (
            reading(context.pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            head = await _pin(conn, cursor, block)
            if head is None:
                return Page([], None, False)
            sql = query.sql(
                head=head.number, after=cursor.key if cursor else None, limit=first + 1, offset=skip
            )
            rows = await conn.fetch(sql, *query.params)
        more = len(rows) > first
        rows = rows[:first]
    if head is None:
        return Page([], None, False)
    end = Cursor(head.number, head.hash, query.key_of(rows[-1]), fp).encode() if rows else None
    return Page([record_from(kind.record, r) for r in rows], end, more)


async def _pin(conn: asyncpg.Connection, cursor: Cursor | None, block: Any) -> Head | None:
    if cursor is not None:
        try:
            return await pinned_head(conn, cursor)
        except ApiError as exc:
            raise GraphQLError(exc.detail, extensions={"code": "REORG", **exc.extra}) from None
    top = await indexed_head(conn)
    if block is None or top is None:
        return top
    if not 0 <= block.number <= top.number:
        raise error(
            f"block {block.number} is not indexed (the indexed head is {top.number})", "BAD_USER_INPUT"
        )
    hash_ = await conn.fetchval("SELECT hash FROM blocks WHERE number = $1", block.number)
    if hash_ is None:
        raise error(
            f"block {block.number} is not in the database (a gap in the indexed range)", "BAD_USER_INPUT"
        )
    return Head(block.number, hash_)


async def one(info: Info, kind: Kind[Any], column: str, value: Any) -> Record | None:
    context: Context = info.context
    sql = f'SELECT {record_columns(kind)} FROM "{kind.table}" WHERE "{column}" = $1'
    async with reading(context.pool) as conn:
        row = await conn.fetchrow(sql, _value(value))
    return None if row is None else record_of(kind.record, row)
