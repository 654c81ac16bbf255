"""Answer shapes: a list ``{"data": [...], "next_cursor": ...}``, one object ``{"data": {...}}``, as
JSON bytes encoded once with orjson (records are already plain JSON values)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from fastapi import Response

from api.errors import not_found
from api.params import ListArgs
from api.query import Query, next_cursor, page, reading, record_json, records_json_bytes
from records.kinds import Kind
from sinks.postgres_read import record_columns

Json = dict[str, Any]


class JsonBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class JsonEncoded(JsonBytes):
    """An answer whose JSON is already encoded (bytes)."""

    def render(self, content: Any) -> bytes:
        if type(content) is not bytes:
            raise TypeError("JsonEncoded takes the answer's JSON bytes")
        return content


async def list_records(
    pool: asyncpg.Pool, query: Query, args: ListArgs, resource: str, filters: Json
) -> JsonBytes:
    cursor, fp = args.start(query, resource, filters)
    result = await page(pool, query, limit=args.limit, cursor=cursor)
    data = records_json_bytes(query.kind.record, result.rows)
    cursor_json = orjson.dumps(next_cursor(query, result, fp))
    # the bytes orjson writes for {"data": records_json(...), "next_cursor": ...}, copied once (``+``
    # copied the ~98 kB of a 100-trade page twice)
    return JsonEncoded(b"".join((b'{"data":', data, b',"next_cursor":', cursor_json, b"}")))


async def fetch_one(pool: asyncpg.Pool, kind: Kind[Any], column: str, value: Any) -> Json | None:
    query = Query(kind, kind.order)
    sql = f'SELECT {record_columns(kind)} FROM "{kind.table}" WHERE {query.column(column)} = $1'
    async with reading(pool) as conn:
        row = await conn.fetchrow(sql, value)
    return None if row is None else record_json(kind.record, row)


async def one_record(pool: asyncpg.Pool, kind: Kind[Any], column: str, value: Any, what: str) -> JsonBytes:
    data = await fetch_one(pool, kind, column, value)
    if data is None:
        raise not_found(f"no {what} {value} in the indexed data")
    return JsonBytes({"data": data})
