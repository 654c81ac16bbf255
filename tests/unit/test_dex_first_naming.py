"""``DexEnricher._first_naming``: the events the pool, token and state lookups of a batch look at — the
first of each handler and pool id, in log order. The pool id is the emitter for Uniswap v2/v3 and topic1
for a singleton's events (Uniswap v4's PoolManager, Balancer's Vault): two pools of one singleton are two
pools, and the same emitter's Swap and Sync are two handlers, each kept with its first event."""

from __future__ import annotations

import pytest

from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from records import Log

pytestmark = pytest.mark.unit

REGISTRY = registry_from(None)  # every plugin with its mainnet venues


def topic0_of(protocol: str, name: str) -> str:
    return next(t for t, h in REGISTRY.handlers.items() if h.protocol == protocol and h.event == name)


V2_SWAP, V2_SYNC, V4_SWAP = (
    topic0_of("uniswap-v2", "Swap"),
    topic0_of("uniswap-v2", "Sync"),
    topic0_of("uniswap-v4", "Swap"),
)
PAIR_A, PAIR_B, MANAGER = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20
POOL_X, POOL_Y = "0x" + "01" * 32, "0x" + "02" * 32
SENDER = "0x" + "0" * 24 + "dd" * 20


def event(log_index: int, address: str, topic0: str, topic1: str | None = None) -> Log:
    return Log(1, "0x" + "ee" * 32, "0x" + "ff" * 32, 0, log_index, address, "0x", topic0, topic1, None, None)


async def test_the_first_event_of_each_handler_and_pool_in_log_order() -> None:
    events = [
        event(0, PAIR_A, V2_SYNC),
        event(1, PAIR_A, V2_SWAP, SENDER),
        event(2, PAIR_B, V2_SWAP, SENDER),
        event(3, PAIR_A, V2_SWAP, SENDER),  # pair A's Swap again
        event(4, MANAGER, V4_SWAP, POOL_X),
        event(5, MANAGER, V4_SWAP, POOL_Y),  # the same emitter, another pool
        event(6, MANAGER, V4_SWAP, POOL_X),
        event(7, PAIR_B, V2_SYNC),
        event(8, PAIR_A, V2_SYNC),
    ]
    async with RpcClient("http://127.0.0.1:9") as rpc:  # never called: the method is pure
        enricher = DexEnricher(rpc, None, REGISTRY)
        assert [e.log_index for e in enricher._first_naming(events)] == [0, 1, 2, 4, 5, 7]
        assert enricher._first_naming([]) == []
