"""Test helpers for the API: serve an app with real uvicorn on a free port, a database of the test's
own filled by the real follower from a devnet, and comparisons of API JSON with rows the oracle
(``tests/chain_check.py``: the node's raw JSON-RPC answers, parsed independently) expects."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI

from core.database import DatabaseInfo, ensure_database
from tests.conftest import free_port

Json = dict[str, Any]


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real uvicorn server in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def own_database(pg_server: tuple[str, bool], prefix: str) -> AsyncIterator[DatabaseInfo]:
    """A new migrated database for a module's tests (dropped afterwards)."""
    from migrations import runner

    server, embedded = pg_server
    name = f"{prefix}_{secrets.token_hex(4)}"
    db = DatabaseInfo(dsn=await ensure_database(server, name), embedded=embedded)
    await runner.upgrade(db.sqlalchemy_url)
    try:
        yield db
    finally:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def same(expected: Any, got: Any) -> bool:
    """The API's JSON value is the oracle's value: an int the JSON form carries as a decimal string
    (U256) compares by its digits; objects by the same keys; arrays element by element."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, int) and isinstance(got, str):
        return str(expected) == got
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and set(expected) == set(got)
            and all(same(expected[k], got[k]) for k in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(got, list)
            and len(expected) == len(got)
            and all(same(e, g) for e, g in zip(expected, got, strict=True))
        )
    return bool(expected == got)


def assert_same_rows(what: str, expected: list[Json], got: list[Json]) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} rows from the API, {len(expected)} expected"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert set(g) == set(e), f"{what} row {i}: fields {sorted(set(g) ^ set(e))} differ"
        wrong = [k for k in e if not same(e[k], g[k])]
        assert not wrong, f"{what} row {i}: " + ", ".join(
            f"{k}: api {g[k]!r} != chain {e[k]!r}" for k in wrong
        )


async def all_pages(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> tuple[list[Json], int]:
    """Every row of a list, following next_cursor; and how many pages it took."""
    rows: list[Json] = []
    pages = 0
    cursor: str | None = None
    while True:
        answer = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"data", "next_cursor"}
        rows.extend(body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, pages
