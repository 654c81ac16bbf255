"""Swaps that cross protocols in one transaction, on a devnet that already has its Uniswap v2/v3 venues:
a step after the seeded history (its own block range), so nothing the history counted changes.

``CrossProtocolRoutes(devnet)`` deploys, on the devnet's own tokens (WETH, USDC, DAI, WBTC), a Uniswap
v4 PoolManager (``devnet.singletons.UniswapV4``) with three pools — native ETH/USDC, native ETH/WBTC,
DAI/USDC — and a Balancer v2 Vault (``devnet.singletons.BalancerV2``) with a 2-token pool (WBTC/WETH)
and a 3-token pool (WETH/USDC/DAI), all seeded with liquidity at the tokens' reference prices, and a
``DevnetRouter`` (``contracts/DevnetRouter.sol``, compiled by solc-js). ``run()`` then sends the routes,
each transaction mined alone in its block (so a block's balance changes belong to one route):

- ``v2-v3-v4``: DAI → USDC on Uniswap v2, USDC → WBTC on v3, WBTC → native ETH on v4;
- ``v4-v3-balancer``: native ETH → USDC on v4, USDC → WETH on v3, WETH → DAI on Balancer;
- ``balancer-sushiswap-v4``: WBTC → WETH on Balancer, WETH → USDC on SushiSwap, USDC → DAI on v4;
- ``balancer-batch``: the Vault's own ``batchSwap``, WBTC → WETH → DAI over both Balancer pools.

Every hop is exact input: it swaps all the previous hop produced. The sender is the devnet's deployer
(anvil's first account), which holds every token."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import keccak

from devnet.abi import calldata
from devnet.artifacts import CONTRACTS_DIR, compile_contract
from devnet.deployment import Deployment, Token, full_range, price_x96, sort_pair
from devnet.devnet import Devnet
from devnet.rpc import DevnetError, Rpc
from devnet.setup import DEADLINE, MAX_UINT
from devnet.singletons import NATIVE, BalancerV2, UniswapV4

ROUTER_SOURCE = CONTRACTS_DIR / "DevnetRouter.sol"
KINDS = {"uniswap-v2": 0, "sushiswap": 0, "uniswap-v3": 1, "uniswap-v4": 2, "balancer-v2": 3}
HOP = "(uint8,address,address,address,bytes32,uint24,int24,address)"
ROUTER_SWAP = f"swap({HOP}[],uint256,uint256,address)"
BATCH_SWAP = (
    "batchSwap(uint8,(bytes32,uint256,uint256,uint256,bytes)[],address[],"
    "(address,bool,address,bool),int256[],uint256)"
)
SEED_USD = 1_000_000  # per side of every v4 position and per token of every Balancer pool
V4_POOLS = [("ETH", "USDC", 500, 10), ("ETH", "WBTC", 3000, 60), ("DAI", "USDC", 500, 10)]
BALANCER_POOLS = [("WBTC", "WETH"), ("WETH", "USDC", "DAI")]


@dataclass(frozen=True)
class Hop:
    """One swap of a route. ``pool`` is what a trade's pool column holds (the v2 pair or v3 pool
    address, the v4 PoolId, the Balancer poolId); ``contract`` is the contract that emits its events."""

    exchange: str
    pool: str
    contract: str
    token_in: str
    token_out: str
    fee: int = 0
    tick_spacing: int = 0

    def encoded(self) -> tuple[Any, ...]:
        kind = KINDS[self.exchange]
        pool_id = bytes.fromhex(self.pool[2:]) if kind in (2, 3) else bytes(32)
        return (kind, self.contract, self.token_in, self.token_out, pool_id, self.fee,
                self.tick_spacing, NATIVE)  # fmt: skip


@dataclass(frozen=True)
class RouteTx:
    name: str
    transaction_hash: str
    block_number: int
    sender: str
    to: str  # the router, or the Vault for a batchSwap
    hops: tuple[Hop, ...]


class CrossProtocolRoutes:
    """Uniswap v4, Balancer v2 and a router on a devnet's tokens (see the module docstring)."""

    def __init__(self, rpc: Rpc, dep: Deployment, cache_dir: Path) -> None:
        self.rpc, self.dep = rpc, dep
        self.eth = Token(NATIVE, "ETH", "Ether", 18, dep.tokens["WETH"].reference_usd)
        tokens = [dep.tokens[s] for s in ("WETH", "USDC", "DAI", "WBTC")]
        rpc.call("evm_setAutomine", False)  # the Sender mines each of its transactions itself
        try:
            self.v4 = UniswapV4(rpc, tokens=[t.address for t in tokens])
            self.balancer = BalancerV2(
                rpc, tokens=[t.address for t in tokens], weth=dep.tokens["WETH"].address
            )
            self.sender = self.v4.sender
            self.router = self.sender.deploy(
                "0x" + compile_contract(cache_dir, ROUTER_SOURCE, "DevnetRouter").hex(), []
            )
            for token in tokens:
                for spender in (self.v4.lp, self.balancer.vault, self.router):
                    self.sender.send(token.address, calldata("approve(address,uint256)", spender, MAX_UINT))
            self._seed_v4()
            self._seed_balancer()
        finally:
            rpc.call("evm_setAutomine", True)

    def _token(self, symbol: str) -> Token:
        return self.eth if symbol == "ETH" else self.dep.tokens[symbol]

    def _seed_v4(self) -> None:
        for a, b, fee, spacing in V4_POOLS:
            t0, t1 = sort_pair(self._token(a), self._token(b))
            key = (t0.address, t1.address, fee, spacing, NATIVE)
            self.v4.initialize(key, price_x96(t0, t1))
            low, high = full_range(spacing)
            # full range: amount0 = L / sqrtP, amount1 = L * sqrtP, so L = sqrt(amount0 * amount1)
            liquidity = math.isqrt(t0.raw(SEED_USD) * t1.raw(SEED_USD))
            self.v4.modify(key, low, high, liquidity, salt=1)

    def _seed_balancer(self) -> None:
        for symbols in BALANCER_POOLS:
            tokens = sorted((self.dep.tokens[s] for s in symbols), key=lambda t: int(t.address, 16))
            share = 10**18 // len(tokens)
            weights = [10**18 - share * (len(tokens) - 1)] + [share] * (len(tokens) - 1)
            pool = self.balancer.create_pool([t.address for t in tokens], weights)
            # value in proportion to weight: the pool's spot prices are the reference prices
            amounts = [
                t.raw(Fraction(SEED_USD * w * len(tokens), 10**18))
                for t, w in zip(tokens, weights, strict=True)
            ]
            self.balancer.join(pool, amounts, init=True)

    # -- the hops -------------------------------------------------------------------------------------
    def v2(self, label: str, a: str, b: str) -> Hop:
        ta, tb = self.dep.tokens[a], self.dep.tokens[b]
        (pool,) = [p for p in self.dep.v2_pools(label) if {p.token0, p.token1} == {ta.address, tb.address}]
        return Hop(label, pool.address, pool.address, ta.address, tb.address)

    def v3(self, a: str, b: str, fee: int) -> Hop:
        ta, tb = self.dep.tokens[a], self.dep.tokens[b]
        (pool,) = [
            p
            for p in self.dep.v3_pools()
            if {p.token0, p.token1} == {ta.address, tb.address} and p.fee == fee
        ]
        return Hop("uniswap-v3", pool.address, pool.address, ta.address, tb.address)

    def v4_hop(self, a: str, b: str) -> Hop:
        ta, tb = self._token(a), self._token(b)
        t0, t1 = sort_pair(ta, tb)
        (key,) = [k for k in self.v4.keys if (k[0], k[1]) == (t0.address, t1.address)]
        return Hop("uniswap-v4", v4_pool_id(key), self.v4.manager, ta.address, tb.address, key[2], key[3])

    def balancer_hop(self, a: str, b: str) -> Hop:
        ta, tb = self.dep.tokens[a], self.dep.tokens[b]
        (pool_id,) = [pid for pid, tokens in self.balancer.pools if {ta.address, tb.address} <= set(tokens)]
        return Hop("balancer-v2", pool_id, self.balancer.vault, ta.address, tb.address)

    def routes(self) -> dict[str, tuple[tuple[Hop, ...], int]]:
        """Route name -> (hops, exact input amount of the first hop's token)."""
        dai, eth, wbtc = self.dep.tokens["DAI"], self.eth, self.dep.tokens["WBTC"]
        return {
            "v2-v3-v4": (
                (
                    self.v2("uniswap-v2", "DAI", "USDC"),
                    self.v3("USDC", "WBTC", 3000),
                    self.v4_hop("WBTC", "ETH"),
                ),
                dai.raw(2_500),
            ),
            "v4-v3-balancer": (
                (self.v4_hop("ETH", "USDC"), self.v3("USDC", "WETH", 500), self.balancer_hop("WETH", "DAI")),
                eth.raw(1_500),
            ),
            "balancer-sushiswap-v4": (
                (
                    self.balancer_hop("WBTC", "WETH"),
                    self.v2("sushiswap", "WETH", "USDC"),
                    self.v4_hop("USDC", "DAI"),
                ),
                wbtc.raw(4_000),
            ),
            "balancer-batch": (
                (self.balancer_hop("WBTC", "WETH"), self.balancer_hop("WETH", "DAI")),
                wbtc.raw(3_000),
            ),
        }

    def run(self, rounds: int = 2) -> list[RouteTx]:
        """Every route ``rounds`` times (the amounts grow each round), one transaction per block."""
        sent: list[RouteTx] = []
        self.rpc.call("evm_setAutomine", False)
        try:
            for round_ in range(rounds):
                for name, (hops, amount) in self.routes().items():
                    sent.append(self.send(name, hops, amount * (round_ + 1)))
        finally:
            self.rpc.call("evm_setAutomine", True)
        return sent

    def request(self, name: str, hops: tuple[Hop, ...], amount: int) -> dict[str, Any]:
        """The route's transaction, unsent (``eth_sendTransaction`` or an ``anvil_reorg`` branch)."""
        user = self.sender.user
        if name == "balancer-batch":
            assets = [hops[0].token_in, *(h.token_out for h in hops)]
            steps = [
                (bytes.fromhex(h.pool[2:]), i, i + 1, amount if i == 0 else 0, b"")
                for i, h in enumerate(hops)
            ]
            limits = [2**200] + [0] * len(hops)  # what the sender may pay per asset; outputs are negative
            data = calldata(BATCH_SWAP, 0, steps, assets, (user, False, user, False), limits, DEADLINE)
            return self.sender.request(self.balancer.vault, data)
        data = calldata(ROUTER_SWAP, [h.encoded() for h in hops], amount, 1, user)
        return self.sender.request(self.router, data, amount if hops[0].token_in == NATIVE else 0)

    def send(self, name: str, hops: tuple[Hop, ...], amount: int) -> RouteTx:
        tx = self.request(name, hops, amount)
        receipt = self.sender.send(tx["to"], tx["data"], int(tx["value"], 16))
        return RouteTx(
            name, receipt["transactionHash"], int(receipt["blockNumber"], 16), tx["from"], tx["to"], hops
        )

    def plugin_settings(self) -> dict[str, str]:
        """The indexer's settings for every venue the routes touch."""
        v2 = ",".join(f"{e['factory']}={e['label']}" for e in self.dep.exchanges() if e["version"] == 2)
        return {
            "uniswap_v2_factories": v2,
            "uniswap_v3_factories": f"{self.dep.contracts['uniswap_v3_factory']}=uniswap-v3",
            "uniswap_v4_pool_managers": f"{self.v4.manager}=uniswap-v4",
            "balancer_v2_vaults": f"{self.balancer.vault}=balancer-v2",
        }


def add_routes(devnet: Devnet, cache_dir: Path, rounds: int = 2) -> list[RouteTx]:
    """Deploy the routes' venues on a running devnet, send every route ``rounds`` times and record it
    all in the manifest (``cross_protocol``: contracts, the indexer's settings, the transactions)."""
    if "cross_protocol" in devnet.manifest:
        raise DevnetError("this devnet already has its cross-protocol routes (manifest: cross_protocol)")
    routes = CrossProtocolRoutes(devnet.rpc, devnet.deployment, cache_dir)
    sent = routes.run(rounds)
    devnet.manifest["cross_protocol"] = {
        "router": routes.router,
        "pool_manager": routes.v4.manager,
        "vault": routes.balancer.vault,
        "settings": routes.plugin_settings(),
        "transactions": [asdict(r) for r in sent],
    }
    devnet.record_head()
    return sent


def v4_pool_id(key: tuple[str, str, int, int, str]) -> str:
    """PoolId = keccak256(abi.encode(PoolKey))."""
    return "0x" + keccak(encode(["address", "address", "uint24", "int24", "address"], list(key))).hex()
