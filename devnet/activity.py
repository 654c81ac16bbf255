"""Seeded market activity on a deployed devnet: swaps on every venue, liquidity in and out, v3 position
life cycles, NFT and token transfers, fee-on-transfer trades, planned reverts and empty blocks.

Plans read chain state (balances, positions, ticks) at the start of each block with ``eth_call``, so a
generator needs no memory of its own: the same chain and seed always give the same transactions."""

from __future__ import annotations

import random
from collections.abc import Callable

from devnet.abi import calldata, decode_result
from devnet.deployment import (
    FEE_ON_TRANSFER,
    V2_VENUES,
    Deployment,
    Pool,
    aligned_range,
)
from devnet.miner import BLOCK_GAS_BUDGET, GWEI, Miner, Tx
from devnet.rpc import Rpc
from devnet.setup import DEADLINE, mint_position
from devnet.trades import SwapPlanner

MAX_UINT128 = 2**128 - 1
IMPOSSIBLE = 2**255
EMPTY_BLOCK_CHANCE = 0.1
LEGACY_CHANCE = 0.15
NPM_INCREASE = "increaseLiquidity((uint256,uint256,uint256,uint256,uint256,uint256))"
NPM_DECREASE = "decreaseLiquidity((uint256,uint128,uint256,uint256,uint256))"
NPM_COLLECT = "collect((uint256,address,uint128,uint128))"
# NonfungiblePositionManager.positions(): nonce, operator, token0, token1, fee, ticks, liquidity, ...
POSITION = ["uint96", "address", "address", "address", "uint24", "int24", "int24", "uint128"]
POSITION += ["uint256"] * 4  # fee growth inside x2, tokens owed x2


class ActivityGenerator(SwapPlanner):
    def __init__(self, rpc: Rpc, miner: Miner, dep: Deployment, rng: random.Random) -> None:
        super().__init__(rpc, dep, rng)
        self.miner = miner
        self.actions: list[tuple[Callable[[], Tx | None], int]] = [
            (lambda: self.v2_swap("uniswap-v2"), 20), (lambda: self.v2_swap("sushiswap"), 12),
            (self.v3_swap, 22), (self.fee_on_transfer_swap, 5),
            (self.v2_add, 4), (self.v2_remove, 3),
            (self.v3_mint, 4), (self.v3_increase, 3), (self.v3_decrease, 3), (self.v3_collect, 2),
            (self.v3_close, 2), (self.nft_transfer, 2),
            (self.erc20_transfer, 7), (self.eth_transfer, 6), (self.weth_wrap, 2), (self.planned_revert, 3),
        ]  # fmt: skip

    # -- the block loop -------------------------------------------------------------------------------
    def run(self, blocks: int, rate: float) -> None:
        produced = 0
        while produced < blocks:
            if self.rng.random() < EMPTY_BLOCK_CHANCE:
                run = min(blocks - produced, self.rng.choice((1, 1, 1, 2, 3, 5)))
                self.miner.mine_empty(run)
                produced += run
                continue
            self.miner.mine(self.plan_block(self._tx_count(rate)))
            produced += 1

    def plan_block(self, count: int) -> list[Tx]:
        self.touched, self.ticks = set(), {}
        txs: list[Tx] = []
        gas = 0
        funcs, weights = zip(*self.actions, strict=True)
        for _ in range(count):
            tx = self.rng.choices(funcs, weights)[0]()
            if tx is None:
                continue
            if gas + tx.gas > BLOCK_GAS_BUDGET:
                break
            tx.legacy = self.rng.random() < LEGACY_CHANCE
            tx.tip = self.rng.choice((1, 1, 2, 3)) * GWEI
            txs.append(tx)
            gas += tx.gas
        return txs

    def _tx_count(self, rate: float) -> int:
        if rate < 1:
            return 1 if self.rng.random() < rate else 0
        return self.rng.randint(max(1, round(rate / 2)), max(1, round(rate * 1.5)))

    # -- v2 liquidity ---------------------------------------------------------------------------------
    def _v2_pool(self) -> Pool:
        label = self.rng.choices(V2_VENUES, (2, 1))[0]
        return self.rng.choice(self.dep.v2_pools(label))

    def v2_add(self) -> Tx:
        pool = self._v2_pool()
        t0, t1 = self.dep.token_at(pool.token0), self.dep.token_at(pool.token1)
        sender = self._user()
        usd = self._usd(3, 5)
        expect = {f"mints.{pool.label}": 1}
        router = self.dep.router(pool.label)
        if self.weth in (t0, t1) and self.rng.random() < 0.5:
            token = t1 if t0 is self.weth else t0
            data = calldata(
                "addLiquidityETH(address,uint256,uint256,uint256,address,uint256)",
                token.address,
                token.raw(usd),
                0,
                0,
                sender,
                DEADLINE,
            )
            return Tx(sender, router, data, self.weth.raw(usd), 350_000, expect)
        data = calldata(
            "addLiquidity(address,address,uint256,uint256,uint256,uint256,address,uint256)",
            t0.address,
            t1.address,
            t0.raw(usd),
            t1.raw(usd),
            0,
            0,
            sender,
            DEADLINE,
        )
        return Tx(sender, router, data, 0, 350_000, expect)

    def v2_remove(self) -> Tx | None:
        pool = self._v2_pool()
        users = self.rng.sample(self.dep.users, len(self.dep.users))
        balances = self.rpc.batch(
            [
                ("eth_call", [{"to": pool.address, "data": calldata("balanceOf(address)", u)}, "latest"])
                for u in users
            ]
        )
        for user, balance in zip(users, balances, strict=True):
            lp = int(balance, 16)
            if lp == 0 or (user, pool.address) in self.touched:
                continue
            self.touched.add((user, pool.address))
            liquidity = max(1, int(lp * self.rng.uniform(0.2, 1.0)))
            t0, t1 = self.dep.token_at(pool.token0), self.dep.token_at(pool.token1)
            expect = {f"burns.{pool.label}": 1}
            router = self.dep.router(pool.label)
            if self.weth in (t0, t1) and self.rng.random() < 0.5:
                token = t1 if t0 is self.weth else t0
                name = "removeLiquidityETH" + (
                    "SupportingFeeOnTransferTokens" if token.fee_on_transfer else ""
                )
                data = calldata(
                    f"{name}(address,uint256,uint256,uint256,address,uint256)",
                    token.address,
                    liquidity,
                    0,
                    0,
                    user,
                    DEADLINE,
                )
                return Tx(user, router, data, 0, 300_000, expect)
            data = calldata(
                "removeLiquidity(address,address,uint256,uint256,uint256,address,uint256)",
                t0.address,
                t1.address,
                liquidity,
                0,
                0,
                user,
                DEADLINE,
            )
            return Tx(user, router, data, 0, 300_000, expect)
        return None

    # -- v3 positions ---------------------------------------------------------------------------------
    def v3_mint(self) -> Tx:
        pool = self.rng.choice(self.dep.v3_pools())
        assert pool.tick_spacing is not None
        t0, t1 = self.dep.token_at(pool.token0), self.dep.token_at(pool.token1)
        tick, spacing = self._tick(pool), pool.tick_spacing
        if self.rng.random() < 0.15:  # out of range: a single-sided position
            side = self.rng.choice((-1, 1))
            near = tick // spacing * spacing + side * spacing * self.rng.randint(2, 10)
            low, high = sorted((near, near + side * spacing * self.rng.randint(1, 20)))
        else:
            low, high = aligned_range(tick, spacing, self.rng.randint(1, 40), self.rng.randint(1, 40))
        return mint_position(
            self.npm, self._user(), pool, t0, t1, low, high, self._usd(3, 4.7), self._usd(3, 4.7)
        )

    def _position(self) -> tuple[int, str, int, Pool] | None:
        """A random user-owned position not used yet in this block: (token id, owner, liquidity, pool)."""
        total = int(self._call(self.npm, "totalSupply()"), 16)
        for _ in range(4):
            if total == 0:
                return None
            index = self.rng.randrange(total)
            token_id = int(self._call(self.npm, "tokenByIndex(uint256)", index), 16)
            if token_id in self.touched:
                continue
            owner_word, position = self.rpc.batch(
                [
                    (
                        "eth_call",
                        [{"to": self.npm, "data": calldata("ownerOf(uint256)", token_id)}, "latest"],
                    ),
                    (
                        "eth_call",
                        [{"to": self.npm, "data": calldata("positions(uint256)", token_id)}, "latest"],
                    ),
                ]
            )
            owner = "0x" + owner_word[-40:]
            if owner not in self.dep.users:
                continue
            fields = decode_result(POSITION, position)
            key = (fields[2].lower(), fields[3].lower(), fields[4])
            pool = next(p for p in self.dep.v3_pools() if (p.token0, p.token1, p.fee) == key)
            self.touched.add(token_id)
            return token_id, owner, int(fields[7]), pool
        return None

    def v3_increase(self) -> Tx | None:
        found = self._position()
        if found is None:
            return None
        token_id, owner, _, pool = found
        t0, t1 = self.dep.token_at(pool.token0), self.dep.token_at(pool.token1)
        params = (token_id, t0.raw(self._usd(3, 4.3)), t1.raw(self._usd(3, 4.3)), 0, 0, DEADLINE)
        expect = {"mints.uniswap-v3": 1, "positions.increased": 1}
        return Tx(owner, self.npm, calldata(NPM_INCREASE, params), 0, 500_000, expect)

    def v3_decrease(self) -> Tx | None:
        found = self._position()
        if found is None or found[2] == 0:
            return None
        token_id, owner, liquidity, _ = found
        params = (token_id, max(1, int(liquidity * self.rng.uniform(0.1, 0.5))), 0, 0, DEADLINE)
        expect = {"burns.uniswap-v3": 1, "positions.decreased": 1}
        return Tx(owner, self.npm, calldata(NPM_DECREASE, params), 0, 300_000, expect)

    def v3_collect(self) -> Tx | None:
        found = self._position()
        if found is None:
            return None
        token_id, owner, liquidity, _ = found
        # The manager pokes the pool with a zero burn first when the position still has liquidity.
        expect = {"collects.uniswap-v3": 1, "positions.collected": 1, "burns.uniswap-v3": int(liquidity > 0)}
        params = (token_id, owner, MAX_UINT128, MAX_UINT128)
        return Tx(owner, self.npm, calldata(NPM_COLLECT, params), 0, 300_000, expect)

    def v3_close(self) -> Tx | None:
        """Decrease to zero, collect everything and burn the NFT, in one multicall."""
        found = self._position()
        if found is None:
            return None
        token_id, owner, liquidity, _ = found
        calls = []
        expect = {
            "collects.uniswap-v3": 1,
            "positions.collected": 1,
            "positions.burned": 1,
            "erc721_transfers": 1,
        }
        if liquidity > 0:
            calls.append(calldata(NPM_DECREASE, (token_id, liquidity, 0, 0, DEADLINE)))
            expect |= {"burns.uniswap-v3": 1, "positions.decreased": 1}
        calls.append(calldata(NPM_COLLECT, (token_id, owner, MAX_UINT128, MAX_UINT128)))
        calls.append(calldata("burn(uint256)", token_id))
        data = calldata("multicall(bytes[])", [bytes.fromhex(c[2:]) for c in calls])
        return Tx(owner, self.npm, data, 0, 500_000, expect)

    def nft_transfer(self) -> Tx | None:
        found = self._position()
        if found is None:
            return None
        token_id, owner, _, _ = found
        to = self.rng.choice([u for u in self.dep.users if u != owner])
        kind = self.rng.choice(("safeTransferFrom", "transferFrom"))
        data = calldata(f"{kind}(address,address,uint256)", owner, to, token_id)
        return Tx(owner, self.npm, data, 0, 150_000, {"erc721_transfers": 1, "positions.transferred": 1})

    # -- transfers and reverts ------------------------------------------------------------------------
    def erc20_transfer(self) -> Tx:
        token = self.rng.choice(list(self.dep.tokens.values()))
        sender = self._user()
        data = calldata("transfer(address,uint256)", self._other(sender), token.raw(self._usd(1, 3.7)))
        return Tx(sender, token.address, data, 0, 100_000, {"erc20_transfers": 1})

    def eth_transfer(self) -> Tx:
        sender = self._user()
        value = self.weth.raw(self._usd(1, 4))
        return Tx(sender, self._other(sender), "0x", value, 21_000, {"eth_transfers": 1})

    def weth_wrap(self) -> Tx:
        sender = self._user()
        amount = self.weth.raw(self._usd(2, 4))
        if self.rng.random() < 0.5:
            return Tx(sender, self.weth.address, calldata("deposit()"), amount, 60_000, {"weth_deposits": 1})
        data = calldata("withdraw(uint256)", amount)
        return Tx(sender, self.weth.address, data, 0, 60_000, {"weth_withdrawals": 1})

    def planned_revert(self) -> Tx:
        """Included with status 0: explicit gas means anvil never estimates (and rejects) them."""
        variant = self.rng.randrange(4)
        if variant == 0:
            tx = self.v2_swap(self.rng.choice(V2_VENUES), exact_in=True, min_out=IMPOSSIBLE)
        elif variant == 1:
            tx = self.v2_swap("uniswap-v2", exact_in=True, deadline=1)
        elif variant == 2:
            tx = self.v3_swap(min_out=IMPOSSIBLE, single=True)
        else:
            token = self.rng.choice(
                [t for t in self.dep.tokens.values() if t.symbol not in ("WETH", FEE_ON_TRANSFER)]
            )
            sender = self._user()
            data = calldata("transfer(address,uint256)", self._other(sender), IMPOSSIBLE)
            tx = Tx(sender, token.address, data, 0, 100_000)
        tx.revert, tx.expect, tx.gas = True, {}, max(tx.gas, 300_000)
        return tx
