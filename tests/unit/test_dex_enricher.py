"""The DEX enricher on synthetic batches, against a local JSON-RPC server (``tests.rpc_replay``, real
HTTP) that answers each scripted ``eth_call`` at its block and can fail calls the way providers do.

What is checked: a 429/-32005 that outlives the client's retries is never taken for a revert (no
``not_pools`` entry, no ``unknown`` pool, no token with "reverted" decimals) and the retried batch
carries every pool and token it learned; calls are made at the batch's block; a reorg forgets what was
learned on the orphaned blocks; creation-event skips reach the batch's counts; the error mapping that
decides what is an answer."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak

from core.errors import RetryableError
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.chain.rpc_errors import (
    CallReverted,
    NotAvailableYet,
    RpcRetryableError,
    StateUnavailable,
    map_rpc_error,
)
from indexer.pipeline.dex import DexEnricher, registry_from
from records import Block, DexTrade, Log, Pool, Reorg, Token, Transaction
from records.batch import Batch
from tests.rpc_replay import Fault, ReplayServer

pytestmark = pytest.mark.unit

FACTORY = "0x" + "f1" * 20
OTHER_FACTORY = "0x" + "f2" * 20
PAIR = "0x" + "aa" * 20
TOKEN0, TOKEN1 = "0x" + "0a" * 20, "0x" + "0b" * 20
TAKER = "0x" + "cc" * 20
LIMIT = {"code": -32005, "message": "limit exceeded"}


def sig(text: str) -> str:
    return "0x" + keccak(text=text).hex()


def selector(text: str) -> str:
    return sig(text)[:10]


def word(abi_type: str, value: Any) -> str:
    return "0x" + encode([abi_type], [value]).hex()


def string_result(text: str) -> str:
    return "0x" + encode(["string"], [text]).hex()


def h(tag: str, n: int) -> str:
    return "0x" + (tag * 32)[:62] + f"{n:02x}"


def block(number: int, branch: str = "a") -> Block:
    values = {"number": number, "hash": h(branch, number), "parent_hash": h(branch, number - 1)}
    values |= {"gas_limit": 30_000_000, "gas_used": 0, "timestamp": 1_700_000_000 + number}
    values |= {"transaction_count": 1}
    return Block(**{f.name: values.get(f.name) for f in dataclasses.fields(Block)})


def tx(b: Block) -> Transaction:
    values = {"hash": h("e", b.number), "block_number": b.number, "block_hash": b.hash}
    values |= {"block_timestamp": b.timestamp, "transaction_index": 0, "nonce": 0, "from_address": TAKER}
    values |= {"to_address": PAIR, "value": 0, "gas": 21000, "input": "0x"}
    return Transaction(**{f.name: values.get(f.name) for f in dataclasses.fields(Transaction)})


def event(
    b: Block, address: str, signature: str, topics: list[tuple[str, Any]], data: list[Any], i: int
) -> Log:
    types = [t for t, _ in data]
    payload = "0x" + encode(types, [v for _, v in data]).hex()
    all_topics: list[str | None] = [sig(signature), *(word(t, v) for t, v in topics)]
    all_topics += [None] * (4 - len(all_topics))
    return Log(b.number, b.hash, h("e", b.number), 0, i, address, payload, *all_topics)


def swap(b: Block, i: int = 1) -> Log:
    """1000 token0 in, 1990 token1 out."""
    return event(
        b,
        PAIR,
        "Swap(address,uint256,uint256,uint256,uint256,address)",
        [("address", TAKER), ("address", TAKER)],
        [("uint256", 1000), ("uint256", 0), ("uint256", 0), ("uint256", 1990)],
        i,
    )


def pair_created(b: Block, factory: str = FACTORY) -> Log:
    return event(
        b,
        factory,
        "PairCreated(address,address,address,uint256)",
        [("address", TOKEN0), ("address", TOKEN1)],
        [("address", PAIR), ("uint256", 1)],
        0,
    )


def batch(b: Block, logs: list[Log], reorg: Reorg | None = None) -> Batch:
    return Batch("follow", [b], {Transaction: [tx(b)], Log: logs}, reorg=reorg)


def answer_pool(server: ReplayServer, at: int) -> None:
    """The pair's factory(), token0(), token1() and the factory's getPair() at block ``at``."""
    for name, value in (("factory", FACTORY), ("token0", TOKEN0), ("token1", TOKEN1)):
        server.set_result(
            "eth_call", [{"to": PAIR, "data": selector(f"{name}()")}, hex(at)], word("address", value)
        )
    get_pair = selector("getPair(address,address)") + encode(["address", "address"], [TOKEN0, TOKEN1]).hex()
    server.set_result("eth_call", [{"to": FACTORY, "data": get_pair}, hex(at)], word("address", PAIR))


def answer_tokens(server: ReplayServer, at: int) -> None:
    for token, symbol, decimals in ((TOKEN0, "AAA", 18), (TOKEN1, "USDX", 6)):
        server.set_result(
            "eth_call", [{"to": token, "data": selector("symbol()")}, hex(at)], string_result(symbol)
        )
        server.set_result(
            "eth_call", [{"to": token, "data": selector("name()")}, hex(at)], string_result(symbol)
        )
        server.set_result(
            "eth_call", [{"to": token, "data": selector("decimals()")}, hex(at)], word("uint8", decimals)
        )


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(folders=()) as s:
        yield s


async def no_sleep(_: float) -> None:
    return None


def client(server: ReplayServer) -> RpcClient:
    return RpcClient(server.url, retry=RetryPolicy(attempts=2), sleep=no_sleep)


def enricher(rpc: RpcClient, attempts: int = 0) -> DexEnricher:
    retry = RetryPolicy(attempts=attempts, base_delay=0)
    return DexEnricher(rpc, None, registry_from(f"{FACTORY}=uniswap-v2", ""), retry=retry)


# -- a transient failure is not an answer ----------------------------------------------------------------


async def test_a_rate_limit_outliving_the_retries_fails_the_batch_and_is_never_stored_as_a_revert(
    server: ReplayServer,
) -> None:
    b = block(100)
    answer_pool(server, 100)
    answer_tokens(server, 100)
    server.faults.append(Fault("error", method="eth_call", match=selector("token0()"), times=2, error=LIMIT))
    async with client(server) as rpc:
        enrich = enricher(rpc, attempts=1)
        with pytest.raises(RetryableError):
            await enrich(batch(b, []), batch(b, [swap(b)]))
        assert (enrich.pools, enrich.not_pools, enrich.tokens) == ({}, set(), {})  # nothing guessed
        out = await enrich(batch(b, []), batch(b, [swap(b)]))  # the node answers now
    assert [p.address for p in out.of(Pool)] == [PAIR] and out.of(Pool)[0].exchange == "uniswap-v2"
    assert {t.address: t.decimals for t in out.of(Token)} == {TOKEN0: 18, TOKEN1: 6}
    (trade,) = out.of(DexTrade)
    assert (trade.amount_sold_raw, trade.amount_bought_raw, trade.token_sold_address) == (1000, 1990, TOKEN0)


async def test_a_retried_batch_still_writes_the_pool_it_saw_created(server: ReplayServer) -> None:
    """Token reads fail after the batch's PairCreated was decoded: the retry must carry the pool again."""
    b = block(100)
    answer_tokens(server, 100)
    server.faults.append(
        Fault("error", method="eth_call", match=selector("decimals()"), times=3, error=LIMIT)
    )
    async with client(server) as rpc:
        enrich = enricher(rpc)  # waits the failure out by itself
        out = await enrich(batch(b, []), batch(b, [pair_created(b), swap(b)]))
    assert [(p.address, p.created_block_number) for p in out.of(Pool)] == [(PAIR, 100)]
    assert {t.address: t.decimals for t in out.of(Token)} == {TOKEN0: 18, TOKEN1: 6}
    assert len(out.of(DexTrade)) == 1 and enrich.counts["enrich.retries"] == 1


async def test_calls_are_made_at_the_batch_block_not_latest(server: ReplayServer) -> None:
    b = block(100)
    answer_pool(server, 100)
    answer_tokens(server, 100)  # nothing answers at "latest": a call there fails the test
    async with client(server) as rpc:
        out = await enricher(rpc, attempts=1)(batch(b, []), batch(b, [swap(b)]))
    assert len(out.of(DexTrade)) == 1


# -- reorgs and counts ------------------------------------------------------------------------------------


async def test_a_reorg_forgets_what_was_learned_on_the_orphaned_block(server: ReplayServer) -> None:
    """On the old branch the emitter was no pool at block 100 (token0() reverts); on the new branch it
    is one (e.g. a fork whose factory deploys pairs with CREATE). The cache must not outlive the reorg."""
    old, new = block(100, "a"), block(100, "b")
    reverted = {"code": 3, "message": "execution reverted", "data": "0x"}
    server.faults.append(
        Fault("error", method="eth_call", match=selector("token0()"), times=1, error=reverted)
    )
    answer_pool(server, 100)
    answer_tokens(server, 100)
    async with client(server) as rpc:
        enrich = enricher(rpc, attempts=1)
        first = await enrich(batch(old, []), batch(old, [swap(old)]))
        assert list(first.of(DexTrade)) == [] and first.skipped["dex.skip.unknown_pool"] == 1
        reorg = Reorg(99, h("a", 99), 1, (old.hash,), (new.hash,), 0)
        second = await enrich(batch(new, []), batch(new, [swap(new)], reorg))
    assert [p.address for p in second.of(Pool)] == [PAIR]
    assert len(second.of(DexTrade)) == 1 and second.of(DexTrade)[0].block_hash == new.hash


async def test_a_reorg_drops_pools_created_on_orphaned_blocks_and_keeps_older_ones(
    server: ReplayServer,
) -> None:
    answer_tokens(server, 100)
    async with client(server) as rpc:
        enrich = enricher(rpc, attempts=1)
        b = block(100)
        await enrich(batch(b, []), batch(b, [pair_created(b)]))
        assert PAIR in enrich.pools
        await enrich.forget(Reorg(100, b.hash, 1, (h("a", 101),), (h("b", 101),), 0))
        assert PAIR in enrich.pools  # created at the ancestor itself: still canonical
        await enrich.forget(Reorg(99, h("a", 99), 2, (b.hash, h("a", 101)), (h("b", 100), h("b", 101)), 0))
        assert PAIR not in enrich.pools and TOKEN0 not in enrich.tokens


async def test_skipped_creation_events_reach_the_batch_counts(server: ReplayServer) -> None:
    b = block(100)
    async with client(server) as rpc:
        out = await enricher(rpc, attempts=1)(batch(b, []), batch(b, [pair_created(b, OTHER_FACTORY)]))
    assert out.of(Pool) == [] and out.skipped["dex.skip.unconfigured_factory"] == 1


# -- eth_calls and the error mapping ---------------------------------------------------------------------


async def test_eth_calls_raise_a_lasting_retryable_failure_and_ask_pruned_state_at_latest(
    server: ReplayServer,
) -> None:
    data = selector("decimals()")
    server.set_result("eth_call", [{"to": TOKEN0, "data": data}, "latest"], word("uint8", 6))
    pruned = {"code": -32000, "message": "missing trie node abc (path )"}
    server.faults.append(Fault("error", method="eth_call", match="_0x5", times=1, error=pruned))
    async with client(server) as rpc:
        (result,) = await rpc.eth_calls([(TOKEN0, data)], 5)
        assert result.data == word("uint8", 6)
        server.faults.append(Fault("error", method="eth_call", times=2, error=LIMIT))
        with pytest.raises(RpcRetryableError):
            await rpc.eth_calls([(TOKEN0, data)], "latest")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"code": -32602, "message": "BlockOutOfRangeError: block height is 312 but requested was 5"},
            StateUnavailable,
        ),
        (
            {"code": -32602, "message": "BlockOutOfRangeError: block height is 312 but requested was 313"},
            NotAvailableYet,
        ),
        ({"code": -32000, "message": "missing trie node 1234 (path )"}, StateUnavailable),
        ({"code": -32000, "message": "historical state 0xab.. is not available"}, StateUnavailable),
        ({"code": -32000, "message": "out of gas"}, CallReverted),
        ({"code": -32000, "message": "invalid opcode: INVALID"}, CallReverted),
        ({"code": -32603, "message": "EvmError: OutOfGas"}, CallReverted),
        ({"code": -32005, "message": "limit exceeded"}, RpcRetryableError),
        ({"code": -32000, "message": "execution aborted (timeout = 5s)"}, RpcRetryableError),
        ({"code": -32000, "message": "header not found"}, RpcRetryableError),
    ],
)
def test_what_is_an_answer(error: dict[str, Any], expected: type[Exception]) -> None:
    assert type(map_rpc_error(error, "eth_call")) is expected
