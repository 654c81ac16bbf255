"""A follower restarted after a reorg deeper than its stored (short) window: the stored chain is a branch
that forks off the node's below its oldest block. The start-up check (``cli.follow.check_chain``, which
``dexnode follow`` and ``dexnode run`` call) resolves it on the node, walking the stored chain's parents
back by hash to the node's canonical block there, within ``max_reorg_depth``; the follower then
replaces the stored blocks. Past the maximum depth, or on a node that knows nothing of the stored
chain (another chain), it refuses with one message that says what to check and what to do.

The node is the scripted one (real HTTP + websocket, ``tests/scripted_node.py``) and the database real
Postgres; the expectation is the scripted chain itself.
"""

from __future__ import annotations

import pytest

from cli.follow import check_chain, start_chain, warn_if_indexes_missing
from core.database import DatabaseInfo
from core.errors import FatalError
from indexer.backfill.store import drop_secondary_indexes, rebuild_indexes
from indexer.chain.rpc import RetryPolicy, RpcClient
from sinks.postgres import PostgresSink
from tests.integration.follower_scenarios import (
    assert_db_is_chain,
    following,
    reorg_rows,
    scripted,
    wait_for_head,
)
from tests.scripted_node import ScriptedChain, ScriptedNode

pytestmark = pytest.mark.integration


async def test_a_restart_after_a_reorg_below_the_short_window_is_resolved_on_the_node(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """Started at block 9 on an empty database, stopped at 10; while it was down the node replaced
    blocks 7..10 (the fork is two blocks below what was stored) with a longer branch."""
    async with scripted(10) as node:
        async with following(node, sink, from_block=9) as run:
            await wait_for_head(run, node, clean_db.dsn)
        orphaned = node.chain.canonical_hashes[9:11]
        await node.reorg(4, 5)  # 7..11 new
        chain = await start_chain(sink, 11)
        assert [ref.hash for ref in chain] == orphaned
        async with RpcClient(node.http_url) as rpc:
            await check_chain(rpc, chain, max_reorg_depth=10)
        async with following(node, sink, start=chain) as run:
            await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(9, 12))
        new = node.chain.canonical_hashes[9:12]
        assert await reorg_rows(clean_db.dsn) == [(2, orphaned, new)]


async def test_a_fork_past_the_maximum_reorg_depth_is_refused_with_what_to_do(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """Stored 27..30; the node replaced 21..30: ten blocks below the stored tip. With
    ``max_reorg_depth`` 10 that is resolved; with 5 it is refused, naming the setting."""
    async with scripted(30) as node:
        async with following(node, sink, from_block=27) as run:
            await wait_for_head(run, node, clean_db.dsn)
        await node.reorg(10)
        chain = await start_chain(sink, 11)
        async with RpcClient(node.http_url) as rpc:
            await check_chain(rpc, chain, max_reorg_depth=10)
            with pytest.raises(FatalError) as refused:
                await check_chain(rpc, chain, max_reorg_depth=5)
    message = str(refused.value)
    assert "no common block was found down to block 25, the maximum reorg depth (5) below 30" in message
    assert "DEXNODE_MAX_REORG_DEPTH" in message and "is DEXNODE_RPC_HTTP the chain" in message


async def test_a_node_of_another_chain_is_still_refused(sink: PostgresSink, clean_db: DatabaseInfo) -> None:
    async with scripted(10) as node, following(node, sink, from_block=8) as run:
        await wait_for_head(run, node, clean_db.dsn)
    chain = await start_chain(sink, 11)
    other = ScriptedNode(chain=ScriptedChain())
    other.chain.make_block(0, "0x" + "11" * 32)  # a block never made canonical: every hash after differs
    other.chain.mine(20)
    assert other.chain.block(0) != node.chain.block(0)
    fast = RetryPolicy(attempts=2, base_delay=0.01)  # a null by hash is asked again: not for long here
    async with other.serving(), RpcClient(other.http_url, retry=fast) as rpc:
        with pytest.raises(FatalError, match="the node does not know the stored chain's block") as refused:
            await check_chain(rpc, chain, max_reorg_depth=10)
    assert "is DEXNODE_RPC_HTTP the chain this database indexed?" in str(refused.value)


async def test_a_follower_started_with_the_secondary_indexes_dropped_says_so(
    sink: PostgresSink, clean_db: DatabaseInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """A first backfill drops them by default; killed, it leaves them missing until the next one."""
    assert not await warn_if_indexes_missing(sink)
    assert "secondary indexes are missing" not in caplog.text
    dropped = await drop_secondary_indexes(sink.pool)
    try:
        assert await warn_if_indexes_missing(sink)
        assert f"{len(dropped)} secondary indexes are missing" in caplog.text
        assert "`dexnode backfill`" in caplog.text
    finally:
        await rebuild_indexes(sink.pool)
    assert not await warn_if_indexes_missing(sink)
