"""The API's lookups of a transaction's logs use an index now that ``ix_logs_transaction`` is a hash
index (migration 0010): the plans Postgres makes for the routes' own SQL, on a table large enough
that a sequential scan would cost more. A hash index answers equality only; a B-tree-only plan shape
(a range, an ORDER BY from the index) would fall back to a scan and show here as ``Seq Scan``."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from api.graph.resolve import apply_where
from api.graph.schema import _entities
from api.query import Query
from api.routes.transactions import _LOGS_OF_TX
from core.database import DatabaseInfo
from records import kinds

pytestmark = pytest.mark.integration

BLOCKS, LOGS_PER_BLOCK, LOGS_PER_TX = 400, 50, 4


def _hash(kind: str, n: int) -> str:
    return "0x" + f"{kind}{n:x}".rjust(64, "0")


def _tx(block: int, k: int) -> str:
    """The hash ``_fill_logs`` gives the ``k``-th transaction of ``block`` (logs 4k..4k+3)."""
    return _hash("c", block * LOGS_PER_BLOCK + k)


async def _fill_logs(conn: asyncpg.Connection) -> None:
    """20,000 logs: 400 blocks of 50, four logs a transaction, five emitting contracts."""
    await conn.execute(
        """
        INSERT INTO logs (block_hash, log_index, block_number, transaction_hash, transaction_index,
                          address, data, topic0)
        SELECT '0x' || lpad('b' || to_hex(b), 64, '0'), i, b,
               '0x' || lpad('c' || to_hex(b * $2 + i / $3), 64, '0'), i / $3,
               '0x' || lpad(to_hex(i % 5), 40, '0'), '0x', '0x' || lpad('e' || to_hex(i % 3), 64, '0')
        FROM generate_series(1, $1::int) b, generate_series(0, $2::int - 1) i
        """,
        BLOCKS,
        LOGS_PER_BLOCK,
        LOGS_PER_TX,
    )
    await conn.execute("ANALYZE logs")


def _scans(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Every scan node of a JSON plan: (node type, index name)."""
    found = []
    if "Scan" in plan["Node Type"]:
        found.append((plan["Node Type"], plan.get("Index Name")))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def _plan(conn: asyncpg.Connection, sql: str, *args: Any) -> list[tuple[str, str | None]]:
    (row,) = await conn.fetch("EXPLAIN (FORMAT JSON) " + sql, *args)
    return _scans(json.loads(row[0])[0]["Plan"])


def _graphql_logs_sql(where: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SQL of ``logs(first: 100, where: ...)``: the resolver's own ``apply_where`` and pinned query."""
    query = Query(kinds.LOGS, kinds.LOGS.order)
    apply_where(_entities()[kinds.LOGS.name], query, SimpleNamespace(**where))
    return query.pinned_sql(cursor=None, limit=101), query.params


async def test_a_transactions_logs_are_read_through_an_index(clean_db: DatabaseInfo) -> None:
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        await _fill_logs(conn)
        await conn.execute(
            "INSERT INTO blocks (number, hash, parent_hash, gas_limit, gas_used, timestamp,"
            " transaction_count) VALUES ($1, $2, $3, 0, 0, 0, 0)",
            BLOCKS, _hash("b", BLOCKS), _hash("b", BLOCKS - 1),
        )  # fmt: skip
        tx, block = _tx(200, 3), _hash("b", 200)
        # the method is what the migration made (not a B-tree left from before it)
        assert (
            await conn.fetchval(
                "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.relname = $1",
                "ix_logs_transaction",
            )
            == "hash"
        )

        # /v1/transactions/{hash}: by transaction and block; either index narrows it to a few rows
        scans = await _plan(conn, _LOGS_OF_TX, tx, block)
        assert not any(node == "Seq Scan" for node, _ in scans), scans
        assert {index for _, index in scans} & {"ix_logs_transaction", "logs_pkey"}, scans
        rows = await conn.fetch(_LOGS_OF_TX, tx, block)
        assert [r["log_index"] for r in rows] == [12, 13, 14, 15]

        # GraphQL logs(where: {transactionHash}) and {transactionHash_in}: only the hash index narrows
        for where in ({"transaction_hash": tx}, {"transaction_hash_in": [tx, _tx(1, 7), _tx(1, 9)]}):
            sql, params = _graphql_logs_sql(where)
            scans = await _plan(conn, sql, *params)
            assert ("Index Scan", "ix_logs_transaction") in scans or (
                "Bitmap Index Scan",
                "ix_logs_transaction",
            ) in scans, (where, scans)
            assert not any(node == "Seq Scan" for node, _ in scans), (where, scans)
        sql, params = _graphql_logs_sql({"transaction_hash_in": [tx, _tx(1, 7), _tx(1, 9)]})
        rows = await conn.fetch(sql, *params)
        assert sorted((r["block_number"], r["log_index"]) for r in rows) == (
            [(1, i) for i in range(28, 32)]
            + [(1, i) for i in range(36, 40)]
            + [(200, i) for i in range(12, 16)]
        )
    finally:
        await conn.close()
