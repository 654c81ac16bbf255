"""Balancer v2 end to end on a real Vault: the Vault, its Authorizer and the WeightedPoolFactory of
Balancer's own 2021-04-18 deployment (npm ``@balancer-labs/v2-deployments`` artifacts) on a fresh
anvil; a 2-token and a 3-token weighted pool, initial and later joins, an exit, single swaps and a
two-hop batchSwap, one transaction per block. Followed into Postgres, then a 2-block reorg.

The truth is the Vault's own books, read from the node: ``getPoolTokens(poolId)`` at the block before
and at the block of each event gives the pool's balance change per token, which is what a swap hop
sold (in) and bought (out), and what a join or exit added or removed. Nothing of dexnode decodes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from devnet.singletons import BalancerV2
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from protocols.registry import registry_of
from records import DexLiquidity, Pool
from records.chain import TokenAmount
from sinks.postgres import PostgresSink
from sinks.postgres_read import StoredChain
from tests.chain_check import wait_for_tip

pytestmark = pytest.mark.integration

SWAP = "0x" + keccak(text="Swap(bytes32,address,address,uint256,uint256)").hex()
BALANCE_CHANGED = "0x" + keccak(text="PoolBalanceChanged(bytes32,address,address[],int256[],uint256[])").hex()


@dataclass
class BalancerDevnet:
    node: AnvilProcess
    rpc: Rpc
    balancer: BalancerV2

    @property
    def vault(self) -> str:
        return self.balancer.vault


@pytest.fixture
def balancer_devnet(tmp_path: Path) -> Iterator[BalancerDevnet]:
    node = start_anvil(None, tmp_path / "anvil.log")
    rpc = Rpc(node.rpc_http)
    try:
        rpc.call("evm_setAutomine", False)
        balancer = BalancerV2(rpc)
        balancer.activity()
        yield BalancerDevnet(node, rpc, balancer)
    finally:
        rpc.close()
        node.stop()


def rpc_head(devnet: BalancerDevnet) -> int:
    return devnet.rpc.block_number()


def books(devnet: BalancerDevnet, pool_id: str, block: int) -> dict[str, int]:
    out = devnet.rpc.eth_call(
        devnet.vault, calldata("getPoolTokens(bytes32)", bytes.fromhex(pool_id[2:])), hex(block)
    )
    tokens, balances, _ = decode(["address[]", "uint256[]", "uint256"], bytes.fromhex(out[2:]))
    return {t.lower(): b for t, b in zip(tokens, balances, strict=True)}


def expected(devnet: BalancerDevnet) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Every trade hop and join/exit of the canonical chain, from the Vault's pool balances."""
    logs = devnet.rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": devnet.vault})
    trades, changes = set(), set()
    for lg in logs:
        if lg["topics"][0] not in (SWAP, BALANCE_CHANGED):
            continue
        pool_id, block = lg["topics"][1], int(lg["blockNumber"], 16)
        assert (
            sum(1 for x in logs if x["blockNumber"] == lg["blockNumber"] and x["topics"][1] == pool_id) == 1
        )
        before, after = books(devnet, pool_id, block - 1), books(devnet, pool_id, block)
        moved = {t: after[t] - before.get(t, 0) for t in after}
        key = (lg["blockHash"], int(lg["logIndex"], 16), pool_id)
        if lg["topics"][0] == SWAP:
            (sold,) = [(t, d) for t, d in moved.items() if d > 0]
            (bought,) = [(t, -d) for t, d in moved.items() if d < 0]
            trades.add((*key, *sold, *bought))
        else:
            kind = "add" if all(d >= 0 for d in moved.values()) else "remove"
            changes.add((*key, kind, tuple(sorted((t, abs(d)) for t, d in moved.items()))))
    return trades, changes


async def stored(sink: PostgresSink) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    trades = await sink.pool.fetch(
        "SELECT block_hash, log_index, pool_address, token_sold_address, amount_sold_raw,"
        " token_bought_address, amount_bought_raw FROM dex_trades WHERE protocol = 'balancer'"
    )
    changes = await sink.pool.fetch(
        "SELECT block_hash, log_index, pool_address, event_type, amounts FROM dex_liquidity"
        " WHERE protocol = 'balancer'"
    )
    got_trades = {tuple(int(v) if not isinstance(v, str) else v for v in r) for r in trades}
    got_changes = set()
    for r in changes:
        amounts = json.loads(r["amounts"]) if isinstance(r["amounts"], str) else r["amounts"]
        listed = tuple(sorted((a["token"], int(a["amount_raw"])) for a in amounts))
        got_changes.add((r["block_hash"], r["log_index"], r["pool_address"], r["event_type"], listed))
    return got_trades, got_changes


async def test_every_balancer_swap_hop_join_and_exit_exactly_including_after_a_reorg(
    balancer_devnet: BalancerDevnet, clean_db: DatabaseInfo
) -> None:
    devnet = balancer_devnet
    sink = await PostgresSink.connect(clean_db.dsn)
    registry = registry_of({"balancer_v2_vaults": f"{devnet.vault}=devnet-balancer"})
    try:
        async with RpcClient(devnet.node.rpc_http) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry)
            follower = Follower(rpc, HeadStream(devnet.node.rpc_ws, rpc), start=[], from_block=0)
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=120)
                want_trades, want_changes = expected(devnet)
                assert len(want_trades) == 5 and len(want_changes) == 4  # a batchSwap is two trades
                assert await stored(sink) == (want_trades, want_changes)
                pools = await sink.pool.fetch("SELECT address, tokens, contract, exchange FROM pools")
                assert sorted((r["address"], tuple(r["tokens"])) for r in pools) == sorted(
                    (pid, tuple(tokens)) for pid, tokens in devnet.balancer.pools
                )
                assert {(r["contract"], r["exchange"]) for r in pools} == {(devnet.vault, "devnet-balancer")}
                # read back as records (what confirmed.* and the API get): N tokens survive the round trip
                batch = await StoredChain(sink.pool).batch_between(0, rpc_head(devnet))
                read = {(x.block_hash, x.log_index): x for x in batch.of(DexLiquidity)}
                for block_hash, log_index, pool_id, kind, listed in want_changes:
                    record = read[(block_hash, log_index)]
                    assert (record.pool_address, record.event_type) == (pool_id, kind)
                    assert tuple(sorted((a.token, a.amount_raw) for a in record.amounts)) == listed
                    assert all(isinstance(a, TokenAmount) and a.amount is not None for a in record.amounts)
                assert {p.address: p.tokens for p in batch.of(Pool)} == dict(
                    (pid, tuple(tokens)) for pid, tokens in devnet.balancer.pools
                )

                # a 2-block reorg: the exit and the last swap replaced by two other swaps
                a, u, _ = devnet.balancer.tokens
                replacements = [
                    [devnet.balancer.swap_request(0, a, u, (i + 1) * 10**20), i] for i in range(2)
                ]
                devnet.rpc.call("anvil_reorg", 2, replacements)
                await wait_for_tip(clean_db.dsn, rpc, timeout=120)
                after_trades, after_changes = expected(devnet)
                assert len(after_trades - want_trades) == 2 and len(want_trades - after_trades) == 1
                assert len(after_changes) == 3 and after_changes < want_changes
                assert await stored(sink) == (after_trades, after_changes)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await sink.close()


async def test_pools_registered_before_the_indexed_blocks_are_asked_of_the_vault(
    balancer_devnet: BalancerDevnet, clean_db: DatabaseInfo
) -> None:
    """Following from the first swap's block: no PoolRegistered/TokensRegistered is seen, so both pools
    are classified by the Vault's getPoolTokens; every later event is still stored exactly."""
    devnet = balancer_devnet
    want_trades, want_changes = expected(devnet)
    number = lambda block_hash: int(devnet.rpc.call("eth_getBlockByHash", block_hash, False)["number"], 16)  # noqa: E731
    start = min(number(t[0]) for t in want_trades)
    blocks = {
        devnet.rpc.call("eth_getBlockByNumber", hex(n), False)["hash"]
        for n in range(start, rpc_head(devnet) + 1)
    }
    sink = await PostgresSink.connect(clean_db.dsn)
    registry = registry_of({"balancer_v2_vaults": f"{devnet.vault}=devnet-balancer"})
    try:
        async with RpcClient(devnet.node.rpc_http) as rpc:
            enrich = DexEnricher(rpc, sink.pool, registry)
            follower = Follower(rpc, HeadStream(devnet.node.rpc_ws, rpc), start=[], from_block=start)
            task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=120)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        got_trades, got_changes = await stored(sink)
        assert got_trades == {t for t in want_trades if t[0] in blocks} and len(got_trades) == 5
        assert got_changes == {c for c in want_changes if c[0] in blocks} and len(got_changes) == 2
        pools = await sink.pool.fetch("SELECT address, tokens, created_block_number FROM pools")
        assert sorted((r["address"], tuple(r["tokens"]), r["created_block_number"]) for r in pools) == sorted(
            (pid, tuple(tokens), None) for pid, tokens in devnet.balancer.pools
        )
        assert enrich.counts["pool.devnet-balancer"] == 2
    finally:
        await sink.close()
