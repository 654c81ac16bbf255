"""The follower against a scripted node into real Postgres: what a hosted node serves besides reorgs.
Head hashes the HTTP backend never serves, receipts asked with their block (or refused by number), a
websocket that sends garbage, does not exist or drops. The expectation is always the scripted chain
itself (tests/integration/follower_scenarios.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.database import DatabaseInfo
from sinks.postgres import PostgresSink
from tests.integration.follower_scenarios import (
    assert_db_is_chain,
    following,
    reorg_rows,
    scripted,
    wait_for_head,
)

pytestmark = pytest.mark.integration


async def test_a_head_hash_the_node_never_serves_does_not_stall(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    async with scripted(10) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.wait_for_subscriber()
        side = node.chain.side_block(10)  # seen by another backend; this one answers null by hash
        node.refused_hashes.add(side["hash"])
        await node.send_head_and_wait(side)
        await node.mine(3)
        await wait_for_head(run, node, clean_db.dsn, timeout=15)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 14))
        assert await reorg_rows(clean_db.dsn) == []
        assert run.reorgs == []


async def test_receipts_come_with_their_block_in_one_request(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """A new block is asked with its receipts (by number) in one JSON-RPC batch: nothing is asked by
    hash, and what is stored is still exactly the chain."""
    async with scripted(10) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        node.calls.clear()
        for _ in range(3):
            await node.mine(1)
            await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 14))
        receipts = [p[0] for m, p in node.calls if m == "eth_getBlockReceipts"]
        assert receipts == ["0xb", "0xc", "0xd"], receipts
        assert run.follower.receipts_guessed >= 3


async def test_a_node_that_refuses_receipts_by_number(sink: PostgresSink, clean_db: DatabaseInfo) -> None:
    """Receipts by number refused (JSON-RPC -32601, as for a method the node lacks): the follower stops
    asking them with the block and asks them by hash; every block is stored exactly."""
    async with scripted(10) as node:

        def refuse_by_number(method: str, params: list[Any]) -> None:
            if method == "eth_getBlockReceipts" and len(str(params[0])) != 66:
                raise KeyError(method)  # the scripted node's "method not found"

        node.before_answer = refuse_by_number
        async with following(node, sink) as run:
            await wait_for_head(run, node, clean_db.dsn)
            await node.mine(2)
            await wait_for_head(run, node, clean_db.dsn)
            await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 13))
            assert not run.follower.receipts_with_block
            assert run.follower.receipts_guessed == 0
            by_hash = [p[0] for m, p in node.calls if m == "eth_getBlockReceipts" and len(p[0]) == 66]
            assert by_hash[-2:] == [node.chain.block(11)["hash"], node.chain.block(12)["hash"]]  # type: ignore[index]


async def test_malformed_websocket_messages_are_logged_and_survived(
    sink: PostgresSink, clean_db: DatabaseInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dexnode.heads")
    async with scripted(5) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.wait_for_subscriber()
        for garbage in [
            "not json {",
            "[1, 2]",
            '{"jsonrpc": "2.0", "method": "eth_subscription", "params": "x"}',
            '{"jsonrpc": "2.0", "method": "eth_subscription", "params": {"result": {"number": "zz"}}}',
            '{"jsonrpc": "2.0", "method": "eth_subscription", "params": {"result": []}}',
            "42",
        ]:
            await node.send_raw(garbage)
        await node.mine(1)  # the websocket must still be read: polling happens only every 12 s here
        await wait_for_head(run, node, clean_db.dsn, timeout=8)
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn, timeout=8)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(5, 8))
        assert run.heads.malformed == 6
        assert run.heads.reconnects == 0
    logged = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(logged) == 6


@pytest.mark.parametrize("ws", ["refused", "absent"])
async def test_without_a_websocket_heads_are_polled_at_the_block_time(
    sink: PostgresSink, clean_db: DatabaseInfo, ws: str
) -> None:
    """A node without websocket (or a user who set only the HTTP URL): blocks 1 s apart are picked up by
    polling within a few block times, not after the one-minute silence timeout."""
    async with scripted(5, block_time=1, websocket=False) as node:
        node.auto_heads = False
        async with following(node, sink, ws_url=node.ws_url if ws == "refused" else None) as run:
            await wait_for_head(run, node, clean_db.dsn)
            for _ in range(3):
                await node.mine(1)
                await wait_for_head(run, node, clean_db.dsn, timeout=10)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(5, 9))


async def test_when_the_websocket_drops_heads_are_polled_at_the_block_time(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """A subscribed websocket is closed by the node, which then refuses new connections: blocks 1 s apart
    are picked up by polling within a few block times, not after the one-minute silence timeout."""
    async with scripted(5, block_time=1) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.wait_for_subscriber()
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn, timeout=5)
        await node.drop_websockets()
        for _ in range(3):
            await node.mine(1)
            await wait_for_head(run, node, clean_db.dsn, timeout=10)
        assert run.heads.reconnects >= 1 and not run.heads.subscribed
        await assert_db_is_chain(clean_db.dsn, node.chain, range(5, 10))
