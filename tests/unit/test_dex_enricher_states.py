"""The DEX enricher as a state machine, on synthetic batches against the local JSON-RPC replay server (no
database: ``db=None``, memory is the only cache).

States: what the enricher knows (pools, contracts proven not to be pools, tokens), each remembered with
the block it was learned at. Transitions checked here: a pool or token learned once is never asked for
again and never written twice; a contract proven not a pool is not asked again until a reorg orphans
the block that proved it, and is kept by a reorg above that block; a pool created in the batch decodes
its swaps without being classified; a pool whose factory does not vouch for it stays ``unknown``, and
its trades say so. The expectations are the scripted chain's facts, not the enricher's own code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from eth_abi import encode

from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from records import DexTrade, Pool, Reorg, Token
from tests.rpc_replay import Fault, ReplayServer
from tests.unit.test_dex_enricher import (
    FACTORY,
    PAIR,
    TOKEN0,
    TOKEN1,
    answer_pool,
    answer_tokens,
    batch,
    block,
    h,
    pair_created,
    selector,
    swap,
    word,
)

pytestmark = pytest.mark.unit

REVERTED = {"code": 3, "message": "execution reverted", "data": "0x"}


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(folders=()) as s:
        yield s


@pytest.fixture
async def rpc(server: ReplayServer) -> AsyncIterator[RpcClient]:
    async with RpcClient(server.url, retry=RetryPolicy(attempts=1), sleep=no_sleep) as client:
        yield client


@pytest.fixture
def enrich(rpc: RpcClient) -> DexEnricher:
    return DexEnricher(
        rpc, None, registry_from(f"{FACTORY}=uniswap-v2", ""), retry=RetryPolicy(attempts=1, base_delay=0)
    )


def trade_facts(trade: DexTrade) -> tuple[object, ...]:
    return (
        trade.block_number, trade.pool_address, trade.protocol, trade.exchange, trade.token_sold_address,
        trade.token_sold_symbol, trade.amount_sold_raw, trade.token_bought_address, trade.token_bought_symbol,
        trade.amount_bought_raw, trade.amount_bought,
    )  # fmt: skip


# swap(): 1000 of token0 ("AAA", 18 decimals) in, 1990 of token1 ("USDX", 6 decimals) out
def v2_trade(number: int, protocol: str = "uniswap", exchange: str = "uniswap-v2") -> tuple[object, ...]:
    return (number, PAIR, protocol, exchange, TOKEN0, "AAA", 1000, TOKEN1, "USDX", 1990, Decimal("0.00199"))


async def test_a_pool_and_its_tokens_learned_once_are_never_asked_for_or_written_again(
    server: ReplayServer, enrich: DexEnricher
) -> None:
    first_block, next_block = block(100), block(101)
    answer_pool(server, 100)
    answer_tokens(server, 100)  # nothing is scripted at 101: a call there fails the test
    first = await enrich([], batch(first_block, [swap(first_block)]))
    calls = server.count("eth_call")
    assert calls == 4 + 6  # factory, token0, token1, getPair; symbol, name, decimals of two tokens
    assert [p.address for p in first.of(Pool)] == [PAIR]
    assert sorted(t.address for t in first.of(Token)) == [TOKEN0, TOKEN1]

    second = await enrich([], batch(next_block, [swap(next_block)]))
    assert server.count("eth_call") == calls  # memory answered
    assert (list(second.of(Pool)), list(second.of(Token))) == ([], [])  # already written with the first batch
    assert [trade_facts(t) for t in second.of(DexTrade)] == [v2_trade(101)]


async def test_a_pool_created_in_the_batch_decodes_its_swaps_without_being_classified(
    server: ReplayServer, enrich: DexEnricher
) -> None:
    b = block(100)
    answer_tokens(server, 100)  # only the tokens are scripted: a classification call fails the test
    out = await enrich([], batch(b, [pair_created(b), swap(b)]))
    assert server.count("eth_call") == 6
    (pool,) = out.of(Pool)
    assert (pool.address, pool.token0, pool.token1, pool.factory, pool.exchange) == (
        PAIR, TOKEN0, TOKEN1, FACTORY, "uniswap-v2",
    )  # fmt: skip
    assert (pool.created_block_number, pool.created_block_hash, pool.created_log_index) == (100, b.hash, 0)
    assert [trade_facts(t) for t in out.of(DexTrade)] == [v2_trade(100)]


async def test_a_contract_proven_not_a_pool_is_not_asked_again_until_a_reorg_orphans_the_proof(
    server: ReplayServer, enrich: DexEnricher
) -> None:
    b100, b101 = block(100), block(101)
    answer_pool(server, 100)
    server.faults.append(
        Fault("error", method="eth_call", match=selector("token0()"), times=1, error=REVERTED)
    )
    first = await enrich([], batch(b100, [swap(b100)]))
    assert list(first.of(DexTrade)) == [] and first.skipped["dex.skip.unknown_pool"] == 1
    asked = server.count("eth_call")

    # a later block, no reorg: the proof stands, nothing is asked
    second = await enrich([], batch(b101, [swap(b101)]))
    assert server.count("eth_call") == asked
    assert list(second.of(DexTrade)) == [] and second.skipped["dex.skip.unknown_pool"] == 1

    # a reorg above the proving block keeps the proof
    new101 = block(101, "b")
    keep = Reorg(100, b100.hash, 1, (b101.hash,), (new101.hash,), 0)
    third = await enrich([], batch(new101, [swap(new101)], keep))
    assert server.count("eth_call") == asked and list(third.of(DexTrade)) == []

    # a reorg that orphans block 100 orphans the proof: the contract is asked again, and is a pool now
    new100, new102 = block(100, "c"), block(102, "c")
    answer_pool(server, 102)
    answer_tokens(server, 102)
    orphan = Reorg(99, h("a", 99), 2, (b100.hash, new101.hash), (new100.hash, new102.hash), 0)
    fourth = await enrich([], batch(new102, [swap(new102)], orphan))
    assert server.count("eth_call") == asked + 4 + 6
    assert [p.address for p in fourth.of(Pool)] == [PAIR]
    assert [trade_facts(t) for t in fourth.of(DexTrade)] == [v2_trade(102)]


async def test_a_pool_its_factory_does_not_vouch_for_stays_unknown_and_so_do_its_trades(
    server: ReplayServer, enrich: DexEnricher
) -> None:
    b = block(100)
    answer_pool(server, 100)
    answer_tokens(server, 100)
    # the factory's getPair names another pair: the emitter only claims to be one of its pairs
    get_pair = selector("getPair(address,address)") + encode(["address", "address"], [TOKEN0, TOKEN1]).hex()
    server.set_result(
        "eth_call", [{"to": FACTORY, "data": get_pair}, hex(100)], word("address", "0x" + "ee" * 20)
    )
    out = await enrich([], batch(b, [swap(b)]))
    (pool,) = out.of(Pool)
    assert (pool.address, pool.protocol, pool.exchange, pool.token0, pool.token1) == (
        PAIR, "unknown", "unknown", TOKEN0, TOKEN1,
    )  # fmt: skip
    (trade,) = out.of(DexTrade)
    assert (trade.protocol, trade.exchange, trade.pool_address) == ("unknown", "unknown", PAIR)
    assert enrich.counts["pool.unknown"] == 1 and enrich.counts["pool.uniswap-v2"] == 0
