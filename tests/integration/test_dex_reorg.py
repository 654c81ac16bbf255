"""DEX tables after reorgs on the real devnet: follow it while a new pool is created, traded, orphaned
by a reorg (its creation block included), created again on the new branch and traded, and a last reorg
replaces the newest block. SushiSwap's factory is left out of the configuration, so its pools are
classified by ``eth_call`` (protocol ``unknown``, no creation block); one of them is created and traded
only on the orphaned branch, and must not survive it.

Afterwards ``pools``, ``tokens``, ``dex_trades`` and ``dex_liquidity`` equal an independent decode of
the canonical chain: ``eth_getLogs`` on the node, decoded here with eth-abi (not with ``decoders/`` or
``protocols/``), venues labelled from the devnet's manifest, token metadata read with ``eth_call``
here. Nothing from an orphaned block is left."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest
from eth_abi import decode as abi_decode

from core.database import DatabaseInfo
from devnet import Devnet
from devnet.abi import calldata
from devnet.miner import Miner, Tx
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip
from tests.integration.test_dex_devnet import (
    V2_BURN,
    V2_MINT,
    V2_SWAP,
    V3_BURN,
    V3_COLLECT,
    V3_MINT,
    V3_SWAP,
    topic,
    venues,
)

pytestmark = pytest.mark.integration

PAIR_CREATED = topic("PairCreated(address,address,address,uint256)")
POOL_CREATED = topic("PoolCreated(address,address,uint24,int24,address)")
V2_VENUE_FEE = 3000  # the fee the venue configuration gives v2 pools (dexnode's default)
DEADLINE = 2**40
NEW_PAIR = ("GEM", "USDC")  # no uniswap-v2 or sushiswap pair on the devnet yet


def address_topic(value: str) -> str:
    return "0x" + value[-40:]


def new_pool_with_trades(devnet: Devnet, venue: str) -> int:
    """Create the ``NEW_PAIR`` pair of ``venue`` through its router (PairCreated + Mint) in one block,
    then swap through it in the next; → the creation block."""
    dep = devnet.deployment
    devnet.rpc.call("evm_setAutomine", False)  # the miner puts each list of transactions in one block
    try:
        return _create_and_swap(devnet, Miner(devnet.rpc, [dep.deployer, *dep.users]), venue)
    finally:
        devnet.rpc.call("evm_setAutomine", True)


def _create_and_swap(devnet: Devnet, miner: Miner, venue: str) -> int:
    dep = devnet.deployment
    router = dep.router(venue)
    a, b = dep.tokens[NEW_PAIR[0]], dep.tokens[NEW_PAIR[1]]
    add = calldata(
        "addLiquidity(address,address,uint256,uint256,uint256,uint256,address,uint256)",
        a.address, b.address, a.raw(100_000), b.raw(100_000), 0, 0, dep.deployer, DEADLINE,
    )  # fmt: skip
    created = miner.mine([Tx(dep.deployer, router, add, gas=5_000_000)], strict=True)
    swap = calldata(
        "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
        a.raw(1_000), 0, [a.address, b.address], dep.users[0], DEADLINE,
    )  # fmt: skip
    miner.mine([Tx(dep.users[0], router, swap, gas=400_000)], strict=True)
    return created.number


def configured(devnet: Devnet) -> tuple[str, str]:
    """Venue settings without SushiSwap."""
    v2 = ",".join(
        f"{e['factory']}={e['label']}" for e in devnet.manifest["exchanges"] if e["label"] == "uniswap-v2"
    )
    return v2, venues(devnet.manifest)[1]


def expected_pools(
    devnet: Devnet, logs: list[dict[str, Any]], emitters: set[str]
) -> dict[str, tuple[Any, ...]]:
    """Pools from the canonical creation events; those of the unconfigured SushiSwap factory as
    classified pools (``unknown``, no fee, no creation block), and only if they emitted an event."""
    labels = {e["factory"]: (e["label"], str(e["version"])) for e in devnet.manifest["exchanges"]}
    pools = {}
    for lg in logs:
        label, version = labels[lg["address"]]
        data = bytes.fromhex(lg["data"][2:])
        token0, token1 = address_topic(lg["topics"][1]), address_topic(lg["topics"][2])
        if lg["topics"][0] == PAIR_CREATED:
            pair, _ = abi_decode(["address", "uint256"], data)
            fee, tick_spacing = V2_VENUE_FEE, None
        else:
            tick_spacing, pair = abi_decode(["int24", "address"], data)
            fee = int(lg["topics"][3], 16)
        address = pair.lower()
        if label == "sushiswap":
            if address in emitters:
                pools[address] = (address, "unknown", "2", "unknown", lg["address"], token0, token1)
                pools[address] += (None,) * 6
            continue
        pools[address] = (
            address, "uniswap", version, label, lg["address"], token0, token1, fee, tick_spacing,
            int(lg["blockNumber"], 16), lg["blockHash"], lg["transactionHash"], int(lg["logIndex"], 16),
        )  # fmt: skip
    return pools


def expected_events(
    logs: list[dict[str, Any]], pools: dict[str, tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(trades, liquidity) rows, Dune's dex.trades sides (v2: amount0Out/amount1Out bought,
    amount1In sold unless both amount0In and amount1Out are non-zero; v3: the negative amount bought)."""
    trades, liquidity = [], []
    for lg in logs:
        pool = pools[lg["address"]]
        address, token0, token1, label = pool[0], pool[5], pool[6], pool[3]
        keys = (int(lg["blockNumber"], 16), lg["blockHash"], lg["transactionHash"], int(lg["logIndex"], 16))
        data = bytes.fromhex(lg["data"][2:])
        t0 = lg["topics"][0]
        if t0 == V2_SWAP:
            in0, in1, out0, out1 = abi_decode(["uint256"] * 4, data)
            bought, bought_raw = (token0, out0) if out0 else (token1, out1)
            sold, sold_raw = (token1, in1) if in0 == 0 or out1 == 0 else (token0, in0)
            taker, maker = address_topic(lg["topics"][2]), address
        elif t0 == V3_SWAP:
            a0, a1, *_ = abi_decode(["int256", "int256", "uint160", "uint128", "int24"], data)
            if a0 < 0:
                bought, bought_raw, sold, sold_raw = token0, -a0, token1, abs(a1)
            else:
                bought, bought_raw, sold, sold_raw = token1, abs(a1), token0, a0
            taker, maker = address_topic(lg["topics"][2]), None
        else:
            if t0 in (V2_MINT, V2_BURN):
                amounts = abi_decode(["uint256", "uint256"], data)
            elif t0 == V3_MINT:
                amounts = abi_decode(["address", "uint128", "uint256", "uint256"], data)[2:]
            elif t0 == V3_BURN:
                amounts = abi_decode(["uint128", "uint256", "uint256"], data)[1:]
            elif t0 == V3_COLLECT:
                amounts = abi_decode(["address", "uint128", "uint128"], data)[1:]
            else:
                continue  # Sync, Initialize, Flash, ...
            event = {V2_MINT: "mint", V3_MINT: "mint", V2_BURN: "burn", V3_BURN: "burn"}.get(t0, "collect")
            kind = "add" if event == "mint" else "remove"
            liquidity.append((*keys, address, label, event, kind, token0, token1, *amounts))
            continue
        trades.append((*keys, address, label, taker, maker, bought, sold, bought_raw, sold_raw))
    return sorted(trades), sorted(liquidity)


def token_metadata(devnet: Devnet, address: str) -> tuple[Any, ...]:
    out: list[Any] = [address]
    for name, abi_type in (("symbol", "string"), ("name", "string"), ("decimals", "uint8")):
        result = devnet.rpc.call("eth_call", {"to": address, "data": calldata(f"{name}()")}, "latest")
        out.append(abi_decode([abi_type], bytes.fromhex(result[2:]))[0])
    return tuple(out)


async def check_against_chain(devnet: Devnet, db: asyncpg.Pool, orphaned: list[str]) -> None:
    rpc = devnet.rpc
    factories = [e["factory"] for e in devnet.manifest["exchanges"]]
    created = rpc.call(
        "eth_getLogs",
        {
            "fromBlock": "0x0",
            "toBlock": "latest",
            "address": factories,
            "topics": [[PAIR_CREATED, POOL_CREATED]],
        },
    )
    pairs = {
        "0x" + lg["data"][26:66] if lg["topics"][0] == PAIR_CREATED else "0x" + lg["data"][-40:]
        for lg in created
    }
    logs = rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": sorted(pairs)})
    pools = expected_pools(devnet, created, {lg["address"] for lg in logs})
    want_trades, want_liquidity = expected_events(logs, pools)
    got_pools = {
        r["address"]: tuple(r)
        for r in await db.fetch(
            "SELECT address, protocol, version, exchange, factory, token0, token1, fee, tick_spacing,"
            " created_block_number, created_block_hash, created_transaction_hash, created_log_index"
            " FROM pools"
        )
    }
    assert got_pools == pools
    got_trades = sorted(
        tuple(r)
        for r in await db.fetch(
            "SELECT block_number, block_hash, transaction_hash, log_index, pool_address, exchange, taker,"
            " maker, token_bought_address, token_sold_address, amount_bought_raw, amount_sold_raw"
            " FROM dex_trades"
        )
    )
    assert got_trades == want_trades
    got_liquidity = sorted(
        tuple(r)
        for r in await db.fetch(
            "SELECT block_number, block_hash, transaction_hash, log_index, pool_address, exchange, event,"
            " event_type, token0, token1, amount0_raw, amount1_raw FROM dex_liquidity"
        )
    )
    assert got_liquidity == want_liquidity
    tokens = {
        r["address"]: tuple(r) for r in await db.fetch("SELECT address, symbol, name, decimals FROM tokens")
    }
    wanted_tokens = {t for p in pools.values() for t in (p[5], p[6])}
    assert set(tokens) == wanted_tokens
    for address in wanted_tokens:
        assert tokens[address] == token_metadata(devnet, address)
    for table, column in (
        ("dex_trades", "block_hash"),
        ("dex_liquidity", "block_hash"),
        ("pools", "created_block_hash"),
    ):
        n = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1)", orphaned)
        assert n == 0, table


async def test_dex_tables_after_reorgs_equal_the_canonical_chain(
    fresh_devnet: Devnet, clean_db: DatabaseInfo
) -> None:
    devnet = fresh_devnet
    new_tokens = [devnet.deployment.tokens[symbol].address for symbol in NEW_PAIR]
    sink = await PostgresSink.connect(clean_db.dsn)
    v2, v3 = configured(devnet)
    try:
        async with RpcClient(devnet.rpc_http) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
            follower = Follower(
                rpc, HeadStream(devnet.rpc_ws, rpc, silence_timeout=5), start=[], from_block=0
            )
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=240)
                first_creation = await asyncio.to_thread(new_pool_with_trades, devnet, "uniswap-v2")
                await asyncio.to_thread(new_pool_with_trades, devnet, "sushiswap")
                await wait_for_tip(clean_db.dsn, rpc)
                before = await sink.pool.fetchval(
                    "SELECT created_block_number FROM pools WHERE created_block_number = $1", first_creation
                )
                assert before == first_creation  # the new pools were indexed on the old branch
                assert (
                    await sink.pool.fetchval(
                        "SELECT count(*) FROM pools WHERE token0 = ANY($1) AND token1 = ANY($1)", new_tokens
                    )
                    == 2
                )
                depth = devnet.head()[0] - first_creation + 1
                first = await asyncio.to_thread(devnet.reorg, depth)  # orphans the pool's creation block
                await wait_for_tip(clean_db.dsn, rpc)
                second_creation = await asyncio.to_thread(new_pool_with_trades, devnet, "uniswap-v2")
                await wait_for_tip(clean_db.dsn, rpc)
                last = await asyncio.to_thread(devnet.reorg, 1)  # replaces the block of the new swap
                await wait_for_tip(clean_db.dsn, rpc)
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert second_creation > first.common_ancestor
        orphaned = [h.lower() for h in (*first.old_hashes, *last.old_hashes)]
        await check_against_chain(devnet, sink.pool, orphaned)
        reorgs = await sink.pool.fetchval("SELECT count(*) FROM reorgs")
        assert reorgs == 2
    finally:
        await sink.close()
