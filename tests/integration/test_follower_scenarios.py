"""The follower against a scripted node (real HTTP + websocket, tests/scripted_node.py) into real Postgres:
reorgs. Deeper than the stored history, between a block and its receipts, over a resume window with
holes, while the follower is catching up, behind rate limits and timeouts, revealed only by a late head,
and side-branch answers that must orphan nothing. The expectation is always the scripted chain itself
(tests/integration/follower_scenarios.py); the node's other faults are in test_follower_scenarios_node.py,
keys in node URLs in test_follower_scenarios_keys.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.database import DatabaseInfo
from indexer.chain.rpc import RetryPolicy, RpcClient
from sinks.postgres import PostgresSink
from tests.integration.follower_scenarios import (
    assert_db_is_chain,
    following,
    reorg_rows,
    scripted,
    store,
    wait_for_head,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("depth", [1, 3])
async def test_a_reorg_of_the_first_stored_block_is_resolved_on_the_node(
    sink: PostgresSink, clean_db: DatabaseInfo, depth: int
) -> None:
    """Fresh database, started at the head N: the node replaces N (and, for depth 3, two blocks below it
    that were never stored). The new branch's block N replaces the stored one."""
    async with scripted(10) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        old = node.chain.head["hash"]
        await node.reorg(depth)
        await wait_for_head(run, node, clean_db.dsn)
        await node.mine(2)
        await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 13))
        assert await reorg_rows(clean_db.dsn) == [(1, [old], [node.chain.block(10)["hash"]])]  # type: ignore[index]


async def test_a_block_that_leaves_the_chain_before_its_receipts_is_not_waited_for(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """The reorg lands between the fetch of block 11 and its receipts (anvil: the orphan's receipts and
    the orphan by hash are null from then on; the receipts asked by number with the block are the new
    block 11's, which extraction refuses). The follower asks for the receipts a few times, sees the
    block is no longer the node's block 11 and syncs again, instead of waiting out the client's whole
    retry policy twice (receipts, then the block by hash): the demo stalled ~13 s at every reorg."""
    patient = RetryPolicy(attempts=6, base_delay=0.02, max_delay=0.1)  # the default's tries, sped up
    async with scripted(10) as node, following(node, sink, retry=patient) as run:
        await wait_for_head(run, node, clean_db.dsn)
        orphaned: list[str] = []

        def reorg_before_receipts(method: str, params: list[Any]) -> None:
            # asked by number in the block's own request, or by hash after it
            block = node.chain.block(11)
            if (
                method == "eth_getBlockReceipts"
                and not orphaned
                and block is not None
                and params[0] in (block["hash"], "0xb")
            ):
                orphaned.append(block["hash"])
                node.refused_hashes.add(block["hash"])
                node.chain.reorg(1)

        node.before_answer = reorg_before_receipts
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn)
        await node.mine(1)  # the new branch's head reaches the follower as the next hint
        await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 13))
        assert orphaned, "the scripted reorg never happened"
        asked = [p for m, p in node.calls if m == "eth_getBlockReceipts" and p[0] == orphaned[0]]
        by_hash = [p for m, p in node.calls if m == "eth_getBlockByHash" and p[0] == orphaned[0]]
        assert len(asked) <= 3, f"the orphan's receipts were asked {len(asked)} times"
        assert by_hash == [], f"the orphan was fetched by hash {len(by_hash)} times"


async def test_a_late_side_head_orphans_nothing(sink: PostgresSink, clean_db: DatabaseInfo) -> None:
    async with scripted(8) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.mine(3)
        await wait_for_head(run, node, clean_db.dsn)
        await node.wait_for_subscriber()
        await node.send_head_and_wait(node.chain.side_block(9))  # a stale head from a side branch
        await node.send_head(node.chain.block(10))  # type: ignore[arg-type]  # a late duplicate of a stored one
        await asyncio.sleep(0.2)
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(8, 13))
        assert await reorg_rows(clean_db.dsn) == []
        assert run.reorgs == []


@pytest.mark.parametrize("depth", [1, 4])
async def test_a_reorg_over_a_resume_window_with_holes(
    sink: PostgresSink, clean_db: DatabaseInfo, depth: int
) -> None:
    """A backfill stored 1..5, the follower 8..10 (its cursor at 10); restarted, the window 1..10 has a
    hole at 6..7. The node replaces the last ``depth`` blocks: a 1-block reorg, or one reaching into the
    hole; the hole is filled from the new branch."""
    from cli.follow import start_chain

    async with scripted(10) as node:
        await store(sink, node.chain, range(1, 6))
        async with following(node, sink, from_block=8) as run:
            await wait_for_head(run, node, clean_db.dsn)
        chain = await start_chain(sink, 11)
        assert [r.number for r in chain] == [1, 2, 3, 4, 5, 8, 9, 10]
        orphaned = [node.chain.block(n)["hash"] for n in range(11 - depth, 11) if n >= 8]  # type: ignore[index]
        await node.reorg(depth)
        async with following(node, sink, start=chain) as run:
            await wait_for_head(run, node, clean_db.dsn)
            await node.mine(1)
            await wait_for_head(run, node, clean_db.dsn)
        numbers = [1, 2, 3, 4, 5, 8, 9, 10, 11] if depth == 1 else list(range(1, 12))
        await assert_db_is_chain(clean_db.dsn, node.chain, numbers)
        assert [(d, o) for d, o, _ in await reorg_rows(clean_db.dsn)] == [(len(orphaned), orphaned)]


@pytest.mark.parametrize(("fetching", "depth"), [(14, 4), (15, 6), (13, 5)])
async def test_reorgs_during_a_gap_fill(
    sink: PostgresSink, clean_db: DatabaseInfo, fetching: int, depth: int
) -> None:
    """The follower started at block 10 on an empty database and is catching up to 15 when the node
    reorgs: shallow (replacing blocks it just stored), deep (below its first stored block)."""
    async with scripted(15) as node:
        done = False

        def reorg_once(method: str, params: list[Any]) -> None:
            nonlocal done
            if not done and method == "eth_getBlockByNumber" and params[0] == hex(fetching):
                done = True
                node.chain.reorg(depth)

        node.before_answer = reorg_once
        async with following(node, sink, from_block=10) as run:  # its first head (polled) is 15
            await wait_for_head(run, node, clean_db.dsn)
            await node.mine(1)
            await wait_for_head(run, node, clean_db.dsn)
        assert done
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 17))


async def test_429s_and_timeouts_during_a_reorg_lose_nothing(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """Rate limits and timeouts that outlive the RPC client's retries, while the follower catches up five
    blocks and a reorg replaces three it stored: waited out, and the database is the canonical chain."""
    async with scripted(10) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.mine(3)
        await wait_for_head(run, node, clean_db.dsn)
        node.fail("eth_getBlockByNumber", "429", times=4)
        node.fail("eth_getBlockReceipts", "timeout", times=3, delay=1.2)  # the client gives up after 1 s
        node.fail("eth_getBlockByHash", "500", times=4)
        node.auto_heads = False
        orphaned = node.chain.canonical_hashes[11:14]
        node.chain.reorg(3, 5)
        await node.send_head(node.chain.head)
        await wait_for_head(run, node, clean_db.dsn, timeout=60)
        assert all(f.remaining == 0 for f in node.faults)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(10, 16))
        (reorg,) = run.reorgs
        assert [r.hash for r in reorg.orphaned] == orphaned
        new = [(n.extracted.block.number, n.extracted.block.hash) for n in reorg.new]
        assert new == [(number, hash_) for number, hash_, _ in node.chain.canonical(11)][: len(new)]


async def test_a_block_from_a_backend_on_a_side_branch_orphans_nothing(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """Behind a load balancer, one answer to eth_getBlockByNumber(11) comes from a backend that followed
    a side branch (a sibling of the stored 10 and its child). The node's canonical block at 10 is still the
    stored one: nothing is orphaned, no reorg is written, block 11 is the canonical one."""
    async with scripted(10) as node, following(node, sink, from_block=7) as run:
        await wait_for_head(run, node, clean_db.dsn)
        side10 = node.chain.side_block(10)
        side11 = node.chain.make_block(11, side10["hash"])
        node.overrides[("eth_getBlockByNumber", hex(11))] = [side11]
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn)
        assert node.overrides[("eth_getBlockByNumber", hex(11))] == []  # the side answer was given
        await assert_db_is_chain(clean_db.dsn, node.chain, range(7, 12))
        assert await reorg_rows(clean_db.dsn) == []
        assert run.reorgs == []


async def test_a_restart_after_a_reorg_of_the_whole_short_window(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """Started at block 9 on an empty database, stopped at 10; while it was down the node replaced both
    blocks. On restart the stored chain is a branch off the node's block 8, not another chain: the
    follower replaces it."""
    from cli.follow import check_chain, start_chain

    async with scripted(10) as node:
        async with following(node, sink, from_block=9) as run:
            await wait_for_head(run, node, clean_db.dsn)
        orphaned = node.chain.canonical_hashes[9:11]
        await node.reorg(2, 3)
        chain = await start_chain(sink, 11)
        async with RpcClient(node.http_url) as rpc:
            await check_chain(rpc, chain)
        async with following(node, sink, start=chain) as run:
            await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(9, 12))
        assert [(d, o) for d, o, _ in await reorg_rows(clean_db.dsn)] == [(2, orphaned)]


async def test_a_late_head_that_reveals_a_reorg_brings_the_whole_new_branch(
    sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """The only head that arrives after a 3-block reorg is a late one for the lowest replaced height: the
    follower replaces the orphaned blocks and fetches the new branch up to the node's head at once."""
    async with scripted(8) as node, following(node, sink, from_block=6) as run:
        await node.wait_for_subscriber()
        await node.mine(3)
        await wait_for_head(run, node, clean_db.dsn)
        orphaned = node.chain.canonical_hashes[9:12]
        node.auto_heads = False
        node.chain.reorg(3, 4)
        await node.send_head(node.chain.block(9))  # type: ignore[arg-type]
        await wait_for_head(run, node, clean_db.dsn, timeout=10)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(6, 13))
        assert [(d, o) for d, o, _ in await reorg_rows(clean_db.dsn)] == [(3, orphaned)]
