"""The backfill under faults and beside the follower, against a real anvil (behind a fault-injecting
JSON-RPC proxy where needed) and a real Postgres: a node down for a while is waited out and the data
equals a fault-free run's; fatal errors end the command with one line; orphaned blocks the follower
stored are replaced by the confirmed chain; checkpoints of runs cut differently are recorded exactly;
``--confirmations 0`` must be asked for."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence

import asyncpg
import orjson
import pytest

from core.database import DatabaseInfo
from core.errors import RetryableError
from indexer.backfill.job import patiently
from indexer.backfill.load import AdaptiveLoad, MemoryBudget
from indexer.backfill.plan import BlockRange, plan
from indexer.backfill.run import Backfill, BackfillReport, resolve_target
from indexer.backfill.store import BackfillSink, done_ranges, status
from indexer.chain.extract import ExtractedBlock, extract_block
from indexer.chain.rpc import RetryPolicy, RpcClient
from indexer.pipeline.pipeline import FOLLOW_STREAM, batch_of
from migrations import runner
from records.batch import Batch
from sinks import schema
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, mine, reorg
from tests.conftest import ANVIL, dexnode_bin
from tests.faulty_node_backfill import FaultyNode
from tests.integration.test_backfill import all_rows, chain

pytestmark = pytest.mark.integration
__all__ = ["chain"]  # the fixture, shared with test_backfill

FAST_CLIENT = RetryPolicy(attempts=2, base_delay=0.02, max_delay=0.05)  # gives up fast: the backfill waits
FAST_NODE_DOWN = RetryPolicy(attempts=0, base_delay=0.05, max_delay=0.3)  # waits out, like the real one
LOG_EVERY = 0.5


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dexnode_bin(), "backfill", *args],
        env={**env, "DEXNODE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error_line(res: subprocess.CompletedProcess[str], exit_code: int, words: str) -> None:
    assert res.returncode == exit_code, res.stderr
    assert "Traceback" not in res.stderr and "ExceptionGroup" not in res.stderr, res.stderr
    ours = [line for line in res.stderr.splitlines() if line.startswith("dexnode:")]
    assert len(ours) == 1 and res.stderr.rstrip().endswith(ours[0]), res.stderr
    assert words in ours[0], ours[0]


async def run_backfill(
    rpc: RpcClient, dsn: str, chunks: Sequence[BlockRange], **kw: object
) -> BackfillReport:
    sink = await BackfillSink.connect(dsn, max_size=6)
    try:
        load = AdaptiveLoad(max_workers=4, max_batch=8, cooldown=0.0)
        job = Backfill(rpc, sink, load=load, node_down=FAST_NODE_DOWN, log_every=LOG_EVERY, **kw)  # type: ignore[arg-type]
        return await job.run(chunks)
    finally:
        await sink.close()


# -- item 5: a node down for a while ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["503", "drop"])
async def test_a_node_down_for_a_while_is_waited_out_and_the_data_equals_a_fault_free_run(
    chain: RpcClient,
    anvil: str,
    clean_db: DatabaseInfo,
    scratch_db: DatabaseInfo,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunks = plan(BlockRange(0, 30), [], 4)
    await run_backfill(chain, clean_db.dsn, chunks)  # fault-free, straight from anvil
    await runner.upgrade(scratch_db.sqlalchemy_url)
    caplog.set_level(logging.WARNING, logger="dexnode.backfill")
    with FaultyNode(anvil) as node:
        node.mode = mode
        # every request fails for 1.5 s, from the 3rd block fetch on: far beyond the client's 2 tries
        node.outage_on("eth_getBlockByNumber", after=3, seconds=1.5)
        async with RpcClient(node.url, retry=FAST_CLIENT) as rpc:
            report = await run_backfill(rpc, scratch_db.dsn, chunks)
    assert node.failed >= 5 and report.node_failures >= 2
    assert report.blocks == 31 and report.chunks == len(chunks)
    assert any("node unavailable" in r.getMessage() for r in caplog.records)
    assert any("still retrying" in r.getMessage() for r in caplog.records)
    assert any("node available again" in r.getMessage() for r in caplog.records)
    want, got = await all_rows(clean_db.dsn), await all_rows(scratch_db.dsn)
    for table in want:  # every column of every table, the chunk checkpoints included
        assert got[table] == want[table], f"{table} differs from the fault-free run"
    await assert_db_is_canonical(scratch_db.dsn, chain, 0)


async def test_a_node_down_when_the_backfill_starts_is_waited_out_too(chain: RpcClient, anvil: str) -> None:
    with FaultyNode(anvil) as node:
        node.outage(1.0)
        async with RpcClient(node.url, retry=FAST_CLIENT) as rpc:
            target = await patiently(lambda: resolve_target(rpc, "20", 5), FAST_NODE_DOWN, LOG_EVERY)
        assert node.failed >= 4  # several of the client's own tries failed, then the backfill's
    assert (target.last, target.head) == (20, 30)


async def test_an_enricher_that_cannot_reach_the_node_is_retried_whole_in_its_turn(
    chain: RpcClient, clean_db: DatabaseInfo
) -> None:
    """The DEX enricher raises ``RetryableError`` when calls fail for good: the chunk is enriched
    again (nothing stored from a guess), and chunks after it still wait for their turn."""
    calls: list[int] = []

    async def enrich(blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch:
        first = batch.blocks[0].number
        calls.append(first)
        if first == 8 and calls.count(8) < 3:
            raise RetryableError("eth_call: HTTP 429 after 6 tries")
        return batch

    report = await run_backfill(chain, clean_db.dsn, plan(BlockRange(0, 30), [], 4), enrich=enrich)
    assert calls == [0, 4, 8, 8, 8, 12, 16, 20, 24, 28] and report.node_failures == 2
    await assert_db_is_canonical(clean_db.dsn, chain, 0)


async def test_a_fatal_node_error_ends_the_command_with_one_line_and_exit_1(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    with FaultyNode(anvil) as node:
        node.refuse["eth_getBlockByNumber"] = {"code": -32601, "message": "the method does not exist"}
        args = ["--from", "0", "--to", "20", "--confirmations", "5", "--batch-blocks", "4"]
        res = cli([*args, "--rpc-http", node.url, "--database-url", scratch_db.dsn], cli_env)
    assert_one_error_line(res, 1, "eth_getBlockByNumber")


@pytest.fixture
def other_anvil() -> Iterator[str]:
    """A second anvil: another chain (chain id 5), with blocks of its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent", "--chain-id", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


async def test_a_node_of_another_chain_is_refused_with_one_line_and_exit_1(
    chain: RpcClient, anvil: str, other_anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    base = ["--confirmations", "1", "--batch-blocks", "5", "--database-url", scratch_db.dsn]
    first = cli(["--from", "0", "--to", "19", "--rpc-http", anvil, *base], cli_env)
    assert first.returncode == 0, first.stderr
    async with RpcClient(other_anvil) as other:
        await mine(other, 40)
    res = cli(["--from", "0", "--to", "30", "--rpc-http", other_anvil, *base], cli_env)
    assert_one_error_line(res, 1, "is DEXNODE_RPC_HTTP the chain this database indexed?")
    conn = await asyncpg.connect(scratch_db.dsn)
    try:  # nothing of the other chain was written
        assert await conn.fetchval("SELECT max(number) FROM blocks") == 19
    finally:
        await conn.close()


# -- item 10: beside the follower ------------------------------------------------------------------


async def test_a_block_the_follower_stored_before_a_reorg_is_replaced_by_the_confirmed_chain(
    chain: RpcClient, clean_db: DatabaseInfo
) -> None:
    # the follower stored 20..30 (its sink, its stream), then the node replaced 24..30
    blocks = await chain.get_blocks(list(range(20, 31)))
    receipts = await chain.get_receipts_for_blocks(blocks)
    followed = [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)]
    follow_sink = await PostgresSink.connect(clean_db.dsn)
    try:
        for extracted in followed:
            await follow_sink.write(batch_of(FOLLOW_STREAM, [extracted]))
    finally:
        await follow_sink.close()
    await reorg(chain, 7, 5, salt=77)
    await mine(chain, 2)
    orphaned = {b.block.hash for b in followed[4:]}
    now = {b["hash"] for b in await chain.get_blocks(list(range(24, 31)))}
    assert not orphaned & now, "anvil did not replace the blocks"

    report = await run_backfill(chain, clean_db.dsn, plan(BlockRange(0, 32), [], 5))
    assert report.blocks == 33
    await assert_db_is_canonical(clean_db.dsn, chain, 0)  # blocks, txs, logs, transfers: the node's
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        for table in (*schema.BLOCK_TABLES, schema.pools):
            col = {"blocks": "hash", "pools": "created_block_hash"}.get(table.name, "block_hash")
            left = await conn.fetchval(
                f'SELECT count(*) FROM "{table.name}" WHERE "{col}" = ANY($1::text[])', list(orphaned)
            )
            assert left == 0, f"{table.name} keeps rows of orphaned blocks"
    finally:
        await conn.close()


async def test_checkpoints_of_runs_cut_differently_record_exactly_what_is_stored(
    chain: RpcClient, clean_db: DatabaseInfo
) -> None:
    """Two runs at once with different ``--to``/``--batch-blocks``: one writes 0–4, the other had
    planned 0–9 before the first committed; then a short chunk after a long one."""
    await run_backfill(chain, clean_db.dsn, [BlockRange(0, 4)])
    await run_backfill(chain, clean_db.dsn, [BlockRange(0, 9)])
    await run_backfill(chain, clean_db.dsn, [BlockRange(20, 29)])
    await run_backfill(chain, clean_db.dsn, [BlockRange(20, 24)])
    blocks = await chain.get_blocks(list(range(0, 30)))
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        assert await done_ranges(conn) == [BlockRange(0, 9), BlockRange(20, 29)]
        rows = [tuple(r) for r in await conn.fetch(
            "SELECT first_block, last_block, last_hash, transaction_count FROM backfill_chunks"
            " ORDER BY 1")]  # fmt: skip
        want = [
            (a, b, blocks[b]["hash"], sum(len(x["transactions"]) for x in blocks[a : b + 1]))
            for a, b in ((0, 9), (20, 29))
        ]
        assert rows == want
        st = await status(conn, BlockRange(0, 30))
        assert st.blocks == 20 and [str(g) for g in st.gaps] == ["10–19", "30"]
    finally:
        await conn.close()


async def test_zero_confirmations_must_be_asked_for(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    base = ["--from", "0", "--to", "confirmed", "--rpc-http", anvil, "--database-url", scratch_db.dsn]
    refused = cli([*base, "--confirmations", "0"], cli_env)
    assert_one_error_line(refused, 2, "--confirmations 0")
    with_kafka = cli(
        [*base, "--confirmations", "0", "--allow-unconfirmed"],
        {**cli_env, "DEXNODE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert_one_error_line(with_kafka, 2, "confirmed.* topics are never reverted")
    allowed = cli([*base, "--confirmations", "0", "--allow-unconfirmed"], cli_env)
    assert allowed.returncode == 0, allowed.stderr
    assert "--allow-unconfirmed: blocks up to the head are written" in allowed.stderr
    await assert_db_is_canonical(scratch_db.dsn, chain, 0)


# -- item 11: memory bounded by the answers' size ----------------------------------------------------


async def test_a_small_memory_budget_cuts_chunks_and_holds_no_more_than_it_allows(
    chain: RpcClient, clean_db: DatabaseInfo
) -> None:
    blocks = await chain.get_blocks([0, 10, 20, 30])
    receipts = await chain.get_receipts_for_blocks(blocks)
    largest = max(len(orjson.dumps(b)) + len(orjson.dumps(r)) for b, r in zip(blocks, receipts, strict=True))
    budget = MemoryBudget(3 * 4 * largest)  # ~3 blocks in flight of the 8 the workers could hold
    enriched: list[tuple[int, int]] = []

    async def enrich(blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch:
        enriched.append((batch.blocks[0].number, batch.blocks[-1].number))
        return batch

    chunks = plan(BlockRange(0, 30), [], 8)
    report = await run_backfill(chain, clean_db.dsn, chunks, budget=budget, enrich=enrich)
    assert report.blocks == 31 and report.chunks > 4  # 8-block chunks cut to fit
    # the cut chunks are still enriched one after the other in block order, each block once
    assert [n for a, b in enriched for n in range(a, b + 1)] == list(range(31))
    assert budget.block_bytes is not None
    # the budget, plus at most the one chunk whose enrichment turn it is (the others wait for it)
    longest = max(b - a + 1 for a, b in enriched)
    assert budget.peak <= budget.limit + 4 * largest * longest and budget.in_use == 0
    await assert_db_is_canonical(clean_db.dsn, chain, 0)
