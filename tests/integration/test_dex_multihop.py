"""Swaps that cross protocols in one transaction, end to end on the seeded devnet: ``devnet.routes`` adds
Uniswap v4 and Balancer v2 on the devnet's tokens and sends routes through Uniswap v2, SushiSwap, v3, v4
(native ETH in and out) and Balancer (through a router, and the Vault's own 2-hop batchSwap), one
transaction per block. Followed into Postgres from the first block of that step, through a 2-block reorg
that replaces the last two routes with two others, then backfilled into a second database.

Three independent truths, none of them dexnode's code: the receipts' raw logs decoded here with eth-abi
(pool tokens asked of the pools, v4 currencies from the PoolManager's Initialize logs); the balances of
every pool (pair and pool ``balanceOf``, the PoolManager's holdings, the Vault's ``getPoolTokens``) and of
the sender, read from the node at the block before and at the route's block; and the route the devnet
planned (hop order, venues, the first hop's input). dex_trades must hold exactly one row per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eth_abi import decode

from core.database import DatabaseInfo
from core.settings import build_settings
from devnet import Devnet
from devnet.abi import calldata
from devnet.routes import CrossProtocolRoutes, Hop, RouteTx
from devnet.singletons import NATIVE
from indexer.backfill.job import backfill
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from protocols.registry import registry_of
from sinks.postgres import PostgresSink
from tests.chain_check import wait_for_tip
from tests.integration.test_dex_devnet import V2_SWAP, V3_SWAP, topic

pytestmark = pytest.mark.integration


TRANSFER = topic("Transfer(address,address,uint256)")
V4_SWAP = topic("Swap(bytes32,address,int128,int128,uint160,uint128,int24,uint24)")
V4_INITIALIZE = topic("Initialize(bytes32,address,address,uint24,int24,address,uint160,int24)")
BALANCER_SWAP = topic("Swap(bytes32,address,address,uint256,uint256)")
PROTOCOL = {
    "uniswap-v2": ("uniswap", "2"),
    "sushiswap": ("uniswap", "2"),
    "uniswap-v3": ("uniswap", "3"),
    "uniswap-v4": ("uniswap", "4"),
    "balancer-v2": ("balancer", "2"),
}

Trade = tuple[int, str, str, str, int, str, int]  # log index, emitter, pool, sold, sold raw, bought, raw


def address(word: str) -> str:
    return "0x" + word[-40:]


class Chain:
    """Reads of the devnet node, at a block."""

    def __init__(self, devnet: Devnet, routes: CrossProtocolRoutes) -> None:
        self.rpc, self.routes = devnet.rpc, routes
        logs = self.rpc.call(
            "eth_getLogs",
            {
                "fromBlock": "0x0",
                "toBlock": "latest",
                "address": routes.v4.manager,
                "topics": [V4_INITIALIZE],
            },
        )
        self.currencies = {
            lg["topics"][1]: (address(lg["topics"][2]), address(lg["topics"][3])) for lg in logs
        }

    def word(self, to: str, data: str, block: int) -> str:
        return str(self.rpc.eth_call(to, data, hex(block)))

    def pair_tokens(self, pool: str) -> tuple[str, str]:
        """A v2 pair's or v3 pool's tokens, asked of the pool."""
        return address(self.rpc.eth_call(pool, calldata("token0()"))), address(
            self.rpc.eth_call(pool, calldata("token1()"))
        )

    def balance(self, holder: str, token: str, block: int) -> int:
        if token == NATIVE:
            return int(self.rpc.call("eth_getBalance", holder, hex(block)), 16)
        return int(self.word(token, calldata("balanceOf(address)", holder), block), 16)

    def vault_books(self, pool_id: str, block: int) -> dict[str, int]:
        out = self.word(
            self.routes.balancer.vault, calldata("getPoolTokens(bytes32)", bytes.fromhex(pool_id[2:])), block
        )
        tokens, balances, _ = decode(["address[]", "uint256[]", "uint256"], bytes.fromhex(out[2:]))
        return {t.lower(): b for t, b in zip(tokens, balances, strict=True)}

    def pool_change(self, hop: Hop, token: str, block: int) -> int:
        """How much of ``token`` the hop's pool gained in ``block``."""
        if hop.exchange == "balancer-v2":
            return self.vault_books(hop.pool, block)[token] - self.vault_books(hop.pool, block - 1)[token]
        return self.balance(hop.contract, token, block) - self.balance(hop.contract, token, block - 1)

    def decode_swap(self, lg: dict[str, Any]) -> Trade | None:
        """A swap log as Dune's dex.trades sides: (log index, emitter, pool id, sold, raw, bought, raw)."""
        t0, data, where = lg["topics"][0], bytes.fromhex(lg["data"][2:]), lg["address"]
        index = int(lg["logIndex"], 16)
        if t0 == V2_SWAP:
            token0, token1 = self.pair_tokens(where)
            in0, in1, out0, out1 = decode(["uint256"] * 4, data)
            sold = (token0, in0) if in0 else (token1, in1)
            bought = (token0, out0) if out0 else (token1, out1)
            return (index, where, where, *sold, *bought)
        if t0 == V3_SWAP:
            token0, token1 = self.pair_tokens(where)
            a0, a1 = decode(["int256", "int256"], data[:64])
            sold, bought = ((token0, a0), (token1, -a1)) if a0 > 0 else ((token1, a1), (token0, -a0))
            return (index, where, where, *sold, *bought)
        if t0 == V4_SWAP and where == self.routes.v4.manager:
            token0, token1 = self.currencies[lg["topics"][1]]
            a0, a1 = decode(["int128", "int128"], data[:64])  # the swapper's changes: negative = paid
            sold, bought = ((token0, -a0), (token1, a1)) if a0 < 0 else ((token1, -a1), (token0, a0))
            return (index, where, lg["topics"][1], *sold, *bought)
        if t0 == BALANCER_SWAP and where == self.routes.balancer.vault:
            amount_in, amount_out = decode(["uint256", "uint256"], data)
            pool_id, token_in, token_out = lg["topics"][1], address(lg["topics"][2]), address(lg["topics"][3])
            return (index, where, pool_id, token_in, amount_in, token_out, amount_out)
        return None


def expected_hops(chain: Chain, route: RouteTx, receipt: dict[str, Any]) -> list[Trade]:
    """The route's swaps from its receipt, checked against the plan and every balance they moved."""
    trades = [t for t in map(chain.decode_swap, receipt["logs"]) if t is not None]
    assert len(trades) == len(route.hops), route.name
    block = route.block_number
    for i, (hop, (_, emitter, pool, sold, sold_raw, bought, bought_raw)) in enumerate(
        zip(route.hops, trades, strict=True)
    ):
        assert (emitter, pool, sold, bought) == (hop.contract, hop.pool, hop.token_in, hop.token_out)
        assert sold_raw > 0 and bought_raw > 0
        if i:  # exact input: each hop sells everything the one before bought
            assert sold_raw == trades[i - 1][6]
        assert chain.pool_change(hop, sold, block) == sold_raw, (route.name, i)
        assert chain.pool_change(hop, bought, block) == -bought_raw, (route.name, i)
    # the sender paid the first hop's input and got the last hop's output (native ETH: net of gas)
    gas = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    first, last = trades[0], trades[-1]
    paid = chain.balance(route.sender, first[3], block - 1) - chain.balance(route.sender, first[3], block)
    got = chain.balance(route.sender, last[5], block) - chain.balance(route.sender, last[5], block - 1)
    assert paid - (gas if first[3] == NATIVE else 0) == first[4]
    assert got + (gas if last[5] == NATIVE else 0) == last[6]
    return trades


def erc20_transfers(receipt: dict[str, Any]) -> list[tuple[int, str, str, str, int]]:
    out = []
    for lg in receipt["logs"]:
        if lg["topics"][0] == TRANSFER and len(lg["topics"]) == 3:
            (value,) = decode(["uint256"], bytes.fromhex(lg["data"][2:]))
            out.append((int(lg["logIndex"], 16), lg["address"], address(lg["topics"][1]),
                        address(lg["topics"][2]), value))  # fmt: skip
    return out


@contextlib.asynccontextmanager
async def following(
    devnet: Devnet, dsn: str, sink: PostgresSink, settings: dict[str, str], first: int
) -> AsyncIterator[RpcClient]:
    """The follower running from block ``first`` into ``sink`` (stopped on leaving)."""
    async with RpcClient(devnet.rpc_http) as rpc:
        enrich = DexEnricher(rpc, sink.pool, registry_of(settings))
        follower = Follower(rpc, HeadStream(devnet.rpc_ws, rpc), start=[], from_block=first)
        task = asyncio.create_task(consume(follower, sink, quiet=True, enrich=enrich))
        try:
            yield rpc
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def route_truth(chain: Chain, route: RouteTx) -> tuple[RouteTx, dict[str, Any], list[Trade]]:
    receipt = chain.rpc.call("eth_getTransactionReceipt", route.transaction_hash)
    return route, receipt, expected_hops(chain, route, receipt)


def exact(raw: int, decimals: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 100
        return Decimal(raw) / Decimal(10) ** decimals


async def check_stored(db: Any, truth: list[tuple[RouteTx, dict[str, Any], list[Trade]]], devnet: Devnet,
                       router: str) -> None:  # fmt: skip
    """Each route's trades and ERC-20 transfers in ``db`` (a pool or connection) against the truth."""
    tokens = devnet.deployment.tokens.values()
    decimals = {t.address: t.decimals for t in tokens} | {NATIVE: 18}
    symbols = {t.address: t.symbol for t in tokens} | {NATIVE: "ETH"}
    for route, receipt, want in truth:
        rows = await db.fetch(
            "SELECT * FROM dex_trades WHERE transaction_hash = $1 ORDER BY log_index", route.transaction_hash
        )
        got = [
            (r["log_index"], r["pool_address"], r["token_sold_address"], int(r["amount_sold_raw"]),
             r["token_bought_address"], int(r["amount_bought_raw"]))
            for r in rows
        ]  # fmt: skip
        assert got == [(t[0], t[2], t[3], t[4], t[5], t[6]) for t in want], route.name
        for row, hop in zip(rows, route.hops, strict=True):
            assert (row["exchange"], row["protocol"], row["version"]) == (
                hop.exchange,
                *PROTOCOL[hop.exchange],
            )
            assert (row["block_number"], row["block_hash"]) == (route.block_number, receipt["blockHash"])
            assert (row["tx_from"], row["tx_to"]) == (route.sender, route.to)
            # Dune: v2 maker = the pair; taker = who the pool paid (the router); Balancer: the tx sender
            via_router = route.to == router and hop.exchange != "balancer-v2"
            assert row["taker"] == (router if via_router else route.sender)
            assert row["maker"] == (hop.pool if PROTOCOL[hop.exchange] == ("uniswap", "2") else None)
            for side in ("sold", "bought"):
                token = row[f"token_{side}_address"]
                assert row[f"token_{side}_symbol"] == symbols[token]
                assert row[f"amount_{side}"] == exact(int(row[f"amount_{side}_raw"]), decimals[token])
        transfers = await db.fetch(
            "SELECT log_index, token_address, from_address, to_address, value FROM token_transfers"
            " WHERE transaction_hash = $1 AND standard = 'erc20' ORDER BY log_index",
            route.transaction_hash,
        )
        assert [(*tuple(r)[:4], int(r["value"])) for r in transfers] == erc20_transfers(receipt), route.name
    # nothing else: the step's only swaps are the routes' hops
    assert await db.fetchval("SELECT count(*) FROM dex_trades") == sum(len(r.hops) for r, _, _ in truth)
    eth = await db.fetchrow("SELECT symbol, decimals, source FROM tokens WHERE address = $1", NATIVE)
    assert tuple(eth) == ("ETH", 18, "native")
    eth_legs = await db.fetchval(
        "SELECT count(*) FROM dex_trades WHERE $1 IN (token_sold_address, token_bought_address)", NATIVE
    )
    planned = sum(1 for r, _, _ in truth for h in r.hops if NATIVE in (h.token_in, h.token_out))
    assert eth_legs == planned > 0


async def test_each_hop_of_each_route_is_one_exact_trade_followed_through_a_reorg_and_backfilled(
    fresh_devnet: Devnet, clean_db: DatabaseInfo, scratch_db: DatabaseInfo, pytestconfig: pytest.Config
) -> None:
    devnet = fresh_devnet
    first = devnet.rpc.block_number() + 1
    routes = CrossProtocolRoutes(
        devnet.rpc, devnet.deployment, Path(pytestconfig.rootpath) / ".dexnode-test-cache"
    )
    sent = routes.run(rounds=2)
    assert [r.name for r in sent[:4]] == [
        "v2-v3-v4",
        "v4-v3-balancer",
        "balancer-sushiswap-v4",
        "balancer-batch",
    ]
    chain = Chain(devnet, routes)
    truth = [route_truth(chain, route) for route in sent]
    settings = routes.plugin_settings()

    sink = await PostgresSink.connect(clean_db.dsn)  # the follower, from the step's first block
    try:
        async with following(devnet, clean_db.dsn, sink, settings, first) as rpc:
            await wait_for_tip(clean_db.dsn, rpc, timeout=240)
            await check_stored(sink.pool, truth, devnet, routes.router)
            # a 2-block reorg: the last two routes (no ETH leg) replaced by two with native ETH legs
            plan = routes.routes()
            names = ["v2-v3-v4", "v4-v3-balancer"]
            branch = [[routes.request(n, plan[n][0], plan[n][1] * 3), i] for i, n in enumerate(names)]
            devnet.rpc.call("anvil_reorg", 2, branch)
            for name, old in zip(names, sent[-2:], strict=True):
                block = devnet.rpc.call("eth_getBlockByNumber", hex(old.block_number), False)
                (tx_hash,) = block["transactions"]
                new = RouteTx(name, tx_hash, old.block_number, old.sender, routes.router, plan[name][0])
                truth[sent.index(old)] = route_truth(chain, new)
            await wait_for_tip(clean_db.dsn, rpc, timeout=240)
            orphaned = [r.transaction_hash for r in sent[-2:]]
            assert (
                await sink.pool.fetchval(
                    "SELECT count(*) FROM dex_trades WHERE transaction_hash = ANY($1)", orphaned
                )
                == 0
            )
            await check_stored(sink.pool, truth, devnet, routes.router)
    finally:
        await sink.close()

    config = build_settings(
        database_url=scratch_db.dsn,
        rpc_http=devnet.rpc_http,
        confirmations=0,
        uniswap_v2_factories=settings.pop("uniswap_v2_factories"),
        uniswap_v3_factories=settings.pop("uniswap_v3_factories"),
        plugin_settings=settings,  # v4 and Balancer: plugins without a Settings field
    )  # the backfill, in parallel chunks, over the same range
    await backfill(
        config, from_block=first, to=str(devnet.rpc.block_number()), batch_blocks=7, workers=4,
        progress_tty=False, allow_unconfirmed=True,
    )  # fmt: skip
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        await check_stored(conn, truth, devnet, routes.router)
    finally:
        await conn.close()
