"""``POST /v1/sql`` against a real Postgres holding mainnet block 21925176 (202 receipts, 463 logs from
``../shared/fixtures``) written by the real writer, served by real uvicorn: a real query answers the
recorded data; writes, several statements, side-effecting functions, system catalogs and
``SELECT INTO`` are refused with a 400 naming the reason, and the data is untouched afterwards; the
row cap and the statement timeout hold; the route is off unless enabled."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from core.settings import build_settings
from indexer.chain.extract import extract_receipts_only
from indexer.pipeline.pipeline import batch_of
from sinks.postgres import PostgresSink
from tests.api_check import own_database, served

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixtures_dir")]

HELIOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"


@dataclass
class Served:
    dsn: str
    url: str  # enabled, 1000 rows, 5 s
    tight_url: str  # enabled, 100 rows, 100 ms
    off_url: str  # not enabled
    header: dict[str, Any]
    receipts: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def node(pg_server: tuple[str, bool]) -> AsyncIterator[Served]:
    header = json.loads((HELIOS / "block.json").read_text())
    receipts = json.loads((HELIOS / "receipts.json").read_text())
    async with own_database(pg_server, "dexnode_api_sql") as db:
        sink = await PostgresSink.connect(db.dsn)
        try:
            await sink.write(batch_of("backfill", [extract_receipts_only(header, receipts)]))
        finally:
            await sink.pool.close()
        base: dict[str, Any] = {"database_url": db.dsn}
        pools = [await asyncpg.create_pool(db.dsn, min_size=1, max_size=4) for _ in range(3)]
        try:
            async with contextlib.AsyncExitStack() as stack:
                urls = []
                extras: tuple[dict[str, Any], ...] = (
                    {"api_sql_enabled": True, "api_sql_max_rows": 1000},
                    {"api_sql_enabled": True, "api_sql_max_rows": 100, "api_sql_timeout_ms": 100},
                    {},
                )
                for pool, extra in zip(pools, extras, strict=True):
                    app = create_app(build_settings(**base, **extra), pool=pool)
                    urls.append(await stack.enter_async_context(served(app)))
                yield Served(db.dsn, urls[0], urls[1], urls[2], header, receipts)
        finally:
            for pool in pools:
                await pool.close()


async def _post(url: str, sql: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post("/v1/sql", json={"sql": sql})


async def test_a_select_answers_the_recorded_block(node: Served) -> None:
    answer = await _post(
        node.url,
        "SELECT l.log_index, l.address, l.topic0, l.data, l.transaction_hash FROM logs l"
        " WHERE l.block_number = 21925176 ORDER BY l.log_index",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["columns"] == ["log_index", "address", "topic0", "data", "transaction_hash"]
    recorded = [lg for r in node.receipts for lg in r["logs"]]
    assert len(recorded) == 463 and body["truncated"] is False
    assert body["data"] == [
        [
            int(lg["logIndex"], 16),
            lg["address"].lower(),
            lg["topics"][0].lower() if lg["topics"] else None,
            lg["data"].lower(),
            lg["transactionHash"].lower(),
        ]
        for lg in recorded
    ]

    # an aggregate with a join; big numbers come back as decimal strings
    answer = await _post(
        node.url,
        "WITH per_tx AS (SELECT transaction_hash, count(*) AS n FROM logs GROUP BY 1)"
        " SELECT b.number, b.hash, b.gas_used, b.base_fee_per_gas, b.excess_blob_gas, max(p.n) AS most_logs"
        " FROM blocks b CROSS JOIN per_tx p GROUP BY 1, 2, 3, 4, 5",
    )
    assert answer.status_code == 200, answer.text
    most = max(len(r["logs"]) for r in node.receipts)
    h = node.header
    assert answer.json()["data"] == [
        [
            int(h["number"], 16),
            h["hash"],
            int(h["gasUsed"], 16),
            str(int(h["baseFeePerGas"], 16)),  # NUMERIC: a string, as everywhere in the API
            int(h["excessBlobGas"], 16),
            most,
        ]
    ]


REFUSED = [
    ("INSERT INTO reorgs (depth) VALUES (1)", "only SELECT"),
    ("UPDATE blocks SET gas_used = 0", "only SELECT"),
    ("DELETE FROM logs", "only SELECT"),
    ("DROP TABLE logs", "only SELECT"),
    ("SELECT 1; DROP TABLE logs", "exactly one statement"),
    ("SELECT count(*) FROM logs; SELECT 2", "exactly one statement"),
    ("WITH gone AS (DELETE FROM logs RETURNING *) SELECT count(*) FROM gone", "DELETE inside a SELECT"),
    ("SELECT * INTO stolen FROM blocks", "SELECT INTO"),
    ("SELECT number FROM blocks FOR UPDATE", "FOR UPDATE"),
    ("SELECT pg_sleep(30)", "pg_sleep"),
    ("SELECT 1 FROM blocks WHERE pg_catalog.pg_sleep(30) IS NULL", "pg_sleep"),
    ("SELECT set_config('statement_timeout', '0', false)", "set_config"),
    ("SELECT * FROM dblink('dbname=test', 'DELETE FROM logs') AS t(x text)", "dblink"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT nextval('some_seq')", "nextval"),
    ("SELECT rolname, rolpassword FROM pg_catalog.pg_authid", "schema public"),
    ("SELECT * FROM pg_stat_activity", "schema public"),
    ("SELECT * FROM information_schema.tables", "schema public"),
    ("SELEC number FROM blocks", "does not parse"),
    ("", "exactly one statement"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSED, ids=[r[0][:40] for r in REFUSED])
async def test_anything_but_one_plain_select_is_refused_with_the_reason(
    node: Served, sql: str, reason: str
) -> None:
    answer = await _post(node.url, sql)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["detail"]


async def test_refused_statements_left_the_data_as_it_was(node: Served) -> None:
    for sql, _ in REFUSED:
        await _post(node.url, sql)
    conn = await asyncpg.connect(node.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM logs") == 463
        assert await conn.fetchval("SELECT gas_used FROM blocks") == int(node.header["gasUsed"], 16)
        assert await conn.fetchval("SELECT to_regclass('public.stolen')") is None
    finally:
        await conn.close()


async def test_values_without_a_json_number_come_back_as_text(node: Served) -> None:
    answer = await _post(
        node.url,
        "SELECT 'NaN'::float8 AS a, '-Infinity'::float8 AS b, 1.5::float8 AS c, 2::numeric / 3 AS d,"
        " 9007199254740993::bigint AS e, now() > '2020-01-01' AS f, NULL AS g",
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == [
        ["NaN", "-Infinity", 1.5, "0.66666666666666666667", "9007199254740993", True, None]
    ]


async def test_errors_from_postgres_are_a_400_with_its_message(node: Served) -> None:
    answer = await _post(node.url, "SELECT no_such_column FROM blocks")
    assert answer.status_code == 400
    assert "no_such_column" in answer.json()["detail"]


async def test_row_cap_and_statement_timeout(node: Served) -> None:
    answer = await _post(node.tight_url, "SELECT log_index FROM logs ORDER BY log_index")
    assert answer.status_code == 200
    body = answer.json()
    assert body["truncated"] is True and body["data"] == [[i] for i in range(100)]

    answer = await _post(node.tight_url, "SELECT count(*) FROM generate_series(1, 2000000000) g")
    assert answer.status_code == 400
    assert "statement timeout (100 ms)" in answer.json()["detail"]


async def test_off_unless_enabled(node: Served) -> None:
    answer = await _post(node.off_url, "SELECT 1")
    assert answer.status_code == 404
    assert "DEXNODE_API_SQL_ENABLED" in answer.json()["detail"]
