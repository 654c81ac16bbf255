"""The REST lists' records as JSON written by Postgres (``api.query.Query.json_sql``) are the records'
own JSON: every stored row of every kind, compared with ``records.to_dict`` of the record decoded from
the same row, value and type (a nonce a number, an amount a decimal string, nested records as objects);
and byte for byte what the lists answered before, ``row_json`` encoded by orjson (same key order)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from api.query import Query
from devnet import Devnet
from records import kinds, to_dict
from sinks.postgres_read import record_columns, record_of, row_json
from tests.api_check import Indexed, indexed_devnet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def indexed(pg_server: tuple[str, bool], devnet: Devnet) -> AsyncIterator[Indexed]:
    async with indexed_devnet(pg_server, devnet, "dexnode_api_json") as served_chain:
        yield served_chain


async def test_postgres_json_of_every_row_is_the_records_encoding(indexed: Indexed) -> None:
    conn = await asyncpg.connect(indexed.dsn)
    try:
        for kind in kinds.BATCH_KINDS:
            query = Query(kind, kind.order)
            sql = query.json_sql(cursor=None, limit=1_000_000)
            assert sql is not None, kind.name
            got = await conn.fetch(sql, *query.params)
            order = ", ".join(f'"{c}"' for c in kind.order)
            rows = await conn.fetch(f'SELECT {record_columns(kind)} FROM "{kind.table}" ORDER BY {order}')
            assert rows and len(got) == len(rows), kind.name
            for row, answer in zip(rows, got, strict=True):
                want = to_dict(record_of(kind.record, row))["data"]
                assert orjson.loads(answer["_json"]) == want, (kind.name, row)
                # the same keys in the same order, and the same JSON types (1 and "1" are not equal)
                before = orjson.dumps(row_json(kind.record, row))
                assert orjson.dumps(orjson.loads(answer["_json"])) == before, kind.name
            assert got[-1]["_pin_number"] == indexed.head
    finally:
        await conn.close()
