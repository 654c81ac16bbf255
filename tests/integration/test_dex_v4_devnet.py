"""Uniswap v4 end to end on a real PoolManager: v4-core's compiled PoolManager, PoolSwapTest and
PoolModifyLiquidityTest (npm ``@uniswap/v4-core``) on a fresh anvil, three pools (two ERC-20s; native
ETH; a dynamic-fee pool with a hook address), swaps both ways and liquidity added and removed, one
transaction per block. Followed into Postgres, then a 3-block reorg replaces the newest blocks.

The truth is the PoolManager's own balances, read from the node: in a block with one swap, the pool's
two currencies moved into and out of the PoolManager by exactly what was sold and bought; in a block
with one liquidity change, by exactly the amounts added (or removed). Nothing of dexnode decodes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode
from eth_utils import keccak

from core.database import DatabaseInfo
from devnet.abi import calldata
from devnet.anvil import AnvilProcess, start_anvil
from devnet.rpc import Rpc
from devnet.singletons import DYNAMIC_FEE, HOOK, NATIVE, UniswapV4
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from protocols.registry import registry_of
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip

pytestmark = pytest.mark.integration

SWAP = "0x" + keccak(text="Swap(bytes32,address,int128,int128,uint160,uint128,int24,uint24)").hex()
MODIFY = "0x" + keccak(text="ModifyLiquidity(bytes32,address,int24,int24,int256,bytes32)").hex()
INITIALIZE = (
    "0x" + keccak(text="Initialize(bytes32,address,address,uint24,int24,address,uint160,int24)").hex()
)


@dataclass
class V4Devnet:
    node: AnvilProcess
    rpc: Rpc
    v4: UniswapV4


@pytest.fixture
def v4_devnet(tmp_path: Path) -> Iterator[V4Devnet]:
    node = start_anvil(None, tmp_path / "anvil.log")
    rpc = Rpc(node.rpc_http)
    try:
        rpc.call("evm_setAutomine", False)
        v4 = UniswapV4(rpc)
        v4.activity()
        yield V4Devnet(node, rpc, v4)
    finally:
        rpc.close()
        node.stop()


def holdings(rpc: Rpc, manager: str, currency: str, block: int) -> int:
    if currency == NATIVE:
        return int(rpc.call("eth_getBalance", manager, hex(block)), 16)
    return int(rpc.eth_call(currency, calldata("balanceOf(address)", manager), hex(block)), 16)


def expected(devnet: V4Devnet) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Every v4 trade and liquidity change of the canonical chain, from the PoolManager's balances."""
    rpc, manager = devnet.rpc, devnet.v4.manager
    head = rpc.block_number()
    logs = rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head), "address": manager})
    currencies = {}
    for lg in logs:
        if lg["topics"][0] == INITIALIZE:
            currencies[lg["topics"][1]] = tuple("0x" + t[-40:] for t in lg["topics"][2:4])
    trades, changes = set(), set()
    for lg in logs:
        if lg["topics"][0] not in (SWAP, MODIFY):
            continue
        block = int(lg["blockNumber"], 16)
        assert sum(1 for x in logs if x["blockNumber"] == lg["blockNumber"]) == 1  # one per block
        c0, c1 = currencies[lg["topics"][1]]
        d0, d1 = (holdings(rpc, manager, c, block) - holdings(rpc, manager, c, block - 1) for c in (c0, c1))
        key = (lg["blockHash"], int(lg["logIndex"], 16), lg["topics"][1])
        if lg["topics"][0] == SWAP:
            assert (d0 > 0) != (d1 > 0)  # one currency in, the other out
            sold, bought = ((c0, d0), (c1, -d1)) if d0 > 0 else ((c1, d1), (c0, -d0))
            trades.add((*key, sold[0], sold[1], bought[0], bought[1]))
        else:
            (delta,) = decode(["int256"], bytes.fromhex(lg["data"][2 + 128 : 2 + 192]))
            changes.add((*key, "add" if delta > 0 else "remove", c0, c1, abs(d0), abs(d1)))
    return trades, changes


async def stored(sink: PostgresSink) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    trades = await sink.pool.fetch(
        "SELECT block_hash, log_index, pool_address, token_sold_address, amount_sold_raw,"
        " token_bought_address, amount_bought_raw FROM dex_trades WHERE version = '4'"
    )
    changes = await sink.pool.fetch(
        "SELECT block_hash, log_index, pool_address, event_type, token0, token1, amount0_raw, amount1_raw"
        " FROM dex_liquidity WHERE version = '4'"
    )
    norm = lambda rows: {tuple(int(v) if not isinstance(v, str) else v for v in r) for r in rows}  # noqa: E731
    return norm(trades), norm(changes)


async def test_every_v4_swap_and_liquidity_change_exactly_including_after_a_reorg(
    v4_devnet: V4Devnet, clean_db: DatabaseInfo
) -> None:
    devnet = v4_devnet
    sink = await PostgresSink.connect(clean_db.dsn)
    registry = registry_of({"uniswap_v4_pool_managers": f"{devnet.v4.manager}=devnet-v4"})
    try:
        async with RpcClient(devnet.node.rpc_http) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry)
            follower = Follower(rpc, HeadStream(devnet.node.rpc_ws, rpc), start=[], from_block=0)
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=120)
                want_trades, want_changes = expected(devnet)
                assert len(want_trades) == 9 and len(want_changes) == 12
                assert await stored(sink) == (want_trades, want_changes)
                pools = await sink.pool.fetch("SELECT address, hooks, fee, contract, tokens FROM pools")
                assert {(r["hooks"], r["fee"]) for r in pools} == {
                    (NATIVE, 3000),
                    (NATIVE, 500),
                    (HOOK, DYNAMIC_FEE),
                }
                assert {r["contract"] for r in pools} == {devnet.v4.manager}
                eth = await sink.pool.fetchrow(
                    "SELECT symbol, decimals, source FROM tokens WHERE address = $1", NATIVE
                )
                assert tuple(eth) == ("ETH", 18, "native")

                # a 3-block reorg: the newest blocks replaced by other swaps of the native-ETH pool
                key = devnet.v4.keys[1]
                amounts = (-(10**17), -(2 * 10**17), -(3 * 10**17))
                replacements = [[devnet.v4.swap_request(key, True, a), i] for i, a in enumerate(amounts)]
                devnet.rpc.call("anvil_reorg", 3, replacements)
                await wait_for_tip(clean_db.dsn, rpc, timeout=120)
                after_trades, after_changes = expected(devnet)
                # orphaned: the dynamic-fee pool's last swap and its last two liquidity changes
                assert len(after_trades - want_trades) == 3 and len(want_trades - after_trades) == 1
                assert len(after_changes) == len(want_changes) - 2 and after_changes < want_changes
                assert await stored(sink) == (after_trades, after_changes)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await sink.close()
