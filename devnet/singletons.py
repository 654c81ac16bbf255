"""Uniswap v4 and Balancer v2 on an anvil chain: the singleton DEXes, deployed from their own compiled
artifacts (npm ``@uniswap/v4-core`` ``out/``, ``@balancer-labs/v2-deployments`` tasks) with a little
seeded activity, one transaction per block so every block's balance changes belong to one event.

``UniswapV4`` deploys the PoolManager with v4-core's test routers (PoolSwapTest,
PoolModifyLiquidityTest) and three pools: two ERC-20s, native ETH / ERC-20, and a dynamic-fee pool
with a hook address (no permission bits, so the PoolManager calls nothing). ``BalancerV2`` deploys the
2021-04-18 Authorizer, Vault and WeightedPoolFactory, a 2-token and a 3-token weighted pool. Both send
from anvil's first unlocked account and mine each transaction alone (``Sender``).
"""

from __future__ import annotations

import json
from typing import Any

from eth_abi import encode

from devnet.abi import calldata
from devnet.anvil import find_node_modules
from devnet.rpc import DevnetError, Rpc

NATIVE = "0x" + "00" * 20
HOOK = "0x" + "00" * 18 + "4000"  # no permission bits set: valid only for a dynamic-fee pool
DYNAMIC_FEE = 0x800000
MIN_PRICE_LIMIT, MAX_PRICE_LIMIT = 4295128740, 1461446703485210103287273052203988822378723970341
V4_KEY = "(address,address,uint24,int24,address)"
V4_SWAP = f"swap({V4_KEY},(bool,int256,uint160),(bool,bool),bytes)"
V4_MODIFY = f"modifyLiquidity({V4_KEY},(int24,int24,int256,bytes32),bytes)"
BALANCER_TASKS = "@balancer-labs/v2-deployments/dist/tasks/"
FUNDS = "(address,bool,address,bool)"
DEADLINE = 2**40
GAS = hex(9_000_000)


def artifact(path: str) -> str:
    """Creation bytecode of an npm artifact (hardhat: ``bytecode``; foundry: ``bytecode.object``)."""
    code = json.loads((find_node_modules() / path).read_text())["bytecode"]
    return "0x" + str(code["object"] if isinstance(code, dict) else code).removeprefix("0x")


class Sender:
    """Sends each transaction from anvil's first unlocked account and mines it alone in its block."""

    def __init__(self, rpc: Rpc) -> None:
        self.rpc = rpc
        self.user = str(rpc.call("eth_accounts")[0]).lower()

    def request(self, to: str, data: str, value: int = 0) -> dict[str, Any]:
        return {"from": self.user, "to": to, "data": data, "value": hex(value), "gas": GAS}

    def send(self, to: str | None, data: str, value: int = 0) -> dict[str, Any]:
        tx = {"from": self.user, "data": data, "value": hex(value), "gas": GAS}
        if to is not None:
            tx["to"] = to
        tx_hash = self.rpc.call("eth_sendTransaction", tx)
        self.rpc.call("evm_mine")
        receipt: dict[str, Any] = self.rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt["status"] != "0x1":
            raise DevnetError(f"transaction {tx_hash} to {to} reverted")
        return receipt

    def deploy(self, code: str, types: list[str], *args: Any) -> str:
        return str(self.send(None, code + encode(types, list(args)).hex())["contractAddress"]).lower()

    def tokens(self, spenders: list[str], specs: list[tuple[str, int]]) -> list[str]:
        """v4-core's MockERC20s (symbol, decimals), minted to the sender and approved to ``spenders``,
        in address order."""
        code = artifact("@uniswap/v4-core/out/mocks/MockERC20.sol/MockERC20.json")
        made = [self.deploy(code, ["string", "string", "uint8"], s, s, d) for s, d in specs]
        for token in made:
            self.send(token, calldata("mint(address,uint256)", self.user, 10**40))
            for spender in spenders:
                self.send(token, calldata("approve(address,uint256)", spender, 2**256 - 1))
        return sorted(made)


class UniswapV4:
    """A PoolManager and its test routers; without ``tokens``, two MockERC20s and the three pools of the
    module docstring. With ``tokens`` (already held by the sender and approved to ``swapper`` and
    ``lp`` by the caller), no pool: ``initialize`` makes them."""

    def __init__(self, rpc: Rpc, tokens: list[str] | None = None) -> None:
        self.sender = chain = Sender(rpc)
        out = "@uniswap/v4-core/out/"
        self.manager = chain.deploy(
            artifact(out + "PoolManager.sol/PoolManager.json"), ["address"], chain.user
        )
        self.swapper = chain.deploy(
            artifact(out + "PoolSwapTest.sol/PoolSwapTest.json"), ["address"], self.manager
        )
        self.lp = chain.deploy(
            artifact(out + "PoolModifyLiquidityTest.sol/PoolModifyLiquidityTest.json"),
            ["address"],
            self.manager,
        )
        self.keys: list[tuple[str, str, int, int, str]] = []
        if tokens is not None:
            return
        self.token0, self.token1 = chain.tokens([self.swapper, self.lp], [("AAA", 18), ("USDX", 6)])
        for key in [
            (self.token0, self.token1, 3000, 60, NATIVE),
            (NATIVE, self.token1, 500, 10, NATIVE),
            (self.token0, self.token1, DYNAMIC_FEE, 60, HOOK),
        ]:
            self.initialize(key, 2**96)

    def initialize(self, key: tuple[str, str, int, int, str], sqrt_price_x96: int) -> None:
        self.sender.send(self.manager, calldata(f"initialize({V4_KEY},uint160)", key, sqrt_price_x96))
        self.keys.append(key)

    def modify(self, key: tuple[Any, ...], lower: int, upper: int, delta: int, salt: int) -> None:
        params = (lower, upper, delta, salt.to_bytes(32, "big"))
        value = 10**22 if key[0] == NATIVE and delta > 0 else 0  # the router keeps what it did not settle
        self.sender.send(self.lp, calldata(V4_MODIFY, key, params, b""), value)

    def swap_request(self, key: tuple[Any, ...], zero_for_one: bool, amount: int) -> dict[str, Any]:
        """``amount`` < 0: exact input of ``-amount``; > 0: exact output."""
        limit = MIN_PRICE_LIMIT if zero_for_one else MAX_PRICE_LIMIT
        value = 10**21 if key[0] == NATIVE and zero_for_one else 0
        data = calldata(V4_SWAP, key, (zero_for_one, amount, limit), (False, False), b"")
        return self.sender.request(self.swapper, data, value)

    def swap(self, key: tuple[Any, ...], zero_for_one: bool, amount: int) -> None:
        tx = self.swap_request(key, zero_for_one, amount)
        self.sender.send(tx["to"], tx["data"], int(tx["value"], 16))

    def activity(self) -> None:
        """Per pool: two positions, swaps both ways (exact in and out), a position added and removed."""
        for i, key in enumerate(self.keys):
            spacing = key[3]
            self.modify(key, -100 * spacing, 100 * spacing, 10**21, salt=10 * i + 1)
            self.modify(key, -10 * spacing, 30 * spacing, 5 * 10**20, salt=10 * i + 2)
            self.swap(key, True, -(10**18))
            self.swap(key, False, -3 * 10**17)
            self.swap(key, True, 10**16)
            self.modify(key, 20 * spacing, 40 * spacing, 10**19, salt=10 * i + 3)  # out of range: one token
            self.modify(
                key, 20 * spacing, 40 * spacing, -(10**19), salt=10 * i + 3
            )  # removed at once: no fees


class BalancerV2:
    """A Vault with its Authorizer and WeightedPoolFactory; without ``tokens``, three MockERC20s and a
    2-token and a 3-token pool of them. With ``tokens`` (held by the sender and approved to the Vault by
    the caller) and the chain's ``weth``, no pool: ``create_pool`` makes them."""

    def __init__(self, rpc: Rpc, tokens: list[str] | None = None, weth: str | None = None) -> None:
        self.rpc = rpc
        self.sender = chain = Sender(rpc)
        weth = weth or chain.deploy(artifact("@uniswap/v2-periphery/build/WETH9.json"), [])
        authorizer = chain.deploy(
            artifact(BALANCER_TASKS + "20210418-authorizer/artifact/Authorizer.json"), ["address"], chain.user
        )
        self.vault = chain.deploy(
            artifact(BALANCER_TASKS + "20210418-vault/artifact/Vault.json"),
            ["address", "address", "uint256", "uint256"],
            authorizer,
            weth,
            0,
            0,
        )
        self.factory = chain.deploy(
            artifact(BALANCER_TASKS + "deprecated/20210418-weighted-pool/artifact/WeightedPoolFactory.json"),
            ["address"],
            self.vault,
        )
        self.pools: list[tuple[str, list[str]]] = []  # (poolId, tokens)
        if tokens is not None:
            self.tokens = tokens
            return
        self.tokens = chain.tokens([self.vault], [("AAA", 18), ("USDX", 6), ("BBB", 8)])
        self.create_pool(self.tokens[:2], [5 * 10**17] * 2)
        self.create_pool(self.tokens, [4 * 10**17, 3 * 10**17, 3 * 10**17])

    def create_pool(self, tokens: list[str], weights: list[int]) -> int:
        """A weighted pool of ``tokens`` (in address order; weights summing to 10**18, swap fee 0.3%);
        returns its index in ``pools``."""
        registered = "0x3c13bc30b8e878c53fd2a36b679409c073afd75950be43d8858768e956fbc20e"  # PoolRegistered
        data = calldata(
            "create(string,string,address[],uint256[],uint256,address)",
            "P", "P", tokens, weights, 3 * 10**15, self.sender.user,
        )  # fmt: skip
        receipt = self.sender.send(self.factory, data)
        (pool_id,) = [lg["topics"][1] for lg in receipt["logs"] if lg["topics"][0] == registered]
        self.pools.append((pool_id, tokens))
        return len(self.pools) - 1

    def _id(self, pool: int) -> bytes:
        return bytes.fromhex(self.pools[pool][0][2:])

    def join(self, pool: int, amounts: list[int], *, init: bool = False) -> None:
        _, tokens = self.pools[pool]
        user_data = (
            encode(["uint256", "uint256[]"], [0, amounts])  # INIT
            if init
            else encode(["uint256", "uint256[]", "uint256"], [1, amounts, 0])  # EXACT_TOKENS_IN_FOR_BPT_OUT
        )
        request = (tokens, [2**200] * len(tokens), user_data, False)
        user = self.sender.user
        data = calldata(
            "joinPool(bytes32,address,address,(address[],uint256[],bytes,bool))",
            self._id(pool),
            user,
            user,
            request,
        )
        self.sender.send(self.vault, data)

    def exit(self, pool: int, bpt: int) -> None:
        _, tokens = self.pools[pool]
        request = (tokens, [0] * len(tokens), encode(["uint256", "uint256"], [1, bpt]), False)  # EXACT_BPT_IN
        user = self.sender.user
        data = calldata(
            "exitPool(bytes32,address,address,(address[],uint256[],bytes,bool))",
            self._id(pool),
            user,
            user,
            request,
        )
        self.sender.send(self.vault, data)

    def swap_request(self, pool: int, token_in: str, token_out: str, amount: int) -> dict[str, Any]:
        single = (self._id(pool), 0, token_in, token_out, amount, b"")  # GIVEN_IN
        funds = (self.sender.user, False, self.sender.user, False)
        data = calldata(
            f"swap((bytes32,uint8,address,address,uint256,bytes),{FUNDS},uint256,uint256)",
            single,
            funds,
            0,
            DEADLINE,
        )
        return self.sender.request(self.vault, data)

    def swap(self, pool: int, token_in: str, token_out: str, amount: int) -> None:
        self.sender.send(self.vault, self.swap_request(pool, token_in, token_out, amount)["data"])

    def batch_swap(self, amount: int) -> None:
        """Two hops in one transaction: AAA → USDX in the 2-token pool, USDX → BBB in the 3-token pool."""
        steps = [
            (self._id(0), 0, 1, amount, b""),
            (self._id(1), 1, 2, 0, b""),
        ]  # 0: the previous hop's output
        funds = (self.sender.user, False, self.sender.user, False)
        signature = (
            f"batchSwap(uint8,(bytes32,uint256,uint256,uint256,bytes)[],address[],{FUNDS},int256[],uint256)"
        )
        data = calldata(signature, 0, steps, self.tokens, funds, [2**200] * 3, DEADLINE)
        self.sender.send(self.vault, data)

    def activity(self) -> None:
        """Initial joins, single swaps, a two-hop batchSwap, a later join, an exit, one more swap."""
        a, u, b = self.tokens
        self.join(0, [10**24, 10**12], init=True)  # 1M AAA, 1M USDX
        self.join(1, [10**24, 10**12, 10**14], init=True)
        self.swap(0, a, u, 10**21)
        self.swap(1, b, a, 5 * 10**10)
        self.batch_swap(2 * 10**21)
        self.join(1, [10**21, 0, 10**9])  # unbalanced
        bpt = int(
            self.rpc.eth_call(self.pools[0][0][:42], calldata("balanceOf(address)", self.sender.user)), 16
        )
        self.exit(0, bpt // 10)
        self.swap(0, u, a, 3 * 10**9)
