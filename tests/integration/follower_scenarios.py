"""What the follower scenarios share (test_follower_scenarios*.py): a scripted node (real HTTP + websocket,
tests/scripted_node.py), the follower running over it into real Postgres, waiting for the stored head,
and the one expectation of every scenario: the stored blocks, transactions and logs are exactly the
scripted chain's canonical blocks, nothing orphaned."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from indexer.chain.extract import extract_block
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.pipeline import FOLLOW_STREAM, batch_of, consume
from indexer.realtime.follower import Follower, FollowerEvent, Reorg
from indexer.realtime.heads import HeadStream
from sinks.postgres import BlockRef, PostgresSink
from tests.scripted_node import ScriptedChain, ScriptedNode

KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # an API key in node URLs, which no log line may show

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.02, max_delay=0.1)


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
            node.ws_url if ws_url == "node" else ws_url,
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


async def store(sink: PostgresSink, chain: ScriptedChain, numbers: Sequence[int]) -> None:
    """Blocks a backfill stored (setup only: the expectation below is the scripted chain)."""
    blocks = [chain.block(n) for n in numbers]
    extracted = [extract_block(b, chain.receipts[b["hash"]]) for b in blocks if b is not None]
    await sink.write(batch_of("backfill", extracted))
