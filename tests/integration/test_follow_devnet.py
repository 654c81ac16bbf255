"""Follow a live devnet with real Uniswap activity while `activity` and `reorg` run: afterwards the
database equals the canonical chain read back from the node, with a `reorgs` row per reorg."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.database import DatabaseInfo
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, wait_for_tip

pytestmark = pytest.mark.integration


async def test_follow_devnet_through_activity_and_reorgs(
    fresh_devnet: Devnet, clean_db: DatabaseInfo
) -> None:
    sink = await PostgresSink.connect(clean_db.dsn)
    async with RpcClient(fresh_devnet.rpc_http) as rpc:
        heads = HeadStream(fresh_devnet.rpc_ws, rpc, silence_timeout=5)
        follower = Follower(rpc, heads, start=[], from_block=0, max_reorg_depth=16)
        task = asyncio.create_task(consume(follower, sink, quiet=True))
        try:
            await wait_for_tip(clean_db.dsn, rpc, timeout=120)
            await asyncio.to_thread(fresh_devnet.activity, 8, 10.0)
            await wait_for_tip(clean_db.dsn, rpc)
            first = await asyncio.to_thread(fresh_devnet.reorg, 3)
            await wait_for_tip(clean_db.dsn, rpc)
            await asyncio.to_thread(fresh_devnet.activity, 4, 10.0)
            await wait_for_tip(clean_db.dsn, rpc)
            second = await asyncio.to_thread(fresh_devnet.reorg, 2)
            await asyncio.to_thread(fresh_devnet.activity, 2, 10.0)
            await wait_for_tip(clean_db.dsn, rpc)
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        counts = await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    try:
        rows = await sink.pool.fetch("SELECT depth, orphaned_hashes, new_hashes FROM reorgs ORDER BY id")
        assert [(r["depth"], r["orphaned_hashes"]) for r in rows] == [
            (3, [h.lower() for h in first.old_hashes]),
            (2, [h.lower() for h in second.old_hashes]),
        ]
        orphaned = [h.lower() for h in first.old_hashes + second.old_hashes]
        for table in ("blocks", "transactions", "logs", "token_transfers"):
            column = "hash" if table == "blocks" else "block_hash"
            n = await sink.pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1)", orphaned)
            assert n == 0, table
    finally:
        await sink.close()
    assert counts["logs"] > 1000 and counts["transfers"] > 500
