"""DEX enrichment under RPC faults: 429s, -32005 limit errors and timeouts on the ``eth_call`` s that
classify pools and read token metadata, each lasting longer than the RPC client's retries, in follow
and in backfill. The stored pools, tokens, trades and liquidity events must equal, column for column,
those of a fault-free run over the same blocks (and the fault-free run itself must match the devnet's
manifest, which the indexer never reads).

The faults come from a real HTTP JSON-RPC proxy in front of the devnet's anvil (``tests.faulty_rpc``).
Both runs start after the pools were created, so every pool is classified on chain."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from core.database import DatabaseInfo
from decoders.events import selector
from devnet import Devnet
from indexer.backfill.load import AdaptiveLoad
from indexer.backfill.plan import BlockRange, plan
from indexer.backfill.run import Backfill
from indexer.backfill.store import BackfillSink
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks import schema
from sinks.postgres import PostgresSink
from tests.faulty_rpc import CallFault, FaultyRpc
from tests.integration.test_dex_devnet import venues

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)  # outlived by every fault below
FAST_WAIT = RetryPolicy(attempts=0, base_delay=0.01, max_delay=0.05)  # the enricher waits every fault out
CLIENT_TIMEOUT = 0.6
POOL_CALLS = {name: selector(f"{name}()") for name in ("factory", "token0", "token1", "fee")}
VERIFY_CALLS = {
    "getPair": selector("getPair(address,address)"),
    "getPool": selector("getPool(address,address,uint24)"),
}
TOKEN_CALLS = {name: selector(f"{name}()") for name in ("symbol", "name", "decimals")}


def faults() -> list[CallFault]:
    """Each chosen call fails 3 times; the client gives up after 2, so each outlives one batch try."""
    return [
        CallFault("http429", frozenset({POOL_CALLS["token0"], TOKEN_CALLS["decimals"]}), tries=3),
        CallFault(
            "limit",
            frozenset(
                {POOL_CALLS["factory"], POOL_CALLS["fee"], TOKEN_CALLS["symbol"], *VERIFY_CALLS.values()}
            ),
            tries=3,
        ),
        CallFault("timeout", frozenset({TOKEN_CALLS["name"]}), tries=3, delay=CLIENT_TIMEOUT + 0.4),
    ]


def _columns(table: sa.Table) -> list[str]:
    return [
        c.name for c in table.columns if c.server_default is None and not isinstance(c.default, sa.Identity)
    ]


async def dex_rows(dsn: str, last: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of pools, tokens, dex_trades and dex_liquidity (up to block ``last``), in key order."""
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in (schema.pools, schema.tokens, schema.dex_trades, schema.dex_liquidity):
            cols = ", ".join(f'"{c}"' for c in _columns(table))
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            where = f"WHERE block_number <= {int(last)}" if "block_number" in table.c else ""
            rows = await conn.fetch(f'SELECT {cols} FROM "{table.name}" {where} ORDER BY {keys}')
            out[table.name] = [tuple(r) for r in rows]
        return out
    finally:
        await conn.close()


async def follow_to(url: str, devnet: Devnet, dsn: str, first: int, last: int) -> DexEnricher:
    """Follow from ``first`` until block ``last`` is stored; → the enricher (for its counters)."""
    sink = await PostgresSink.connect(dsn)
    v2, v3 = venues(devnet.manifest)
    try:
        async with RpcClient(url, timeout=CLIENT_TIMEOUT, retry=FAST_RETRY) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3), retry=FAST_WAIT)
            follower = Follower(rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=first)
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                deadline = time.monotonic() + 240
                while (await sink.pool.fetchval("SELECT max(number) FROM blocks") or -1) < last:
                    assert not task.done(), task.exception()
                    assert time.monotonic() < deadline, "the follower never reached the target block"
                    await asyncio.sleep(0.1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await sink.close()
    return enrich


async def backfill_range(url: str, devnet: Devnet, dsn: str, first: int, last: int) -> DexEnricher:
    sink = await BackfillSink.connect(dsn, max_size=6)
    v2, v3 = venues(devnet.manifest)
    try:
        async with RpcClient(url, timeout=CLIENT_TIMEOUT, retry=FAST_RETRY) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3), retry=FAST_WAIT)
            job = Backfill(rpc, sink, load=AdaptiveLoad(max_workers=3, max_batch=50), enrich=enrich)
            await job.run(plan(BlockRange(first, last), [], 40))
    finally:
        await sink.close()
    return enrich


def check_baseline(rows: dict[str, list[tuple[Any, ...]]], devnet: Devnet) -> None:
    """The fault-free run against the manifest: every pool found with its tokens, every token read."""
    manifest = devnet.manifest
    pool_cols, token_cols = _columns(schema.pools), _columns(schema.tokens)
    pools = {r[pool_cols.index("address")]: r for r in rows["pools"]}
    assert set(pools) == {p["address"] for p in manifest["pools"]}
    for p in manifest["pools"]:
        row = pools[p["address"]]
        assert (row[pool_cols.index("token0")], row[pool_cols.index("token1")]) == (p["token0"], p["token1"])
    tokens = {r[token_cols.index("address")]: r for r in rows["tokens"]}
    for t in manifest["tokens"]:
        if t["address"] in tokens:
            row = tokens[t["address"]]
            assert (row[token_cols.index("symbol")], row[token_cols.index("decimals")]) == (
                t["symbol"],
                t["decimals"],
            )
    assert len(rows["dex_trades"]) > 100 and rows["dex_liquidity"]


def check_faults_happened(proxy: FaultyRpc, enrich: DexEnricher) -> None:
    kinds = {kind for kind, _ in proxy.injected}
    assert kinds == {"http429", "limit", "timeout"}, proxy.injected
    hit = {sel for _, sel in proxy.injected}
    assert (
        hit & set(POOL_CALLS.values())
        and hit & set(TOKEN_CALLS.values())
        and hit & set(VERIFY_CALLS.values())
    )
    assert enrich.counts["enrich.retries"] > 0  # the faults outlived the client's retries


@pytest.mark.parametrize("path", ["follow", "backfill"])
async def test_dex_tables_under_eth_call_faults_equal_a_fault_free_run(
    path: str, devnet: Devnet, clean_db: DatabaseInfo, scratch_db: DatabaseInfo
) -> None:
    from migrations import runner

    await runner.upgrade(scratch_db.sqlalchemy_url)
    first = devnet.manifest["setup_head"] + 1
    last = first + 150
    assert devnet.head()[0] >= last
    run = follow_to if path == "follow" else backfill_range
    await run(devnet.rpc_http, devnet, clean_db.dsn, first, last)
    want = await dex_rows(clean_db.dsn, last)
    check_baseline(want, devnet)
    async with FaultyRpc(devnet.rpc_http, faults()) as proxy:
        enrich = await run(proxy.url, devnet, scratch_db.dsn, first, last)
    got = await dex_rows(scratch_db.dsn, last)
    for table in want:
        assert got[table] == want[table], table
    check_faults_happened(proxy, enrich)
