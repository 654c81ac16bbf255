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
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_utils import keccak

from core.database import DatabaseInfo
from devnet.abi import calldata
from devnet.anvil import AnvilProcess, find_node_modules, start_anvil
from devnet.rpc import Rpc
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from protocols.registry import registry_of
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip

pytestmark = pytest.mark.integration

NATIVE = "0x" + "00" * 20
HOOK = "0x" + "00" * 18 + "4000"  # no permission bits set: valid only for a dynamic-fee pool
DYNAMIC_FEE = 0x800000
MIN_PRICE_LIMIT, MAX_PRICE_LIMIT = 4295128740, 1461446703485210103287273052203988822378723970341
KEY = "(address,address,uint24,int24,address)"
SWAP = "0x" + keccak(text="Swap(bytes32,address,int128,int128,uint160,uint128,int24,uint24)").hex()
MODIFY = "0x" + keccak(text="ModifyLiquidity(bytes32,address,int24,int24,int256,bytes32)").hex()
INITIALIZE = (
    "0x" + keccak(text="Initialize(bytes32,address,address,uint24,int24,address,uint160,int24)").hex()
)


def bytecode(name: str) -> str:
    path = find_node_modules() / "@uniswap" / "v4-core" / "out" / name
    return str(json.loads(path.read_text())["bytecode"]["object"])


class Chain:
    """Sends each transaction from an unlocked anvil account and mines it alone in its block."""

    def __init__(self, rpc: Rpc) -> None:
        self.rpc = rpc
        self.user = rpc.call("eth_accounts")[0].lower()

    def send(self, to: str | None, data: str, value: int = 0) -> dict[str, Any]:
        tx = {"from": self.user, "data": data, "value": hex(value), "gas": hex(8_000_000)}
        if to is not None:
            tx["to"] = to
        tx_hash = self.rpc.call("eth_sendTransaction", tx)
        self.rpc.call("evm_mine")
        receipt: dict[str, Any] = self.rpc.call("eth_getTransactionReceipt", tx_hash)
        assert receipt["status"] == "0x1", receipt
        return receipt

    def deploy(self, code: str, types: list[str], *args: Any) -> str:
        return str(self.send(None, code + encode(types, list(args)).hex())["contractAddress"]).lower()


class V4Devnet:
    def __init__(self, node: AnvilProcess, rpc: Rpc) -> None:
        self.node, self.rpc, self.chain = node, rpc, Chain(rpc)
        chain = self.chain
        self.manager = chain.deploy(bytecode("PoolManager.sol/PoolManager.json"), ["address"], chain.user)
        self.swapper = chain.deploy(bytecode("PoolSwapTest.sol/PoolSwapTest.json"), ["address"], self.manager)
        self.lp = chain.deploy(
            bytecode("PoolModifyLiquidityTest.sol/PoolModifyLiquidityTest.json"), ["address"], self.manager
        )
        erc20 = bytecode("mocks/MockERC20.sol/MockERC20.json")
        made = [
            chain.deploy(erc20, ["string", "string", "uint8"], n, n, d) for n, d in (("AAA", 18), ("USDX", 6))
        ]
        self.token0, self.token1 = sorted(made)
        for token in made:
            chain.send(token, calldata("mint(address,uint256)", chain.user, 10**40))
            for spender in (self.swapper, self.lp):
                chain.send(token, calldata("approve(address,uint256)", spender, 2**256 - 1))
        self.keys = [
            (self.token0, self.token1, 3000, 60, NATIVE),
            (NATIVE, self.token1, 500, 10, NATIVE),
            (self.token0, self.token1, DYNAMIC_FEE, 60, HOOK),
        ]
        for key in self.keys:
            chain.send(self.manager, calldata(f"initialize({KEY},uint160)", key, 2**96))

    def modify(self, key: tuple[Any, ...], lower: int, upper: int, delta: int, salt: int) -> None:
        params = (lower, upper, delta, salt.to_bytes(32, "big"))
        value = 10**22 if key[0] == NATIVE and delta > 0 else 0
        data = calldata(f"modifyLiquidity({KEY},(int24,int24,int256,bytes32),bytes)", key, params, b"")
        self.chain.send(self.lp, data, value)

    def swap(self, key: tuple[Any, ...], zero_for_one: bool, amount: int) -> None:
        """``amount`` < 0: exact input of ``-amount``; > 0: exact output."""
        limit = MIN_PRICE_LIMIT if zero_for_one else MAX_PRICE_LIMIT
        value = 10**21 if key[0] == NATIVE and zero_for_one else 0
        data = calldata(
            f"swap({KEY},(bool,int256,uint160),(bool,bool),bytes)",
            key,
            (zero_for_one, amount, limit),
            (False, False),
            b"",
        )
        self.chain.send(self.swapper, data, value)

    def activity(self) -> None:
        for i, key in enumerate(self.keys):
            spacing = key[3]
            self.modify(key, -100 * spacing, 100 * spacing, 10**21, salt=10 * i + 1)
            self.modify(key, -10 * spacing, 30 * spacing, 5 * 10**20, salt=10 * i + 2)
            self.swap(key, True, -(10**18))
            self.swap(key, False, -3 * 10**17)
            self.swap(key, True, 10**16)  # exact output
            self.modify(key, 20 * spacing, 40 * spacing, 10**19, salt=10 * i + 3)  # out of range: one token
            self.modify(
                key, 20 * spacing, 40 * spacing, -(10**19), salt=10 * i + 3
            )  # removed at once: no fees


@pytest.fixture
def v4_devnet(tmp_path: Path) -> Iterator[V4Devnet]:
    node = start_anvil(None, tmp_path / "anvil.log")
    rpc = Rpc(node.rpc_http)
    try:
        rpc.call("evm_setAutomine", False)
        devnet = V4Devnet(node, rpc)
        devnet.activity()
        yield devnet
    finally:
        rpc.close()
        node.stop()


def holdings(rpc: Rpc, manager: str, currency: str, block: int) -> int:
    if currency == NATIVE:
        return int(rpc.call("eth_getBalance", manager, hex(block)), 16)
    return int(rpc.eth_call(currency, calldata("balanceOf(address)", manager), hex(block)), 16)


def expected(devnet: V4Devnet) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Every v4 trade and liquidity change of the canonical chain, from the PoolManager's balances."""
    rpc, manager = devnet.rpc, devnet.manager
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
    registry = registry_of({"uniswap_v4_pool_managers": f"{devnet.manager}=devnet-v4"})
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
                assert {r["contract"] for r in pools} == {devnet.manager}
                eth = await sink.pool.fetchrow(
                    "SELECT symbol, decimals, source FROM tokens WHERE address = $1", NATIVE
                )
                assert tuple(eth) == ("ETH", 18, "native")

                # a 3-block reorg: the newest blocks replaced by other swaps of the native-ETH pool
                key = devnet.keys[1]
                replacements = []
                for offset, amount in enumerate((-(10**17), -(2 * 10**17), -(3 * 10**17))):
                    data = calldata(f"swap({KEY},(bool,int256,uint160),(bool,bool),bytes)", key,
                                    (True, amount, MIN_PRICE_LIMIT), (False, False), b"")  # fmt: skip
                    tx = {"from": devnet.chain.user, "to": devnet.swapper, "data": data, "value": hex(10**21),
                          "gas": hex(8_000_000)}  # fmt: skip
                    replacements.append([tx, offset])
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
