"""The backfill against real nodes and a real Postgres: kill and resume, confirmations, status, gaps,
a throttling node that caps batches, deferred indexes, and the hand-off to the follower."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from subprocess import DEVNULL
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import sqlalchemy as sa

from cli.demo import venue_settings
from cli.follow import start_chain
from core.database import DatabaseInfo
from core.settings import Settings, build_settings
from devnet import Devnet
from indexer.backfill.job import backfill
from indexer.backfill.load import AdaptiveLoad
from indexer.backfill.plan import BlockRange, plan
from indexer.backfill.run import Backfill
from indexer.backfill.store import BackfillSink, done_ranges, missing_indexes, status
from indexer.chain.extract import ExtractedBlock
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower, FollowerEvent, NewBlock
from indexer.realtime.heads import HeadStream
from migrations import runner
from records.batch import Batch
from sinks import schema
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, mine, send_transfers, wait_for_tip
from tests.conftest import dexnode_bin

pytestmark = pytest.mark.integration


def settings(
    db: DatabaseInfo, rpc_http: str, confirmations: int = 0, devnet: Devnet | None = None
) -> Settings:
    venues = {}
    if devnet is not None:  # decode the devnet's Uniswap v2, sushiswap and v3 venues
        v2, v3 = venue_settings(devnet.manifest)
        venues = {"uniswap_v2_factories": v2, "uniswap_v3_factories": v3}
    return build_settings(database_url=db.dsn, rpc_http=rpc_http, confirmations=confirmations, **venues)


def venue_env(devnet: Devnet) -> dict[str, str]:
    v2, v3 = venue_settings(devnet.manifest)
    return {"DEXNODE_UNISWAP_V2_FACTORIES": v2, "DEXNODE_UNISWAP_V3_FACTORIES": v3}


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dexnode_bin(), "backfill", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _columns(table: sa.Table) -> list[str]:
    return [
        c.name for c in table.columns if c.server_default is None and not isinstance(c.default, sa.Identity)
    ]


async def all_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored record (server-set timestamps aside), in key order: what two runs must agree on."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in (*schema.BLOCK_TABLES, schema.tokens, schema.pools):
            cols = ", ".join(f'"{c}"' for c in _columns(table))
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            out[table.name] = [
                tuple(r) for r in await conn.fetch(f'SELECT {cols} FROM "{table.name}" ORDER BY {keys}')
            ]
        out["backfill_chunks"] = [tuple(r) for r in await conn.fetch(
            "SELECT first_block, last_block, last_hash, transaction_count, log_count FROM backfill_chunks"
            " ORDER BY first_block")]  # fmt: skip
        return out
    finally:
        await conn.close()


async def chunk_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM backfill_chunks"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def wait_for_chunks(dsn: str, count: int, *, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await chunk_count(dsn) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} chunks written in {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def chain(anvil: str) -> AsyncIterator[RpcClient]:
    """Bare anvil with 30 blocks of ETH transfers (head 30)."""
    async with RpcClient(anvil) as rpc:
        await rpc.call("evm_setAutomine", [False])
        for i in range(30):
            await send_transfers(rpc, 1 + i % 3, salt=i)
            await mine(rpc)
        yield rpc


# -- kill and resume ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_killed_backfill_resumed_equals_an_uninterrupted_one_row_for_row(
    devnet: Devnet, clean_db: DatabaseInfo, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    last = devnet.head()[0]
    args = ["--from", "0", "--to", str(last), "--batch-blocks", "10", "--rpc-http", devnet.rpc_http]
    args += ["--confirmations", "0", "--allow-unconfirmed"]
    cli_env = {**cli_env, **venue_env(devnet)}
    uninterrupted = await backfill(
        settings(clean_db, devnet.rpc_http, devnet=devnet),
        from_block=0,
        to=str(last),
        batch_blocks=10,
        progress_tty=False,
        allow_unconfirmed=True,
    )
    assert uninterrupted.blocks == last + 1 and uninterrupted.logs > 1000 and uninterrupted.dex_trades > 500

    # the same backfill as a user runs it, slowed down, killed with SIGKILL after a few chunks
    command = [*args, "--workers", "2", "--max-rps", "6", "--database-url", scratch_db.dsn]
    proc = await asyncio.create_subprocess_exec(
        dexnode_bin(), "backfill", *command, env=cli_env, stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        await wait_for_chunks(scratch_db.dsn, 4)
        assert proc.returncode is None, "the backfill ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        done_blocks = sum(len(r) for r in await done_ranges(conn))
    finally:
        await conn.close()
    assert 4 <= await chunk_count(scratch_db.dsn) < uninterrupted.chunks  # killed mid-way

    resumed = cli([*args, "--database-url", scratch_db.dsn], cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"backfilled {last + 1 - done_blocks:,} blocks" in resumed.stdout  # only what was missing

    want, got = await all_rows(clean_db.dsn), await all_rows(scratch_db.dsn)
    for table in want:
        assert got[table] == want[table], f"{table} differs after kill and resume"
    assert len(want["blocks"]) == last + 1 and len(want["token_transfers"]) > 0
    assert len(want["dex_trades"]) == uninterrupted.dex_trades and len(want["pools"]) >= 10
    # every pool comes from its creation event in its own chunk, not from whichever chunk came first
    assert all(p[_columns(schema.pools).index("created_block_number")] is not None for p in want["pools"])


# -- confirmations ------------------------------------------------------------------------------------


async def test_only_confirmed_blocks_are_written_and_the_command_says_so(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    base = [
        "--rpc-http",
        anvil,
        "--database-url",
        scratch_db.dsn,
        "--confirmations",
        "5",
        "--batch-blocks",
        "4",
    ]
    above = cli(["--from", "0", "--to", "1000", *base], cli_env)
    assert above.returncode == 0, above.stderr
    assert "--to 1000 is above the last confirmed block 25 (head 30 minus 5 confirmations)" in above.stderr
    # a fresh database: the secondary indexes are built once at the end, by default
    assert "note: a fresh database: secondary indexes are built at the end" in above.stderr
    assert "secondary indexes rebuilt in" in above.stdout
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        assert await missing_indexes(conn) == []
        assert await conn.fetchval("SELECT max(number) FROM blocks") == 25
        for i in range(3):  # the head moves on: 'confirmed' follows it, still 5 behind
            await send_transfers(chain, 1, salt=100 + i)
            await mine(chain)
        again = cli(["--from", "0", "--to", "confirmed", *base], cli_env)
        assert again.returncode == 0, again.stderr
        assert "backfilled 3 blocks" in again.stdout  # 26..28 only: the rest was done
        # blocks are stored: the indexes are kept and maintained (nothing dropped, nothing rebuilt)
        assert "fresh database" not in again.stderr and "indexes rebuilt" not in again.stdout
        assert await conn.fetchval("SELECT max(number) FROM blocks") == 28
        await mine(chain, 70)
        final = cli(["--from", "0", "--to", "finalized", *base], cli_env)  # anvil: finalized = head - 64
        assert final.returncode == 0, final.stderr
        assert await conn.fetchval("SELECT max(number) FROM blocks") == 103 - 64
        rows = await conn.fetch("SELECT number FROM blocks ORDER BY number")
        assert [r["number"] for r in rows] == list(range(0, 40))
    finally:
        await conn.close()


async def test_keep_indexes_maintains_them_on_a_fresh_database(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    base = ["--rpc-http", anvil, "--database-url", scratch_db.dsn, "--confirmations", "5"]
    kept = cli(["--from", "0", "--to", "10", "--keep-indexes", *base], cli_env)
    assert kept.returncode == 0, kept.stderr
    assert "fresh database" not in kept.stderr and "indexes rebuilt" not in kept.stdout
    assert "backfilled 11 blocks" in kept.stdout
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        assert await missing_indexes(conn) == []
    finally:
        await conn.close()


# -- status, gaps -------------------------------------------------------------------------------------


async def test_status_shows_done_ranges_and_gaps_and_a_rerun_fills_only_the_gaps(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo, cli_env: dict[str, str]
) -> None:
    s = settings(scratch_db, anvil)
    await backfill(s, from_block=0, to="9", batch_blocks=5, progress_tty=False, allow_unconfirmed=True)
    await backfill(s, from_block=20, to="29", batch_blocks=5, progress_tty=False, allow_unconfirmed=True)

    shown = cli(["--status", "--database-url", scratch_db.dsn], cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "done: 0–9, 20–29 (20 blocks" in shown.stdout
    assert "gaps: 10–19 (10 blocks)" in shown.stdout
    assert "contiguous: 0–9 (the follower continues at block 10)" in shown.stdout
    assert "last run:" in shown.stdout and "blocks/s" in shown.stdout
    in_range = cli(["--status", "--from", "0", "--to", "35", "--database-url", scratch_db.dsn], cli_env)
    assert "gaps: 10–19, 30–35 (16 blocks)" in in_range.stdout

    report = await backfill(
        s, from_block=0, to="30", batch_blocks=5, progress_tty=False, allow_unconfirmed=True
    )
    assert (report.blocks, report.chunks) == (11, 3)  # 10–14, 15–19, 30: nothing fetched twice
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        st = await status(conn)
        assert st.done == [BlockRange(0, 30)] and st.gaps == [] and st.follower_resumes_after == 30
    finally:
        await conn.close()
    await assert_db_is_canonical(scratch_db.dsn, chain, 0)


# -- adaptive load --------------------------------------------------------------------------------------


class ThrottlingNode(httpx.AsyncBaseTransport):
    """In front of a real anvil: refuses batches above ``cap`` calls (as providers do) and answers
    HTTP 429 to every ``every``-th request."""

    def __init__(self, cap: int, every: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.cap, self.every = cap, every
        self.requests = self.refused = self.throttled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        body = orjson.loads(request.content)
        if isinstance(body, list) and len(body) > self.cap:
            self.refused += 1
            error = {"code": -32600, "message": f"batch too large: at most {self.cap} calls"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})
        if self.requests % self.every == 0:
            self.throttled += 1
            return httpx.Response(429, headers={"retry-after": "0"}, text="rate limited")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_throttling_node_that_caps_batches_is_backed_off_from_and_fully_indexed(
    chain: RpcClient, anvil: str, clean_db: DatabaseInfo
) -> None:
    node = ThrottlingNode(cap=8, every=5)
    sink = await BackfillSink.connect(clean_db.dsn, max_size=6)
    try:
        async with RpcClient(anvil, max_batch_size=50, transport=node) as rpc:
            load = AdaptiveLoad(max_workers=4, max_batch=50, grow_after=2, cooldown=0.0)
            report = await Backfill(rpc, sink, load=load).run(plan(BlockRange(0, 30), [], 16))
    finally:
        await sink.close()
    assert report.blocks == 31
    assert node.refused >= 1 and load.node_cap is not None and load.node_cap <= 8
    assert node.throttled >= 1 and load.backoffs >= 1
    await assert_db_is_canonical(clean_db.dsn, chain, 0)


class SlowEarlyBlocks(httpx.AsyncBaseTransport):
    """Answers requests for blocks below ``below`` late, so later chunks arrive first."""

    def __init__(self, below: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.below = below

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        first = body[0] if isinstance(body, list) else body
        if first["method"] == "eth_getBlockByNumber" and int(first["params"][0], 16) < self.below:
            await asyncio.sleep(0.5)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_chunks_are_enriched_in_block_order_even_when_later_ones_arrive_first(
    chain: RpcClient, anvil: str, clean_db: DatabaseInfo
) -> None:
    seen: list[int] = []

    async def enrich(blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch:
        seen.append(batch.blocks[0].number)
        return batch

    sink = await BackfillSink.connect(clean_db.dsn, max_size=6)
    try:
        async with RpcClient(anvil, transport=SlowEarlyBlocks(below=10)) as rpc:
            backfill_ = Backfill(rpc, sink, load=AdaptiveLoad(max_workers=4, max_batch=100), enrich=enrich)
            report = await backfill_.run(plan(BlockRange(0, 30), [], 5))
    finally:
        await sink.close()
    assert seen == [0, 5, 10, 15, 20, 25, 30] and report.chunks == 7
    await assert_db_is_canonical(clean_db.dsn, chain, 0)


# -- deferred indexes, cancelled between chunks -------------------------------------------------------


async def test_deferred_indexes_survive_a_cancelled_run_and_are_rebuilt_by_the_next(
    devnet: Devnet, scratch_db: DatabaseInfo
) -> None:
    s = settings(scratch_db, devnet.rpc_http)
    last = min(devnet.head()[0], 200)
    task = asyncio.create_task(
        backfill(
            s,
            from_block=0,
            to=str(last),
            batch_blocks=10,
            workers=1,
            max_rps=8,
            defer_indexes=True,
            allow_unconfirmed=True,
        )
    )
    await wait_for_chunks(scratch_db.dsn, 2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    conn = await asyncpg.connect(scratch_db.dsn)
    try:
        assert len(await missing_indexes(conn)) > 10
        st = await status(conn)
        assert any("secondary indexes dropped" in line for line in st.lines())
        partial = await done_ranges(conn)
        assert partial and partial[0].last < last
        await backfill(
            s, from_block=0, to=str(last), batch_blocks=10, progress_tty=False, allow_unconfirmed=True
        )
        assert await missing_indexes(conn) == []
        assert await done_ranges(conn) == [BlockRange(0, last)]
        numbers = [r["number"] for r in await conn.fetch("SELECT number FROM blocks ORDER BY number")]
        assert numbers == list(range(last + 1))
    finally:
        await conn.close()


# -- hand-off to the follower ---------------------------------------------------------------------------


async def _follow_until_tip(
    devnet: Devnet, rpc: RpcClient, sink: PostgresSink, dsn: str, chain: list[Any], blocks: int
) -> list[int]:
    """Run the follower from ``chain`` while the devnet mines ``blocks`` blocks of activity; → the
    block numbers it wrote, in order."""
    written: list[int] = []

    def seen(event: FollowerEvent) -> None:
        assert isinstance(event, NewBlock), "no reorg expected here"
        written.append(event.extracted.block.number)

    follower = Follower(
        rpc, HeadStream(devnet.rpc_ws, rpc, silence_timeout=5), start=chain, max_reorg_depth=16
    )
    task = asyncio.create_task(consume(follower, sink, quiet=True, on_event=seen))
    try:
        await asyncio.to_thread(devnet.activity, blocks)
        await wait_for_tip(dsn, rpc, timeout=120)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return written


async def test_the_follower_continues_where_the_contiguous_backfill_ends(
    fresh_devnet: Devnet, scratch_db: DatabaseInfo
) -> None:
    await runner.upgrade(scratch_db.sqlalchemy_url)
    s = settings(scratch_db, fresh_devnet.rpc_http, confirmations=12, devnet=fresh_devnet)
    head = fresh_devnet.head()[0]
    # a backfill that stopped with a gap: 0–99 and 150–(head-12) done, 100–149 missing
    await backfill(s, from_block=0, to="99", batch_blocks=25, progress_tty=False)
    await backfill(s, from_block=150, to="confirmed", batch_blocks=25, progress_tty=False)
    sink = await PostgresSink.connect(scratch_db.dsn)
    try:
        async with RpcClient(fresh_devnet.rpc_http) as rpc:
            top = await sink.pool.fetchval("SELECT max(number) FROM blocks")
            assert top == head - 12
            chain = await start_chain(sink, 17)
            assert chain[-1].number == 99  # not the newest stored block: that would leave 100–149 out
            written = await _follow_until_tip(fresh_devnet, rpc, sink, scratch_db.dsn, chain, 3)
            assert written[0] == 100  # no gap, and nothing below the contiguous end fetched again
            assert written == list(range(100, await rpc.block_number() + 1))
            await assert_db_is_canonical(scratch_db.dsn, rpc, 0)
    finally:
        await sink.close()


async def test_a_follower_started_during_a_backfill_and_the_backfill_meet_without_gap_or_duplicate(
    fresh_devnet: Devnet, scratch_db: DatabaseInfo
) -> None:
    await runner.upgrade(scratch_db.sqlalchemy_url)
    s = settings(scratch_db, fresh_devnet.rpc_http, confirmations=4, devnet=fresh_devnet)
    filling = asyncio.create_task(
        backfill(s, from_block=0, to="confirmed", batch_blocks=20, workers=2, max_rps=10, progress_tty=False)
    )
    sink = await PostgresSink.connect(scratch_db.dsn)
    try:
        await wait_for_chunks(scratch_db.dsn, 2)
        async with RpcClient(fresh_devnet.rpc_http) as rpc:
            chain = await start_chain(sink, 17)
            end = chain[-1].number
            assert end % 20 == 19  # the end of a chunk of the running backfill
            written = await _follow_until_tip(fresh_devnet, rpc, sink, scratch_db.dsn, chain, 4)
            assert written[0] == end + 1
            report = await filling
            assert report.blocks > 0
            await assert_db_is_canonical(scratch_db.dsn, rpc, 0)  # each row once: keys are natural
    finally:
        if not filling.done():
            filling.cancel()
        await sink.close()
