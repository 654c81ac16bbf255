"""Swap planning for the devnet's activity: Uniswap v2 and its fork (exact in/out, ETH legs, multi-hop),
v3 through SwapRouter (single and multi-hop, ETH in and out) and fee-on-transfer trades.

``Planner`` holds what every planned transaction needs: the deployment, the seeded random source and
read access to the chain at the start of the block."""

from __future__ import annotations

import random

from devnet.abi import calldata, decode_result
from devnet.deployment import FEE_ON_TRANSFER, V2_VENUES, Deployment, Pool, Token, path_v3
from devnet.miner import Tx
from devnet.rpc import Rpc
from devnet.setup import DEADLINE, MAX_UINT

V3_IN_SINGLE = "exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))"
V3_OUT_SINGLE = "exactOutputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))"
V3_IN = "exactInput((bytes,address,uint256,uint256,uint256))"
V3_OUT = "exactOutput((bytes,address,uint256,uint256,uint256))"


class Planner:
    def __init__(self, rpc: Rpc, dep: Deployment, rng: random.Random) -> None:
        self.rpc, self.dep, self.rng = rpc, dep, rng
        self.weth = dep.tokens["WETH"]
        self.npm = dep.contracts["nonfungible_position_manager"]
        self.swap_router = dep.contracts["swap_router"]
        self.v2_paths = {
            label: self._paths([p for p in dep.v2_pools(label) if not self._fot(p)]) for label in V2_VENUES
        }
        self.v3_paths = self._paths(dep.v3_pools())
        self.touched: set[object] = set()  # positions and LP balances already used in this block
        self.ticks: dict[str, int] = {}  # v3 pool ticks at the start of this block

    # -- helpers --------------------------------------------------------------------------------------
    def _fot(self, pool: Pool) -> bool:
        return FEE_ON_TRANSFER in (
            self.dep.token_at(pool.token0).symbol,
            self.dep.token_at(pool.token1).symbol,
        )

    def _paths(self, pools: list[Pool]) -> list[tuple[list[Token], list[Pool]]]:
        """Every one- and two-hop route over ``pools``, both directions."""
        edges = []
        for pool in pools:
            t0, t1 = self.dep.token_at(pool.token0), self.dep.token_at(pool.token1)
            edges += [(t0, t1, pool), (t1, t0, pool)]
        routes = [([a, b], [p]) for a, b, p in edges]
        for a, b, p in edges:
            for c, d, q in edges:
                if c is b and d is not a and q is not p:
                    routes.append(([a, b, d], [p, q]))
        return routes

    def _user(self) -> str:
        return self.rng.choice(self.dep.users)

    def _other(self, sender: str) -> str:
        if self.rng.random() < 0.3:
            return "0x" + self.rng.randbytes(20).hex()  # a fresh address, as real transfers often have
        return self.rng.choice([u for u in self.dep.users if u != sender])

    def _recipient(self, sender: str) -> str:
        return sender if self.rng.random() < 0.8 else self.rng.choice(self.dep.users)

    def _usd(self, low: float = 1.5, high: float = 4.5) -> float:
        return float(10 ** self.rng.uniform(low, high))

    def _call(self, to: str, signature: str, *args: object) -> str:
        return self.rpc.eth_call(to, calldata(signature, *args))

    def _tick(self, pool: Pool) -> int:
        if pool.address not in self.ticks:
            slot0 = decode_result(["uint160", "int24"], self._call(pool.address, "slot0()")[:130])
            self.ticks[pool.address] = int(slot0[1])
        return self.ticks[pool.address]


class SwapPlanner(Planner):
    def v2_swap(
        self, label: str, *, exact_in: bool | None = None, min_out: int = 0, deadline: int = DEADLINE
    ) -> Tx:
        path, _ = self.rng.choice(self.v2_paths[label])
        sender = self._user()
        to = self._recipient(sender)
        usd = self._usd()
        addrs = [t.address for t in path]
        if exact_in is None:
            exact_in = self.rng.random() < 0.6
        eth_in = path[0] is self.weth and self.rng.random() < 0.5
        eth_out = path[-1] is self.weth and not eth_in and self.rng.random() < 0.5
        value = 0
        if exact_in:
            amount = path[0].raw(usd)
            if eth_in:
                sig, args, value = (
                    "swapExactETHForTokens(uint256,address[],address,uint256)",
                    [min_out],
                    amount,
                )
            else:
                kind = "ETH" if eth_out else "Tokens"
                sig, args = (
                    f"swapExactTokensFor{kind}(uint256,uint256,address[],address,uint256)",
                    [amount, min_out],
                )
        else:
            amount = path[-1].raw(usd)
            if eth_in:
                sig, args = "swapETHForExactTokens(uint256,address[],address,uint256)", [amount]
                value = self.weth.raw(usd * 3)  # the router refunds what it does not need
            else:
                kind = "ETH" if eth_out else "Tokens"
                sig, args = (
                    f"swapTokensForExact{kind}(uint256,uint256,address[],address,uint256)",
                    [amount, MAX_UINT],
                )
        data = calldata(sig, *args, addrs, to, deadline)
        hops = len(path) - 1
        return Tx(
            sender, self.dep.router(label), data, value, 150_000 + 100_000 * hops, {f"swaps.{label}": hops}
        )

    def v3_swap(self, *, min_out: int = 0, single: bool | None = None) -> Tx:
        path, pools = self.rng.choice(self.v3_paths)
        if single or (single is None and self.rng.random() < 0.7):
            pools = [self.rng.choice(self.dep.v3_pools())]
            t0, t1 = self.dep.token_at(pools[0].token0), self.dep.token_at(pools[0].token1)
            path = [t0, t1] if self.rng.random() < 0.5 else [t1, t0]
        sender = self._user()
        to = self._recipient(sender)
        usd = self._usd()
        exact_in = min_out > 0 or self.rng.random() < 0.6
        expect = {"swaps.uniswap-v3": len(pools)}
        gas = 200_000 + 150_000 * len(pools)
        tin, tout = path[0], path[-1]
        if len(pools) == 1:
            fee = pools[0].fee
            if exact_in:
                amount = tin.raw(usd)
                value = amount if tin is self.weth and self.rng.random() < 0.3 else 0  # router wraps ETH
                if tout is self.weth and not value and not min_out and self.rng.random() < 0.3:
                    # ETH out: swap to the router, then unwrap to the recipient in one multicall.
                    swap = calldata(
                        V3_IN_SINGLE,
                        (tin.address, tout.address, fee, self.swap_router, DEADLINE, amount, 0, 0),
                    )
                    unwrap = calldata("unwrapWETH9(uint256,address)", 0, to)
                    calls = [bytes.fromhex(c[2:]) for c in (swap, unwrap)]
                    return Tx(
                        sender,
                        self.swap_router,
                        calldata("multicall(bytes[])", calls),
                        0,
                        gas + 50_000,
                        expect,
                    )
                params = (tin.address, tout.address, fee, to, DEADLINE, amount, min_out, 0)
                return Tx(sender, self.swap_router, calldata(V3_IN_SINGLE, params), value, gas, expect)
            params = (tin.address, tout.address, fee, to, DEADLINE, tout.raw(usd), MAX_UINT, 0)
            return Tx(sender, self.swap_router, calldata(V3_OUT_SINGLE, params), 0, gas, expect)
        fees = [p.fee for p in pools]
        if exact_in:
            params_in = (path_v3(path, fees), to, DEADLINE, tin.raw(usd), min_out)
            return Tx(sender, self.swap_router, calldata(V3_IN, params_in), 0, gas, expect)
        # exactOutput takes the path reversed: output token first.
        params_out = (path_v3(path[::-1], fees[::-1]), to, DEADLINE, tout.raw(usd), MAX_UINT)
        return Tx(sender, self.swap_router, calldata(V3_OUT, params_out), 0, gas, expect)

    def fee_on_transfer_swap(self) -> Tx:
        dtt = self.dep.tokens[FEE_ON_TRANSFER]
        sender = self._user()
        to = self._recipient(sender)
        usd = self._usd()
        tail = "SupportingFeeOnTransferTokens"
        variant = self.rng.randrange(4)
        value = 0
        if variant == 0:  # ETH in: the pair sends DTT out, 1% burnt on the way
            data = calldata(
                f"swapExactETHForTokens{tail}(uint256,address[],address,uint256)",
                0,
                [self.weth.address, dtt.address],
                to,
                DEADLINE,
            )
            value = self.weth.raw(usd)
        elif variant == 1:  # DTT in, ETH out
            data = calldata(
                f"swapExactTokensForETH{tail}(uint256,uint256,address[],address,uint256)",
                dtt.raw(usd),
                0,
                [dtt.address, self.weth.address],
                to,
                DEADLINE,
            )
        else:
            path = [dtt, self.weth] if variant == 2 else [self.weth, dtt]
            data = calldata(
                f"swapExactTokensForTokens{tail}(uint256,uint256,address[],address,uint256)",
                path[0].raw(usd),
                0,
                [t.address for t in path],
                to,
                DEADLINE,
            )
        expect = {"swaps.uniswap-v2": 1, "fee_on_transfer_swaps": 1}
        return Tx(sender, self.dep.router("uniswap-v2"), data, value, 300_000, expect)

    def simple_swap(self) -> Tx:
        """A swap that cannot fail for lack of anything but gas (exact input, no minimum): reorg branches."""
        if self.rng.random() < 0.5:
            return self.v2_swap(self.rng.choice(V2_VENUES), exact_in=True)
        return self.v3_swap(single=True, min_out=0)
