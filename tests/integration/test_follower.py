"""The live follower against a real anvil: websocket heads, gaps, real reorgs (anvil_reorg), silence,
too-deep reorgs; the database must equal the node's canonical chain afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from core.database import DatabaseInfo
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower, ReorgTooDeep
from indexer.realtime.heads import HeadStream
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, mine, reorg, send_transfers, wait_for_tip
from tests.conftest import ANVIL, dexnode_bin, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def rpc(anvil: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil) as client:
        await client.call("evm_setAutomine", [False])
        yield client


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
    from cli.follow import start_chain

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


async def test_blocks_mined_before_the_subscription_is_confirmed_are_not_waited_for(
    anvil: str, rpc: RpcClient, sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """The node announces heads only once a subscription is registered: blocks mined between the
    start-up poll and the confirmation reach no subscriber. Seen in CI as a follower sitting at
    genesis for its 60 s silence timeout while the node was at block 2. The websocket here confirms
    the subscription only after the blocks are mined, then stays quiet (a quiet chain)."""
    asked = asyncio.Event()
    release = asyncio.Event()

    async def late_confirmation(ws: websockets.ServerConnection) -> None:
        request = json.loads(await ws.recv())
        asked.set()
        await release.wait()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))
        await ws.wait_closed()

    async with websockets.serve(late_confirmation, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        heads = HeadStream(f"ws://127.0.0.1:{port}", rpc, silence_timeout=3600)
        async with running(Follower(rpc, heads, start=[], from_block=0), sink):
            await asyncio.wait_for(asked.wait(), timeout=30)
            await send_transfers(rpc, 2)
            await mine(rpc, 2)
            release.set()
            await wait_for_tip(clean_db.dsn, rpc, timeout=30)
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


async def test_a_node_outage_is_waited_out_without_skipping(
    anvil_process: tuple[str, subprocess.Popen[bytes]], sink: PostgresSink, clean_db: DatabaseInfo
) -> None:
    """The node stops answering (SIGSTOP) in the middle of the chain: the follower logs, backs off and
    retries; when the node is back, it catches up with nothing skipped."""
    url, proc = anvil_process
    async with RpcClient(url) as control, RpcClient(url, timeout=0.5, retry=RetryPolicy(attempts=2)) as rpc:
        await control.call("evm_setAutomine", [False])
        heads = HeadStream(url.replace("http", "ws"), rpc, silence_timeout=1, backoff_base=0.1)
        follower = Follower(rpc, heads, start=[], from_block=0, max_backoff=1.0)
        async with running(follower, sink) as task:
            await send_transfers(control, 2)
            await mine(control, 3)
            await wait_for_tip(clean_db.dsn, control)
            proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(4)  # timeouts, retries, backoff: the follower must survive it
            proc.send_signal(signal.SIGCONT)
            await send_transfers(control, 2, salt=1)
            await mine(control, 3)
            await wait_for_tip(clean_db.dsn, control, timeout=60)
            assert not task.done()
        await assert_db_is_canonical(clean_db.dsn, control, 0)


def test_following_another_chain_is_refused(
    anvil: str, clean_db: DatabaseInfo, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A database filled from one chain, then pointed at a different node: one clear error, no writes."""

    async def fill() -> None:
        sink = await PostgresSink.connect(clean_db.dsn)
        async with RpcClient(anvil) as rpc:
            await mine(rpc, 5)
            async with running(
                Follower(rpc, HeadStream(anvil.replace("http", "ws"), rpc), start=[], from_block=0), sink
            ):
                await wait_for_tip(clean_db.dsn, rpc)
        await sink.close()

    asyncio.run(fill())
    other_port = free_port()
    other = subprocess.Popen(
        [str(ANVIL), "--port", str(other_port), "--timestamp", "1700000000", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        other_url = f"http://127.0.0.1:{other_port}"
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", other_port), timeout=0.2).close()
                break
            time.sleep(0.05)
        args = [dexnode_bin(), "follow", "--rpc-http", other_url, "--rpc-ws", other_url.replace("http", "ws"),
                "--database-url", clean_db.dsn]  # fmt: skip
        res = subprocess.run(args, env=cli_env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert "is DEXNODE_RPC_HTTP the chain this database indexed" in res.stderr
        httpx.post(other_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x10"]})
        res = subprocess.run(args, env=cli_env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "is DEXNODE_RPC_HTTP the chain this database indexed" in res.stderr
    finally:
        other.terminate()
        other.wait(timeout=10)
