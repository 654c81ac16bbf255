"""Pools and tokens the DEX enricher learned by ``eth_call`` on a block a reorg then orphans are deleted in
the reorg's own Postgres transaction, never before it: a crash between enrichment and commit leaves
the old branch whole (every trade's pool and every pool's tokens stored), and writing the reorg again,
by the same process (the pipeline's retry) or by a fresh one (a restart), ends with exactly the rows
a run that only ever saw the canonical chain writes.

Real Postgres and the real enricher and sink; the node is a local JSON-RPC server answering the
scripted ``eth_call`` s (``tests.rpc_replay``). The chain: block 99 trades on pool B (tokens 1, 2);
block 100 on branch a trades on pool A (tokens 0, 1), both pools classified on chain (no creation
block); the reorg replaces 100a by 100b, which trades on B again. Pool A and token 0 only ever served
the orphaned block. On Kafka, ``head.pools`` and ``head.tokens`` lose them too (a revert per orphaned
block), so a consumer applying the reverts holds what Postgres holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from eth_abi import encode

from core.database import DatabaseInfo
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from records import Block, Log, Reorg, Transaction
from records.batch import Batch
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import start_kafka_dev
from sinks.postgres import PostgresSink
from tests.kafka_check import assert_kafka_is_postgres, consumer_rule, raw_messages
from tests.rpc_replay import ReplayServer
from tests.unit.test_dex_enricher import FACTORY, TAKER, block, event, selector, string_result, tx, word

pytestmark = pytest.mark.integration

POOL_A, POOL_B = "0x" + "a1" * 20, "0x" + "b2" * 20
TOKEN_0, TOKEN_1, TOKEN_2 = "0x" + "0a" * 20, "0x" + "0b" * 20, "0x" + "0d" * 20
POOLS = {POOL_A: (TOKEN_0, TOKEN_1), POOL_B: (TOKEN_1, TOKEN_2)}
TOKENS = {TOKEN_0: ("AAA", 18), TOKEN_1: ("BBB", 6), TOKEN_2: ("CCC", 8)}
TABLES = {
    "pools": "address",
    "tokens": "address",
    "dex_trades": "block_number, log_index",
    "dex_liquidity": "block_number, log_index",
    "blocks": "number",
}

OLD, NEW = block(100, "a"), block(100, "b")
ANCESTOR = block(99, "a")
REORG = Reorg(99, ANCESTOR.hash, 1, (OLD.hash,), (NEW.hash,), 0)


def swap_on(b: Block, pool: str) -> Log:
    """1000 of the pool's token0 in, 1990 of its token1 out."""
    return event(
        b,
        pool,
        "Swap(address,uint256,uint256,uint256,uint256,address)",
        [("address", TAKER), ("address", TAKER)],
        [("uint256", 1000), ("uint256", 0), ("uint256", 0), ("uint256", 1990)],
        1,
    )


def batch_at(b: Block, pool: str, reorg: Reorg | None = None) -> Batch:
    return Batch("follow", [b], {Transaction: [tx(b)], Log: [swap_on(b, pool)]}, reorg=reorg)


def script_node(server: ReplayServer) -> None:
    """What the chain answers at blocks 99 and 100: both pools are pairs of the configured factory."""
    for at in (99, 100):
        for pool, (token0, token1) in POOLS.items():
            for name, value in (("factory", FACTORY), ("token0", token0), ("token1", token1)):
                params = [{"to": pool, "data": selector(f"{name}()")}, hex(at)]
                server.set_result("eth_call", params, word("address", value))
            get_pair = (
                selector("getPair(address,address)") + encode(["address", "address"], [token0, token1]).hex()
            )
            server.set_result("eth_call", [{"to": FACTORY, "data": get_pair}, hex(at)], word("address", pool))
        for token, (symbol, decimals) in TOKENS.items():
            for name, result in (
                ("symbol", string_result(symbol)),
                ("name", string_result(symbol)),
                ("decimals", word("uint8", decimals)),
            ):
                server.set_result("eth_call", [{"to": token, "data": selector(f"{name}()")}, hex(at)], result)


class Crash(Exception):
    """The sink fails after the reorg's deletes and the new branch are in its transaction."""


@pytest.fixture
async def rpc() -> AsyncIterator[RpcClient]:
    async with ReplayServer(folders=()) as server:
        script_node(server)
        async with RpcClient(server.url, retry=RetryPolicy(attempts=1)) as client:
            yield client


def enricher(rpc: RpcClient, sink: PostgresSink) -> DexEnricher:
    return DexEnricher(
        rpc, sink.pool, registry_from(f"{FACTORY}=uniswap-v2", ""), retry=RetryPolicy(attempts=1)
    )


async def write(enrich: DexEnricher, sink: PostgresSink, batch: Batch, **kw: Any) -> Batch:
    enriched = await enrich([], batch)
    await sink.write(enriched, **kw)
    return enriched


async def rows(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the DEX tables and the blocks, every column but the server's timestamps."""
    out = {}
    for table, order in TABLES.items():
        found = await pool.fetch(f'SELECT * FROM "{table}" ORDER BY {order}')
        out[table] = [{k: v for k, v in r.items() if k not in ("updated_at", "id")} for r in found]
    return out


async def empty(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in (*TABLES, "cursors", "reorgs")))


async def assert_consistent(pool: asyncpg.Pool) -> None:
    """What a user relies on: every trade's pool is stored, and every stored pool's tokens."""
    missing_pools = await pool.fetch(
        "SELECT DISTINCT pool_address FROM dex_trades t WHERE NOT EXISTS"
        " (SELECT 1 FROM pools p WHERE p.address = t.pool_address)"
    )
    missing_tokens = await pool.fetch(
        "SELECT a FROM (SELECT token0 AS a FROM pools UNION SELECT token1 FROM pools) x"
        " WHERE NOT EXISTS (SELECT 1 FROM tokens t WHERE t.address = x.a)"
    )
    assert not missing_pools, f"trades of pools not stored: {[r[0] for r in missing_pools]}"
    assert not missing_tokens, f"pools' tokens not stored: {[r[0] for r in missing_tokens]}"


async def canonical_rows(rpc: RpcClient, sink: PostgresSink) -> dict[str, list[dict[str, Any]]]:
    """The fault-free truth: a run that only ever saw the canonical chain (99a, 100b)."""
    enrich = enricher(rpc, sink)
    await write(enrich, sink, batch_at(ANCESTOR, POOL_B))
    await write(enrich, sink, batch_at(NEW, POOL_B))
    truth = await rows(sink.pool)
    await empty(sink.pool)
    assert [p["address"] for p in truth["pools"]] == [POOL_B]
    assert [t["address"] for t in truth["tokens"]] == [TOKEN_1, TOKEN_2]
    assert [(t["block_hash"], t["pool_address"]) for t in truth["dex_trades"]] == [
        (ANCESTOR.hash, POOL_B),
        (NEW.hash, POOL_B),
    ]
    return truth


async def test_a_reorg_deletes_what_only_the_orphaned_block_needed_like_a_run_that_never_saw_it(
    rpc: RpcClient, sink: PostgresSink
) -> None:
    truth = await canonical_rows(rpc, sink)
    enrich = enricher(rpc, sink)
    await write(enrich, sink, batch_at(ANCESTOR, POOL_B))
    await write(enrich, sink, batch_at(OLD, POOL_A))
    before = await rows(sink.pool)
    assert {p["address"] for p in before["pools"]} == {POOL_A, POOL_B}
    assert {t["address"] for t in before["tokens"]} == {TOKEN_0, TOKEN_1, TOKEN_2}
    await write(enrich, sink, batch_at(NEW, POOL_B, REORG))
    assert await rows(sink.pool) == truth
    await assert_consistent(sink.pool)


@pytest.mark.parametrize("then", ["retried", "restarted"])
async def test_a_crash_inside_the_reorg_write_leaves_the_old_branch_whole_and_the_rewrite_equals_the_truth(
    rpc: RpcClient, sink: PostgresSink, then: str
) -> None:
    truth = await canonical_rows(rpc, sink)
    enrich = enricher(rpc, sink)
    await write(enrich, sink, batch_at(ANCESTOR, POOL_B))
    await write(enrich, sink, batch_at(OLD, POOL_A))
    before = await rows(sink.pool)

    async def crash() -> None:
        raise Crash

    enriched = await enrich([], batch_at(NEW, POOL_B, REORG))
    with pytest.raises(Crash):
        await sink.write(enriched, before_commit=crash)
    assert await rows(sink.pool) == before  # nothing of the reorg happened, the DEX rows included
    await assert_consistent(sink.pool)

    if then == "retried":  # the pipeline writes the same enriched batch again
        await sink.write(enriched)
    else:  # a new process: empty caches, the follower finds the same reorg again
        await write(enricher(rpc, sink), sink, batch_at(NEW, POOL_B, REORG))
    assert await rows(sink.pool) == truth
    await assert_consistent(sink.pool)


async def test_kafka_head_topics_revert_the_pools_and_tokens_the_reorg_deletes(
    rpc: RpcClient, clean_db: DatabaseInfo
) -> None:
    prefix = "dexreorg."
    with start_kafka_dev() as broker:
        options = KafkaOptions(broker.bootstrap, prefix, confirmations=10)  # nothing final: head.* only
        writer = kafka_composite(options, await PostgresSink.connect(clean_db.dsn))
        try:
            enrich = enricher(rpc, writer.postgres)
            for batch in (batch_at(ANCESTOR, POOL_B), batch_at(OLD, POOL_A), batch_at(NEW, POOL_B, REORG)):
                await writer.write(await enrich([], batch))
        finally:
            await writer.close()
        # every head.* topic with the consumer rule = Postgres, record for record (tokens: a subset)
        await assert_kafka_is_postgres(broker.bootstrap, prefix, clean_db.dsn, confirmations=10)
        pools, _ = consumer_rule(raw_messages(broker.bootstrap, f"{prefix}head.pools"))
        tokens, _ = consumer_rule(raw_messages(broker.bootstrap, f"{prefix}head.tokens"))
    assert set(pools) == {POOL_B} and set(tokens) == {TOKEN_1, TOKEN_2}
