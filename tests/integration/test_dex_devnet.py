"""DEX decoding end to end on the seeded devnet: every swap, mint, burn and collect the devnet made is
in dex_trades / dex_liquidity with exact amounts and the right exchange label, and nothing else.

Expected values are computed here, independently: the pools' logs fetched with eth_getLogs, decoded
with eth-abi, labelled from the devnet's manifest (which the indexer never reads)."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal, localcontext
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_utils import keccak

from core.database import DatabaseInfo
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip

pytestmark = pytest.mark.integration


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


V2_SWAP = topic("Swap(address,uint256,uint256,uint256,uint256,address)")
V2_MINT = topic("Mint(address,uint256,uint256)")
V2_BURN = topic("Burn(address,uint256,uint256,address)")
V3_SWAP = topic("Swap(address,address,int256,int256,uint160,uint128,int24)")
V3_MINT = topic("Mint(address,address,int24,int24,uint128,uint256,uint256)")
V3_BURN = topic("Burn(address,int24,int24,uint128,uint256,uint256)")
V3_COLLECT = topic("Collect(address,address,int24,int24,uint128,uint128)")


def venues(manifest: dict[str, Any]) -> tuple[str, str]:
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 2)
    v3 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 3)
    return v2, v3


def exact(raw: int, decimals: int) -> Decimal:
    return Decimal(raw) / (Decimal(10) ** decimals)


def expected_trade(log: dict[str, Any], pool: dict[str, Any]) -> tuple[Any, ...]:
    """Dune's dex.trades sides (spellbook uniswap_compatible_v2_trades / _v3_trades), from eth-abi."""
    data = bytes.fromhex(log["data"][2:])
    taker = "0x" + log["topics"][2][-40:]
    token0, token1 = pool["token0"], pool["token1"]
    if pool["version"] == 2:
        in0, in1, out0, out1 = abi_decode(["uint256"] * 4, data)
        bought, bought_raw = (token0, out0) if out0 != 0 else (token1, out1)
        sold, sold_raw = (token1, in1) if in0 == 0 or out1 == 0 else (token0, in0)
    else:
        a0, a1, *_ = abi_decode(["int256", "int256", "uint160", "uint128", "int24"], data)
        if a0 < 0:
            bought, bought_raw, sold, sold_raw = token0, abs(a0), token1, abs(a1)
        else:
            bought, bought_raw, sold, sold_raw = token1, abs(a1), token0, abs(a0)
    return (log["blockHash"], int(log["logIndex"], 16), pool["label"], pool["address"], taker, sold, bought,
            sold_raw, bought_raw)  # fmt: skip


async def index_devnet(devnet: Devnet, dsn: str) -> PostgresSink:
    sink = await PostgresSink.connect(dsn)
    v2, v3 = venues(devnet.manifest)
    async with RpcClient(devnet.rpc_http) as rpc:
        enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
        follower = Follower(rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=0)
        task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
        try:
            await wait_for_tip(dsn, rpc, timeout=240)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return sink


async def test_every_devnet_swap_and_liquidity_event_exactly(devnet: Devnet, clean_db: DatabaseInfo) -> None:
    sink = await index_devnet(devnet, clean_db.dsn)
    manifest = devnet.manifest
    pools = {p["address"]: p for p in manifest["pools"]}
    decimals = {t["address"]: t["decimals"] for t in manifest["tokens"]}
    logs = devnet.rpc.call(
        "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": sorted(pools)}
    )  # one request: the devnet is small
    try:
        # -- trades ---------------------------------------------------------------------------------
        want = sorted(
            expected_trade(lg, pools[lg["address"]]) for lg in logs if lg["topics"][0] in (V2_SWAP, V3_SWAP)
        )
        rows = await sink.pool.fetch(
            "SELECT block_hash, log_index, exchange, pool_address, taker, token_sold_address,"
            " token_bought_address, amount_sold_raw, amount_bought_raw, amount_sold, amount_bought, price,"
            " maker, protocol, version FROM dex_trades"
        )
        got = sorted(tuple(r)[:9] for r in rows)
        assert got == want
        swaps = manifest["counts"]["swaps"]
        assert len(got) == sum(swaps.values()) and len(got) > 1000
        for label, n in swaps.items():
            assert sum(1 for g in got if g[2] == label) == n, label
        for r in rows:
            d_sold, d_bought = decimals[r["token_sold_address"]], decimals[r["token_bought_address"]]
            assert r["amount_sold"] == exact(int(r["amount_sold_raw"]), d_sold)
            assert r["amount_bought"] == exact(int(r["amount_bought_raw"]), d_bought)
            if r["amount_bought_raw"]:  # price: sold per bought, to 38 significant digits
                with localcontext() as ctx:
                    ctx.prec = 80
                    assert abs(r["price"] / (r["amount_sold"] / r["amount_bought"]) - 1) < Decimal("1e-36")
            v3 = pools[r["pool_address"]]["version"] == 3
            assert r["maker"] == (None if v3 else r["pool_address"]) and r["protocol"] == "uniswap"  # as Dune
            assert r["version"] == str(pools[r["pool_address"]]["version"])
        # -- liquidity ------------------------------------------------------------------------------
        kinds = {V2_MINT: "mint", V2_BURN: "burn", V3_MINT: "mint", V3_BURN: "burn", V3_COLLECT: "collect"}
        want_liq = []
        for lg in logs:
            kind = kinds.get(lg["topics"][0])
            if kind is None:
                continue
            data = bytes.fromhex(lg["data"][2:])
            if lg["topics"][0] in (V2_MINT, V2_BURN):
                a0, a1 = abi_decode(["uint256", "uint256"], data)
            elif lg["topics"][0] == V3_MINT:
                _, _, a0, a1 = abi_decode(["address", "uint128", "uint256", "uint256"], data)
            elif lg["topics"][0] == V3_BURN:
                _, a0, a1 = abi_decode(["uint128", "uint256", "uint256"], data)
            else:
                _, a0, a1 = abi_decode(["address", "uint128", "uint128"], data)
            event_type = "add" if kind == "mint" else "remove"
            want_liq.append((lg["blockHash"], int(lg["logIndex"], 16), kind, event_type, a0, a1,
                             pools[lg["address"]]["label"]))  # fmt: skip
        liq = await sink.pool.fetch(
            "SELECT block_hash, log_index, event, event_type, amount0_raw, amount1_raw, exchange"
            " FROM dex_liquidity"
        )
        assert sorted(tuple(r) for r in liq) == sorted(want_liq)
        counts = manifest["counts"]
        for kind, key in (("mint", "mints"), ("burn", "burns"), ("collect", "collects")):
            assert sum(1 for w in want_liq if w[2] == kind) == sum(counts[key].values()), kind
        # -- pools and tokens, discovered from the chain -------------------------------------------
        stored = {r["address"]: r for r in await sink.pool.fetch("SELECT * FROM pools")}
        assert set(stored) == set(pools)
        for address, p in pools.items():
            row = stored[address]
            assert (row["exchange"], row["token0"], row["token1"], row["factory"]) == (
                p["label"], p["token0"], p["token1"], p["factory"],
            )  # fmt: skip
            assert row["created_block_number"] == p["created_block"]
        tokens = {r["address"]: r for r in await sink.pool.fetch("SELECT * FROM tokens")}
        for t in manifest["tokens"]:
            if t["address"] in tokens:
                assert (tokens[t["address"]]["symbol"], tokens[t["address"]]["decimals"]) == (
                    t["symbol"], t["decimals"],
                )  # fmt: skip
        traded = {r["token_sold_address"] for r in rows} | {r["token_bought_address"] for r in rows}
        assert traded <= set(tokens)
    finally:
        await sink.close()


async def test_mid_history_start_resolves_pools_on_chain_and_unknown_factories_stay_unknown(
    devnet: Devnet, clean_db: DatabaseInfo
) -> None:
    """Start after the pools were created: they are classified by eth_call. Sushiswap's factory is left
    out of the configuration, so its pools are `unknown`, never attributed to Uniswap."""
    manifest = devnet.manifest
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["label"] == "uniswap-v2")
    _, v3 = venues(manifest)
    first = manifest["setup_head"] + 1
    sink = await PostgresSink.connect(clean_db.dsn)
    try:
        async with RpcClient(devnet.rpc_http) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry_from(v2, v3))
            follower = Follower(rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=first)
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=240)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        pools = {p["address"]: p for p in manifest["pools"]}
        stored = {r["address"]: r for r in await sink.pool.fetch("SELECT * FROM pools")}
        assert set(stored) == set(pools)
        for address, p in pools.items():
            row = stored[address]
            assert row["created_block_number"] is None  # resolved, not seen created
            assert (row["token0"], row["token1"]) == (p["token0"], p["token1"])
            if p["label"] == "sushiswap":
                assert (row["protocol"], row["exchange"]) == ("unknown", "unknown")
            else:
                assert (row["protocol"], row["exchange"], row["factory"]) == (
                    "uniswap",
                    p["label"],
                    p["factory"],
                )
        assert enrich.counts["pool.unknown"] == sum(1 for p in pools.values() if p["label"] == "sushiswap")
        by_exchange = dict(
            await sink.pool.fetch("SELECT exchange, count(*) FROM dex_trades GROUP BY exchange")  # type: ignore[arg-type]
        )
        assert "sushiswap" not in by_exchange and by_exchange["unknown"] > 0
        assert by_exchange["uniswap-v2"] > 0 and by_exchange["uniswap-v3"] > 0
    finally:
        await sink.close()
