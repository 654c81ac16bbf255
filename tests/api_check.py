"""Test helpers for the API: serve an app with real uvicorn on a free port, a database of the test's
own filled by the real follower from a devnet, and comparisons of API JSON with rows the oracle
(``tests/chain_check.py``: the node's raw JSON-RPC answers, parsed independently) expects."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import asyncpg
import httpx
import uvicorn
from eth_abi import decode as abi_decode
from fastapi import FastAPI

from api.app import create_app
from api.ws_transport import uvicorn_options
from core.database import DatabaseInfo, ensure_database
from core.settings import build_settings
from devnet import Devnet
from tests.chain_check import expected_rows, raw_chain
from tests.conftest import free_port
from tests.integration.test_dex_devnet import (
    V2_BURN,
    V2_MINT,
    V2_SWAP,
    V3_BURN,
    V3_COLLECT,
    V3_MINT,
    V3_SWAP,
    expected_trade,
    index_devnet,
)

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


async def start_server(app: FastAPI) -> tuple[int, Callable[[], Awaitable[None]]]:
    """The app behind a real uvicorn server (lifespan on) started in this event loop: its port, and a
    function that stops it gracefully (websockets closed, 5 s at most)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            **uvicorn_options(compression=True),  # the websocket transport serve runs
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "the API server stopped while starting"
        assert time.monotonic() < deadline, "the API server did not start"
        await asyncio.sleep(0.05)

    async def stop() -> None:
        server.should_exit = True
        await task

    return server.config.port, stop


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


@dataclass
class Indexed:
    """The seeded devnet indexed by the real follower into a database of its own, served by the API."""

    url: str
    devnet: Devnet
    dsn: str
    head: int
    chain: dict[str, list[Json]]  # the oracle's rows per table, blocks 0..head
    blocks: list[Json]  # raw eth_getBlockByNumber answers
    queries: list[str]  # every statement the API's pool ran, in order


@contextlib.asynccontextmanager
async def indexed_devnet(pg_server: tuple[str, bool], devnet: Devnet, prefix: str) -> AsyncIterator[Indexed]:
    async with own_database(pg_server, prefix) as db:
        sink = await index_devnet(devnet, db.dsn)
        try:
            head = int(await sink.pool.fetchval("SELECT max(number) FROM blocks"))
            raw = await raw_chain(devnet.rpc_http, list(range(head + 1)))
            settings = build_settings(database_url=db.dsn, rpc_http=devnet.rpc_http)
            queries: list[str] = []

            async def log_queries(conn: asyncpg.Connection) -> None:
                conn.add_query_logger(lambda logged: queries.append(logged.query))

            pool = await asyncpg.create_pool(db.dsn, min_size=1, max_size=8, init=log_queries)
            try:
                async with served(create_app(settings, pool=pool)) as url:
                    chain = expected_rows(raw)
                    yield Indexed(url, devnet, db.dsn, head, chain, [b for b, _ in raw], queries)
            finally:
                await pool.close()
        finally:
            await sink.close()


Swap = tuple[Any, ...]  # test_dex_devnet.expected_trade's tuple + (block number, block time)


def swaps_of(indexed: Indexed) -> tuple[list[Swap], dict[str, int]]:
    """Every swap up to the indexed head from eth_getLogs + eth-abi, in chain order; token decimals."""
    manifest = indexed.devnet.manifest
    pools = {p["address"]: p for p in manifest["pools"]}
    logs = indexed.devnet.rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(indexed.head), "address": sorted(pools)}
    )
    times = {b["hash"].lower(): int(b["timestamp"], 16) for b in indexed.blocks}
    swaps = [
        (
            *expected_trade(lg, pools[lg["address"]]),
            int(lg["blockNumber"], 16),
            times[lg["blockHash"].lower()],
        )
        for lg in logs
        if lg["topics"][0] in (V2_SWAP, V3_SWAP)
    ]
    swaps.sort(key=lambda s: (s[9], s[1]))
    return swaps, {t["address"]: t["decimals"] for t in manifest["tokens"]}


def exact(raw: int, decimals: int) -> Decimal:
    return Decimal(raw).scaleb(-decimals)


def expected_candles(
    swaps: list[Swap], decimals: dict[str, int], pool: Json, seconds: int
) -> dict[int, Json]:
    """start -> open/high/low/close/v0/v1/n of the pool's trades, summed here with Decimal: price is
    amount1 / amount0 rounded half up at 78 places, trades with an amount of zero left out."""
    token0, token1 = pool["token0"], pool["token1"]
    want: dict[int, Json] = {}
    for s in swaps:
        if s[3] != pool["address"]:
            continue
        sold, sold_raw, bought_raw, time = s[5], s[7], s[8], s[10]
        raw0, raw1 = (sold_raw, bought_raw) if sold == token0 else (bought_raw, sold_raw)
        a0, a1 = exact(raw0, decimals[token0]), exact(raw1, decimals[token1])
        if not a0 or not a1:
            continue
        with localcontext() as ctx:
            ctx.prec = 200
            price = (a1 / a0).quantize(Decimal("1e-78"), rounding=ROUND_HALF_UP)
        start = time - time % seconds
        c = want.setdefault(start, {"open": price, "high": price, "low": price, "v0": Decimal(0),
                                    "v1": Decimal(0), "n": 0})  # fmt: skip
        c["high"], c["low"], c["close"] = max(c["high"], price), min(c["low"], price), price
        c["v0"] += a0
        c["v1"] += a1
        c["n"] += 1
    return want


@contextlib.contextmanager
def served_in_thread(app: FastAPI) -> Iterator[str]:
    """The app behind uvicorn in a thread of its own (its own event loop, so a synchronous test, such
    as schemathesis's, can call it); the app opens its own database pool there."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.025)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def liquidity_of(indexed: Indexed) -> list[tuple[Any, ...]]:
    """(block hash, log index, event, add/remove, amount0 raw, amount1 raw, exchange, pool) of every
    mint, burn and collect up to the indexed head, decoded here with eth-abi, in chain order."""
    pools = {p["address"]: p for p in indexed.devnet.manifest["pools"]}
    logs = indexed.devnet.rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(indexed.head), "address": sorted(pools)}
    )
    layouts = {
        V2_MINT: ("mint", ["uint256", "uint256"], 0),
        V2_BURN: ("burn", ["uint256", "uint256"], 0),
        V3_MINT: ("mint", ["address", "uint128", "uint256", "uint256"], 2),
        V3_BURN: ("burn", ["uint128", "uint256", "uint256"], 1),
        V3_COLLECT: ("collect", ["address", "uint128", "uint128"], 1),
    }
    out = []
    for lg in logs:
        layout = layouts.get(lg["topics"][0])
        if layout is None:
            continue
        event, types, first = layout
        values = abi_decode(types, bytes.fromhex(lg["data"][2:]))
        a0, a1 = values[first], values[first + 1]
        kind = "add" if event == "mint" else "remove"
        pool = pools[lg["address"]]
        out.append((int(lg["blockNumber"], 16), int(lg["logIndex"], 16), lg["blockHash"].lower(), event, kind,
                    a0, a1, pool["label"], lg["address"]))  # fmt: skip
    out.sort()
    return [(t[2], t[1], *t[3:]) for t in out]
