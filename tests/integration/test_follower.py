"""The live follower against a real anvil: websocket heads, gaps, real reorgs (anvil_reorg), silence,
too-deep reorgs; the database must equal the node's canonical chain afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import websockets

from indexer.database import DatabaseInfo
from indexer.follower import Follower, ReorgTooDeep
from indexer.heads import HeadStream
from indexer.pipeline import consume
from indexer.rpc import RpcClient
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, mine, reorg, send_transfers, wait_for_tip

pytestmark = pytest.mark.integration


@pytest.fixture
async def rpc(anvil: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil) as client:
        await client.call("evm_setAutomine", [False])
        yield client


@pytest.fixture
async def sink(clean_db: DatabaseInfo) -> AsyncIterator[PostgresSink]:
    s = await PostgresSink.connect(clean_db.dsn)
    yield s
    await s.close()


@contextlib.asynccontextmanager
async def running(follower: Follower, sink: PostgresSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consume(follower, sink, quiet=True))
    try:
        yield task
    finally:
        if task.done():
            if (
                not task.cancelled()
                and task.exception() is not None
                and not isinstance(task.exception(), ReorgTooDeep)
            ):
                raise AssertionError("the follower died") from task.exception()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_follows_blocks_and_reorgs_into_postgres(
    anvil: str, rpc: RpcClient, sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    heads = HeadStream(anvil.replace("http", "ws"), rpc, silence_timeout=5)
    follower = Follower(rpc, heads, start=[], from_block=0, max_reorg_depth=10)
    async with running(follower, sink) as task:
        for i in range(4):
            await send_transfers(rpc, 3, salt=i)
            await mine(rpc)
        await mine(rpc, 3)  # several blocks at once: the follower fills the gap
        await wait_for_tip(clean_db.dsn, rpc)
        await reorg(rpc, 3, 4, salt=100)  # same height, new branch
        await wait_for_tip(clean_db.dsn, rpc)
        await send_transfers(rpc, 2, salt=200)
        await mine(rpc)
        await wait_for_tip(clean_db.dsn, rpc)  # so the reorg orphans stored blocks
        await reorg(rpc, 2, 1, salt=300)
        await mine(rpc, 2)  # the reorged branch grows: the parent-hash check finds it
        await wait_for_tip(clean_db.dsn, rpc)
        assert not task.done()
    counts = await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    assert counts["transactions"] >= 12
    rows = await sink.pool.fetch("SELECT depth, orphaned_hashes, new_hashes FROM reorgs ORDER BY id")
    assert [r["depth"] for r in rows] == [3, 2]
    assert all(set(r["orphaned_hashes"]).isdisjoint(r["new_hashes"]) for r in rows)


async def test_resumes_from_the_cursor_after_a_restart(
    anvil: str, rpc: RpcClient, sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    from indexer.commands.follow import start_chain

    ws = anvil.replace("http", "ws")
    async with running(Follower(rpc, HeadStream(ws, rpc), start=[], from_block=0), sink):
        await send_transfers(rpc, 2)
        await mine(rpc, 2)
        await wait_for_tip(clean_db.dsn, rpc)
    # while the follower is down: new blocks and a reorg of the stored tip
    await send_transfers(rpc, 2, salt=1)
    await mine(rpc, 2)
    await reorg(rpc, 2, 2, salt=2)
    chain = await start_chain(sink, 11)
    assert chain and chain[-1].number == 2
    async with running(Follower(rpc, HeadStream(ws, rpc), start=chain, max_reorg_depth=10), sink):
        await wait_for_tip(clean_db.dsn, rpc)
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)


async def test_a_websocket_that_never_speaks_falls_back_to_polling(
    anvil: str, rpc: RpcClient, sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    async def mute(ws: websockets.ServerConnection) -> None:
        await ws.wait_closed()  # accepts the subscription, never answers

    async with websockets.serve(mute, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        heads = HeadStream(f"ws://127.0.0.1:{port}", rpc, silence_timeout=0.3, backoff_base=0.05)
        async with running(Follower(rpc, heads, start=[], from_block=0), sink):
            for i in range(3):
                await send_transfers(rpc, 1, salt=i)
                await mine(rpc)
            await wait_for_tip(clean_db.dsn, rpc, timeout=30)
        assert heads.polls >= 2 and heads.reconnects >= 1
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)


async def test_a_reorg_deeper_than_the_maximum_stops_with_a_clear_error(
    anvil: str, rpc: RpcClient, sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    heads = HeadStream(anvil.replace("http", "ws"), rpc, silence_timeout=5)
    follower = Follower(rpc, heads, start=[], from_block=0, max_reorg_depth=2)
    async with running(follower, sink) as task:
        await mine(rpc, 5)
        await wait_for_tip(clean_db.dsn, rpc)
        before = await sink.pool.fetch("SELECT hash FROM blocks ORDER BY number")
        await reorg(rpc, 4, 1, salt=7)
        with pytest.raises(ReorgTooDeep, match="deeper than the maximum of 2"):
            await asyncio.wait_for(task, timeout=30)
    assert await sink.pool.fetch("SELECT hash FROM blocks ORDER BY number") == before  # nothing forked
