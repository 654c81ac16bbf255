"""The follower against a scripted node (real HTTP + websocket, tests/scripted_node.py) into real Postgres.

Each scenario is a fault a hosted node shows: reorgs deeper than the stored history, head hashes the
HTTP backend never serves, late side-branch heads, resume windows with holes, reorgs while the follower
is catching up, a websocket that sends garbage or does not exist. The expectation is always the scripted
chain itself: the stored blocks, transactions and logs are exactly its canonical blocks, nothing orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from core.database import DatabaseInfo
from core.errors import RetryableError
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.pipeline import FOLLOW_STREAM, batch_of, consume
from indexer.realtime.follower import Follower, FollowerEvent, Reorg
from indexer.realtime.heads import HeadStream
from sinks.postgres import BlockRef, PostgresSink
from tests.scripted_node import ScriptedChain, ScriptedNode

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.02, max_delay=0.1)


@pytest.fixture
async def sink(clean_db: DatabaseInfo) -> AsyncIterator[PostgresSink]:
    s = await PostgresSink.connect(clean_db.dsn)
    yield s
    await s.close()


@contextlib.asynccontextmanager
async def scripted(head: int, *, block_time: int = 12, websocket: bool = True) -> AsyncIterator[ScriptedNode]:
    """A scripted node serving blocks 0..``head``."""
    node = ScriptedNode(chain=ScriptedChain(block_time=block_time), websocket=websocket)
    node.chain.mine(head + 1)
    async with node.serving():
        yield node


class Run:
    def __init__(self, follower: Follower, heads: HeadStream, task: asyncio.Task[None]) -> None:
        self.follower = follower
        self.heads = heads
        self.task = task
        self.events: list[FollowerEvent] = []

    @property
    def reorgs(self) -> list[Reorg]:
        return [e for e in self.events if isinstance(e, Reorg)]


@contextlib.asynccontextmanager
async def following(
    node: ScriptedNode,
    sink: PostgresSink,
    *,
    start: Sequence[BlockRef] = (),
    from_block: int | None = None,
    max_reorg_depth: int = 10,
    ws_url: str | None = "node",
    silence_timeout: float = 60.0,
    retry: RetryPolicy = FAST_RETRY,
) -> AsyncIterator[Run]:
    async with RpcClient(node.http_url, timeout=1.0, retry=retry) as rpc:
        heads = HeadStream(
            node.ws_url if ws_url == "node" else ws_url,  # type: ignore[arg-type]
            rpc,
            silence_timeout=silence_timeout,
            backoff_base=0.05,
            backoff_max=0.5,
        )
        follower = Follower(
            rpc,
            heads,
            start=list(start),
            from_block=from_block,
            max_reorg_depth=max_reorg_depth,
            max_backoff=0.2,
        )
        events: list[FollowerEvent] = []
        task = asyncio.create_task(consume(follower, sink, quiet=True, on_event=events.append))
        run = Run(follower, heads, task)
        run.events = events
        try:
            yield run
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for_head(run: Run, node: ScriptedNode, dsn: str, *, timeout: float = 20.0) -> None:
    """Until the stored cursor is the scripted chain's head; fails at once if the follower died."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(int(timeout / 0.05)):
            want = node.chain.head["hash"]  # the chain may change meanwhile (a scripted mid-sync reorg)
            if run.task.done():
                raise AssertionError("the follower stopped") from run.task.exception()
            got = await conn.fetchval("SELECT block_hash FROM cursors WHERE stream = $1", FOLLOW_STREAM)
            if got == want:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"stored tip {got} never reached the node's head {want}")
    finally:
        await conn.close()


async def assert_db_is_chain(dsn: str, chain: ScriptedChain, numbers: Sequence[int]) -> None:
    """Blocks, transactions and logs stored = the scripted canonical blocks at ``numbers``, field by field."""
    blocks: list[dict[str, Any]] = []
    for n in numbers:
        block = chain.block(n)
        assert block is not None
        blocks.append(block)
    want_blocks = [
        (int(b["number"], 16), b["hash"], b["parentHash"], int(b["timestamp"], 16)) for b in blocks
    ]
    want_txs = [
        (tx["hash"], tx["blockHash"], int(tx["blockNumber"], 16), int(tx["transactionIndex"], 16), tx["from"],
         tx["to"], int(tx["value"], 16))
        for b in blocks for tx in b["transactions"]
    ]  # fmt: skip
    want_logs = [
        (lg["blockHash"], int(lg["logIndex"], 16), lg["transactionHash"], lg["address"], lg["data"],
         *lg["topics"])
        for b in blocks for r in chain.receipts[b["hash"]] for lg in r["logs"]
    ]  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        got_blocks = [tuple(r) for r in await conn.fetch(
            "SELECT number, hash, parent_hash, timestamp FROM blocks ORDER BY number")]  # fmt: skip
        got_txs = [tuple(r) for r in await conn.fetch(
            "SELECT hash, block_hash, block_number, transaction_index, from_address, to_address, value"
            " FROM transactions ORDER BY block_number, transaction_index")]  # fmt: skip
        got_logs = [tuple(r) for r in await conn.fetch(
            "SELECT block_hash, log_index, transaction_hash, address, data, topic0, topic1, topic2"
            " FROM logs ORDER BY block_number, log_index")]  # fmt: skip
        transfers = await conn.fetchval("SELECT count(*) FROM token_transfers")
    finally:
        await conn.close()
    assert got_blocks == want_blocks
    assert got_txs == want_txs
    assert got_logs == want_logs
    assert transfers == len(want_logs)  # one ERC-20 Transfer per transaction, none from an orphaned block


async def reorg_rows(dsn: str) -> list[tuple[int, list[str], list[str]]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT depth, orphaned_hashes, new_hashes FROM reorgs ORDER BY id")
    finally:
        await conn.close()
    return [(r["depth"], list(r["orphaned_hashes"]), list(r["new_hashes"])) for r in rows]


# -- item 2: a reorg below the stored history ------------------------------------------------------


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


# -- item 3: a head hash the HTTP backend never serves ----------------------------------------------


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


# -- item 4: a late side-branch head --------------------------------------------------------------


async def test_a_late_side_head_orphans_nothing(sink: PostgresSink, clean_db: DatabaseInfo) -> None:
    async with scripted(8) as node, following(node, sink) as run:
        await wait_for_head(run, node, clean_db.dsn)
        await node.mine(3)
        await wait_for_head(run, node, clean_db.dsn)
        await node.wait_for_subscriber()
        await node.send_head_and_wait(node.chain.side_block(9))  # a stale head from a side branch
        await node.send_head(node.chain.block(10))  # and a late duplicate of a stored one
        await asyncio.sleep(0.2)
        await node.mine(1)
        await wait_for_head(run, node, clean_db.dsn)
        await assert_db_is_chain(clean_db.dsn, node.chain, range(8, 13))
        assert await reorg_rows(clean_db.dsn) == []
        assert run.reorgs == []


# -- item 8: a resume window with holes -----------------------------------------------------------


async def _store(sink: PostgresSink, chain: ScriptedChain, numbers: Sequence[int]) -> None:
    """Blocks a backfill stored (setup only: the expectation below is the scripted chain)."""
    blocks = [chain.block(n) for n in numbers]
    extracted = [extract_block(b, chain.receipts[b["hash"]]) for b in blocks if b is not None]
    await sink.write(batch_of("backfill", extracted))


@pytest.mark.parametrize("depth", [1, 4])
async def test_a_reorg_over_a_resume_window_with_holes(
    sink: PostgresSink, clean_db: DatabaseInfo, depth: int
) -> None:
    """A backfill stored 1..5, the follower 8..10 (its cursor at 10); restarted, the window 1..10 has a
    hole at 6..7. The node replaces the last ``depth`` blocks: a 1-block reorg, or one reaching into the
    hole; the hole is filled from the new branch."""
    from cli.follow import start_chain

    async with scripted(10) as node:
        await _store(sink, node.chain, range(1, 6))
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


# -- reorgs while the follower fills a gap --------------------------------------------------------


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


# -- item 7: websocket garbage, no websocket ------------------------------------------------------


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


# -- item 6: keys in node URLs never reach the logs -------------------------------------------------

KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


async def test_a_websocket_url_key_never_reaches_the_logs(
    sink: PostgresSink, clean_db: DatabaseInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """The websocket (Infura-style URL with the key in its path) refuses the connection: the follower
    logs its reconnect warnings and keeps indexing by polling; no log line carries the key."""
    caplog.set_level(logging.DEBUG)
    async with scripted(3, block_time=1, websocket=False) as node:
        async with following(node, sink, ws_url=f"{node.ws_url}/ws/v3/{KEY}") as run:
            await wait_for_head(run, node, clean_db.dsn)
            for _ in range(200):
                if run.heads.reconnects >= 2:
                    break
                await asyncio.sleep(0.05)
            assert run.heads.reconnects >= 2
        await assert_db_is_chain(clean_db.dsn, node.chain, [3])
    reconnects = [
        r for r in caplog.records if "websocket" in r.getMessage() and "reconnecting" in r.getMessage()
    ]
    assert reconnects and "/ws/v3/***" in reconnects[0].getMessage()
    # every dexnode line, and any library's from INFO up (dexnode keeps websockets/httpx at WARNING)
    shown = [r for r in caplog.records if r.name.startswith("dexnode") or r.levelno >= logging.INFO]
    assert shown
    for record in shown:
        assert KEY not in record.getMessage() and KEY not in (record.exc_text or ""), record.getMessage()


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


async def test_an_http_url_key_never_reaches_rpc_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A rate-limiting proxy that echoes the requested URL (key included) in its error body."""
    caplog.set_level(logging.WARNING, logger="dexnode")
    async with scripted(2) as node:
        url = f"{node.http_url}/v3/{KEY}"
        node.fail("eth_blockNumber", "429", times=3, body=f"rate limit exceeded for {url}")
        async with RpcClient(url, retry=RetryPolicy(attempts=2, base_delay=0.01)) as rpc:
            with pytest.raises(RetryableError) as failure:
                await rpc.block_number()
            assert await rpc.block_number() == 2  # the key in the path works
    assert "/v3/***" in str(failure.value) and KEY not in str(failure.value)
    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.getMessage()


async def test_dexnode_follow_never_prints_the_keys(clean_db: DatabaseInfo, cli_env: dict[str, str]) -> None:
    """The real ``dexnode follow`` with keyed URLs (HTTP key in the path, websocket refusing): it indexes
    the chain, and nothing it prints (start-up lines, reconnect warnings, per-block lines) has a key."""
    from tests.conftest import dexnode_bin

    async with scripted(4, block_time=1, websocket=False) as node:
        args = ["follow", "--rpc-http", f"{node.http_url}/v3/{KEY}", "--rpc-ws", f"{node.ws_url}/ws/v3/{KEY}",
                "--database-url", clean_db.dsn, "--silence-timeout", "1"]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            dexnode_bin(), *args, env=cli_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            conn = await asyncpg.connect(clean_db.dsn)
            try:
                for _ in range(600):
                    if await conn.fetchval("SELECT block_hash FROM cursors") == node.chain.head["hash"]:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()
        finally:
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        stderr = err.decode()
        await assert_db_is_chain(clean_db.dsn, node.chain, [4])
    assert "/v3/***" in stderr and "/ws/v3/***" in stderr and "reconnecting" in stderr, stderr
    assert KEY not in stderr


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
