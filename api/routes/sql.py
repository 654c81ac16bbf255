"""``POST /v1/sql``: one read-only SELECT over the indexed tables, for power users (as Dune and Ponder
offer). Off unless ``DEXNODE_API_SQL_ENABLED``.

Defence in depth, each layer enough on its own for what it covers:

1. **Parsed, not pattern-matched**: ``pglast`` (PostgreSQL's own parser, libpg_query) must find exactly
   one statement, a ``SELECT`` (``VALUES``/``TABLE`` are SELECTs too), with no ``INTO``, no ``FOR
   UPDATE``/``SHARE``, and no data-modifying statement anywhere inside (a ``WITH d AS (DELETE ...)``).
2. **What it may touch**: tables and views in the ``public`` schema only (no ``pg_catalog`` — on a
   superuser connection ``pg_authid`` holds password hashes — no ``information_schema``), and no
   function with a side effect or reach outside the query: ``pg_*`` (``pg_sleep``, ``pg_read_file``,
   ``pg_terminate_backend``, advisory locks, ...), ``set_config``/``current_setting``, ``dblink*``,
   large objects ``lo_*``, sequences, ``*_to_xml``. The refusal names the rule (400).
3. **Run read-only**: in a ``READ ONLY`` transaction (Postgres itself refuses any write that got
   through) with ``SET LOCAL statement_timeout`` (``DEXNODE_API_SQL_TIMEOUT_MS``), rolled back at the
   end, and at most ``DEXNODE_API_SQL_MAX_ROWS`` rows fetched through a cursor (``truncated`` says so).

For an internet-facing node, also give ``serve`` a database role with only ``SELECT`` on these tables.
Answer: ``{"columns": [...], "data": [[...], ...], "truncated": bool}``; integers beyond 2^53 and
NUMERICs as decimal strings, as everywhere in the API.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter
from pglast.parser import ParseError, parse_sql_json
from pydantic import BaseModel, Field

from api.deps import PoolDep, SettingsDep
from api.errors import RESPONSES, ApiError, bad_request

router = APIRouter(tags=["sql"], responses={400: RESPONSES[400], 404: RESPONSES[404]})

MAX_SQL_CHARS = 20_000
_WRITES = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}
_REFUSED_FUNCTION_PREFIXES = (
    "pg_",
    "lo_",
    "dblink",
    "set_config",
    "current_setting",
    "nextval",
    "setval",
    "currval",
    "lastval",
    "txid_",
    "query_to_xml",
    "cursor_to_xml",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
)
_SAFE_INT = 2**53


class SqlQuery(BaseModel):
    sql: str = Field(description="one SELECT statement", max_length=MAX_SQL_CHARS)


class SqlAnswer(BaseModel):
    columns: list[str]
    data: list[list[Any]]
    truncated: bool = Field(description="true when the row cap cut the answer")


def _nodes(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every (node type, node) of a pglast JSON parse tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key[:1].isupper():
                yield key, value
            yield from _nodes(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)


def _names(parts: list[Any]) -> list[str]:
    return [p.get("String", {}).get("sval", "") for p in parts]


def check_select(sql: str) -> None:
    """Refuse (``ApiError`` 400, naming the rule) anything but one SELECT that reads public tables."""
    try:
        parsed = orjson.loads(parse_sql_json(sql))
    except ParseError as exc:
        raise bad_request(f"SQL does not parse: {exc}") from None
    statements = parsed.get("stmts", [])
    if len(statements) != 1:
        raise bad_request(f"exactly one statement is allowed (got {len(statements)})")
    kind = next(iter(statements[0]["stmt"]))
    if kind != "SelectStmt":
        raise bad_request(f"only SELECT is allowed (got {kind.removesuffix('Stmt').upper()})")
    for name, node in _nodes(statements[0]["stmt"]):
        if name in _WRITES:
            raise bad_request(f"{name.removesuffix('Stmt').upper()} inside a SELECT is not allowed")
        if name == "SelectStmt" and node.get("intoClause"):
            raise bad_request("SELECT INTO creates a table: not allowed")
        if name == "SelectStmt" and node.get("lockingClause"):
            raise bad_request("FOR UPDATE/SHARE takes row locks: not allowed")
        if name == "FuncCall":
            function = _names(node.get("funcname", []))[-1].lower()
            if function.startswith(_REFUSED_FUNCTION_PREFIXES):
                raise bad_request(f"function {function}() is not allowed (side effects or system access)")
        if name == "RangeVar":
            schema = (node.get("schemaname") or "public").lower()
            relation = node.get("relname", "").lower()
            if schema != "public" or relation.startswith("pg_"):
                raise bad_request(
                    f"only the indexed tables in schema public may be read (not {schema}.{relation})"
                )


def _json_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):  # NaN and ±Infinity have no JSON number: their SQL spelling, as text
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, int):
        return value if -_SAFE_INT < value < _SAFE_INT else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


@router.post(
    "/sql",
    response_model=SqlAnswer,
    summary="Run one read-only SELECT (off unless DEXNODE_API_SQL_ENABLED)",
)
async def run_sql(query: SqlQuery, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """One SELECT over the indexed tables, parsed and refused otherwise (400 with the reason), run in a
    READ ONLY transaction with a statement timeout and a row cap."""
    if not settings.api_sql_enabled:
        raise ApiError(404, "POST /v1/sql is disabled on this node (set DEXNODE_API_SQL_ENABLED=true)")
    check_select(query.sql)
    cap = settings.api_sql_max_rows
    async with pool.acquire() as conn:
        try:
            async with conn.transaction(readonly=True):
                # SET LOCAL takes no parameter; the value is a validated int
                await conn.execute(f"SET LOCAL statement_timeout = {int(settings.api_sql_timeout_ms)}")
                statement = await conn.prepare(query.sql)
                columns = [a.name for a in statement.get_attributes()]
                cursor = await statement.cursor()
                rows = await cursor.fetch(cap + 1)
        except asyncpg.QueryCanceledError:
            raise bad_request(
                f"the query ran longer than the statement timeout ({settings.api_sql_timeout_ms} ms)"
            ) from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise bad_request(f"the database refused the query: {exc}") from None
    return {
        "columns": columns,
        "data": [[_json_value(v) for v in row] for row in rows[:cap]],
        "truncated": len(rows) > cap,
    }
