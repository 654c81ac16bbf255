"""The Kafka sinks against librdkafka's mock cluster (its own process), a real anvil and a real Postgres.

What a user checks: ``head.*`` read with reverts applied and ``confirmed.*`` both equal the canonical
chain in Postgres, record for record, after reorgs, after the node is killed mid-stream, after the
broker stopped answering for a while, and after a crash between the Kafka write and the Postgres commit
followed by a reorg of the block in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from subprocess import PIPE
from typing import IO, Any

import asyncpg
import orjson
import pytest

from core.database import DatabaseInfo
from devnet import Devnet
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_from
from indexer.pipeline.pipeline import batch_of, consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from records import DexTrade, from_dict
from sinks.base import CompositeSink, Sink
from sinks.kafka import THREADED_RECORDS, KafkaOptions, kafka_composite
from sinks.kafka_confirmed import CONFIRMED_CURSOR
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import BlockRef, PostgresSink
from sinks.postgres_read import StoredChain
from tests.chain_check import assert_db_is_canonical, mine, reorg, send_transfers, wait_for_tip
from tests.conftest import dexnode_bin
from tests.kafka_check import (
    assert_kafka_is_postgres,
    assert_merged_trades_are,
    deploy_transfer_emitter,
    send_token_transfers,
    wait_for_confirmed,
)

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3  # every reorg below is at most this deep: confirmed.* must never see an orphan
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
async def rpc(anvil: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil) as client:
        await client.call("evm_setAutomine", [False])
        yield client


def options(kafka: KafkaDev, prefix: str, **extra: str) -> KafkaOptions:
    return KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS, extra)


@contextlib.asynccontextmanager
async def following(
    rpc: RpcClient, anvil: str, writer: Sink, start: list[BlockRef] | None = None
) -> AsyncIterator[None]:
    heads = HeadStream(anvil.replace("http", "ws"), rpc, silence_timeout=5)
    follower = Follower(
        rpc, heads, start=start or [], from_block=0, max_reorg_depth=10, confirmations=CONFIRMATIONS
    )
    task = asyncio.create_task(consume(follower, writer, quiet=True))
    try:
        yield
        assert not task.done(), f"the follower died: {task.exception()!r}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def activity(rpc: RpcClient, emitter: str, blocks: int, *, salt: int) -> None:
    for i in range(blocks):
        await send_transfers(rpc, 2, salt=salt * 100 + i)
        await send_token_transfers(rpc, emitter, 3, salt=salt * 100 + i)
        await mine(rpc)


async def test_head_with_reverts_and_confirmed_equal_postgres_across_reorgs(
    anvil: str, rpc: RpcClient, clean_db: DatabaseInfo, kafka: KafkaDev, prefix: str
) -> None:
    emitter = await deploy_transfer_emitter(rpc)
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = kafka_composite(options(kafka, prefix), postgres)
    try:
        async with following(rpc, anvil, writer):
            await activity(rpc, emitter, 4, salt=1)
            await wait_for_tip(clean_db.dsn, rpc)
            await reorg(rpc, 3, 4, salt=2)  # same height, new branch
            await wait_for_tip(clean_db.dsn, rpc)
            await activity(rpc, emitter, 2, salt=3)
            await wait_for_tip(clean_db.dsn, rpc)
            await reorg(rpc, 2, 1, salt=4)
            await activity(rpc, emitter, 4, salt=5)  # the reorged branch grows, then goes deep
            await wait_for_tip(clean_db.dsn, rpc)
            await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
    finally:
        await writer.close()
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    counts = await assert_kafka_is_postgres(
        kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS
    )
    assert counts["reverts"] > 10  # the reorgs orphaned stored blocks, with their logs and transfers
    assert counts["confirmed"] > 25  # blocks up to tip - 3, with their transactions, logs, transfers


class _NeverCommits:
    """A Postgres stand-in for the moment the node dies: Kafka has the batch, Postgres never gets it."""

    async def write(self, batch: object) -> None:
        raise SystemExit("killed between the Kafka write and the Postgres commit")

    async def close(self) -> None: ...


async def test_a_batch_on_kafka_but_not_in_postgres_and_then_orphaned_is_reverted_at_start(
    anvil: str, rpc: RpcClient, clean_db: DatabaseInfo, kafka: KafkaDev, prefix: str
) -> None:
    emitter = await deploy_transfer_emitter(rpc)
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = kafka_composite(options(kafka, prefix), postgres)
    async with following(rpc, anvil, writer):
        await activity(rpc, emitter, 3, salt=1)
        await wait_for_tip(clean_db.dsn, rpc)
    # the next block reaches Kafka, then the node dies before Postgres commits it
    await activity(rpc, emitter, 1, salt=2)
    (block,) = await rpc.get_blocks([await rpc.block_number()])
    receipts = (await rpc.get_receipts_for_blocks([block]))[0]
    from indexer.chain.extract import extract_block

    in_flight = batch_of("follow", [extract_block(block, receipts)])
    head = writer.sinks[0]
    with pytest.raises(SystemExit):
        await CompositeSink([head, _NeverCommits()]).write(in_flight)
    # while the node is down, a reorg replaces that block: Postgres never knew it
    await reorg(rpc, 1, 2, salt=3)
    await mine(rpc)
    restarted = kafka_composite(options(kafka, prefix), postgres)
    chain = await StoredChain(postgres.pool).cursor("follow")
    assert chain is not None and chain.number == in_flight.blocks[0].number - 1
    from cli.follow import start_chain

    try:
        async with following(rpc, anvil, restarted, start=await start_chain(postgres, 11)):
            await wait_for_tip(clean_db.dsn, rpc)
            await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
    finally:
        await restarted.close()
        await writer.sinks[0].close()
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    await assert_kafka_is_postgres(kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS)


# 0: every batch is encoded and produced in the producer's thread while Postgres writes it (what only
# batches of THREADED_RECORDS records get by default, as a backfill's): the same guarantees either way
@pytest.mark.parametrize("threaded_records", [THREADED_RECORDS, 0], ids=["inline", "threaded"])
async def test_the_node_waits_while_the_broker_does_not_answer_and_loses_nothing(
    anvil: str,
    rpc: RpcClient,
    clean_db: DatabaseInfo,
    kafka: KafkaDev,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    threaded_records: int,
) -> None:
    emitter = await deploy_transfer_emitter(rpc)
    postgres = await PostgresSink.connect(clean_db.dsn)
    config = options(kafka, prefix, **{"message.timeout.ms": "1500"})
    writer = kafka_composite(config, postgres, threaded_records=threaded_records)
    stored = StoredChain(postgres.pool)
    try:
        async with following(rpc, anvil, writer):
            await activity(rpc, emitter, 3, salt=1)
            await wait_for_tip(clean_db.dsn, rpc)
            before = await stored.cursor("follow")
            kafka.pause()
            try:
                await activity(rpc, emitter, 3, salt=2)
                await asyncio.sleep(5)  # several delivery timeouts and retries
                during = await stored.cursor("follow")
            finally:
                kafka.resume()
            await reorg(rpc, 2, 2, salt=3)
            await activity(rpc, emitter, 3, salt=4)
            await wait_for_tip(clean_db.dsn, rpc, timeout=90)
            await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
    finally:
        await writer.close()
    assert before is not None and during is not None
    # Kafka first: while the broker was silent, Postgres did not run ahead of it; the node retried
    assert during == before
    assert any("Kafka messages not delivered" in r.getMessage() for r in caplog.records)
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    await assert_kafka_is_postgres(kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS)


def _node_env(anvil: str, dsn: str, kafka: KafkaDev, prefix: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    return env | {
        "DEXNODE_DATA_DIR": str(data_dir),
        "DEXNODE_DATABASE_URL": dsn,
        "DEXNODE_RPC_HTTP": anvil,
        "DEXNODE_RPC_WS": anvil.replace("http", "ws"),
        "DEXNODE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "DEXNODE_KAFKA_TOPIC_PREFIX": prefix,
        "DEXNODE_CONFIRMATIONS": str(CONFIRMATIONS),
    }


async def _consume_cli(env: dict[str, str], topic: str) -> list[Any]:
    proc = await asyncio.create_subprocess_exec(
        dexnode_bin(), "consume", topic, "--apply-reverts", env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return [from_dict(orjson.loads(line)) for line in out.splitlines()]


async def _start_node(env: dict[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
    cmd = [dexnode_bin(), "follow", "--from-block", "0", "--quiet"]
    return await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log, stderr=log)


@pytest.mark.slow
async def test_sigkill_mid_stream_and_restart_lose_nothing(
    anvil: str, rpc: RpcClient, clean_db: DatabaseInfo, kafka: KafkaDev, prefix: str, tmp_path: Path
) -> None:
    emitter = await deploy_transfer_emitter(rpc)
    env = _node_env(anvil, clean_db.dsn, kafka, prefix, tmp_path / "data")
    log = (tmp_path / "node.log").open("ab")
    rng = random.Random(7)
    salt = 0
    for round_ in range(5):
        node = await _start_node(env, log)
        try:
            salt += 1
            await activity(rpc, emitter, 1, salt=salt)
            await wait_for_tip(clean_db.dsn, rpc, timeout=60)  # up and indexing
            if round_ % 2:
                await reorg(rpc, 2, 2, salt=1000 + salt)  # orphans stored blocks while it runs
                await activity(rpc, emitter, 1, salt=salt + 500)
                await wait_for_tip(clean_db.dsn, rpc, timeout=60)
            for _ in range(rng.randint(2, 6)):  # blocks keep coming; the kill lands mid-stream
                salt += 1
                await activity(rpc, emitter, 1, salt=salt)
                await asyncio.sleep(rng.uniform(0, 0.2))
        finally:
            node.send_signal(signal.SIGKILL)
            await node.wait()
        if round_ % 2 == 0:  # while it is down, a reorg may orphan the block it had in flight
            await reorg(rpc, rng.randint(1, 2), 2, salt=2000 + salt)
    node = await _start_node(env, log)
    try:
        await wait_for_tip(clean_db.dsn, rpc, timeout=120)
        for _ in range(CONFIRMATIONS + 2):  # past a reorg made while it was down: final, whole
            salt += 1
            await activity(rpc, emitter, 1, salt=salt)
        await wait_for_tip(clean_db.dsn, rpc, timeout=60)
        await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
    finally:
        node.terminate()
        assert await asyncio.wait_for(node.wait(), 30) in (0, 143, -signal.SIGTERM)
        log.close()
    await assert_db_is_canonical(clean_db.dsn, rpc, 0)
    counts = await assert_kafka_is_postgres(
        kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS
    )
    assert counts["reverts"] > 0
    # the same through the command line a user runs
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        stored_blocks = await conn.fetch("SELECT number, hash FROM blocks ORDER BY number")
        tip = stored_blocks[-1]["number"]
    finally:
        await conn.close()
    head_blocks = await _consume_cli(env, "head.blocks")
    assert [(b.number, b.hash) for b in head_blocks] == [(r["number"], r["hash"]) for r in stored_blocks]
    confirmed = await _consume_cli(env, "confirmed.blocks")
    want = [(r["number"], r["hash"]) for r in stored_blocks if r["number"] <= tip - CONFIRMATIONS]
    assert [(b.number, b.hash) for b in confirmed] == want


def test_kafka_dev_module_prints_its_address_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sinks.kafka_dev"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
async def test_devnet_with_uniswap_activity_and_reorgs(
    fresh_devnet: Devnet, clean_db: DatabaseInfo, kafka: KafkaDev, prefix: str
) -> None:
    """The real thing: the seeded devnet's Uniswap v2/v3 trades, liquidity, pools and tokens, two reorgs
    while following, then ``head.*`` with reverts and ``confirmed.*`` against Postgres, and the example
    consumer's per-pool volume against SQL."""
    devnet = fresh_devnet
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = kafka_composite(options(kafka, prefix), postgres)
    exchanges = devnet.manifest["exchanges"]
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in exchanges if e["version"] == 2)
    v3 = ",".join(f"{e['factory']}={e['label']}" for e in exchanges if e["version"] == 3)
    try:
        async with RpcClient(devnet.rpc_http) as rpc:
            enrich = DexEnricher(rpc, postgres.pool, registry_from(v2, v3))
            follower = Follower(
                rpc,
                HeadStream(devnet.rpc_ws, rpc),
                start=[],
                from_block=0,
                max_reorg_depth=10,
                confirmations=CONFIRMATIONS,  # Finalize events publish confirmed.*
            )
            task = asyncio.create_task(consume(follower, writer, quiet=True, enrich=enrich))
            try:
                await wait_for_tip(clean_db.dsn, rpc, timeout=300)
                for depth in (3, 2):
                    await asyncio.to_thread(devnet.reorg, depth)
                    await asyncio.to_thread(devnet.activity, 2)
                    await wait_for_tip(clean_db.dsn, rpc, timeout=60)
                # a reorg's new branch goes to confirmed.* whole, once all of it is final: let the last
                # branch get deep enough before comparing confirmed.* with tip - confirmations
                await asyncio.to_thread(devnet.activity, CONFIRMATIONS + 2)
                await wait_for_tip(clean_db.dsn, rpc, timeout=60)
                await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
                assert not task.done(), f"the follower died: {task.exception()!r}"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await writer.close()
    counts = await assert_kafka_is_postgres(
        kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS
    )
    assert counts["reverts"] > 0
    # the merged trades topic: exactly the canonical DEX trades up to the confirmed cursor (as Postgres
    # holds them), each once; none from the orphaned branches
    pool = await asyncpg.create_pool(clean_db.dsn, min_size=1, max_size=2)
    try:
        stored = StoredChain(pool)
        cursor = await stored.cursor(CONFIRMED_CURSOR)
        assert cursor is not None
        confirmed = (await stored.batch_between(0, cursor.number)).of(DexTrade)
    finally:
        await pool.close()
    assert assert_merged_trades_are(kafka.bootstrap, f"{prefix}trades", confirmed) == len(confirmed) > 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "examples" / "pool_volume.py"), "--bootstrap-servers", kafka.bootstrap,
        "--topic", f"{prefix}head.dex_trades", "--until-end", "--every", "0", stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    got = orjson.loads(out.splitlines()[-1])
    conn = await asyncpg.connect(clean_db.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pool_address, token, sum(amount)::text AS total FROM ("
            " SELECT pool_address, token_bought_address AS token, amount_bought_raw AS amount FROM dex_trades"
            " UNION ALL SELECT pool_address, token_sold_address, amount_sold_raw FROM dex_trades) t"
            " GROUP BY 1, 2 HAVING sum(amount) <> 0"
        )
        trades = await conn.fetchval("SELECT count(*) FROM dex_trades")
    finally:
        await conn.close()
    want: dict[str, dict[str, str]] = {}
    for r in rows:
        want.setdefault(r["pool_address"], {})[r["token"]] = r["total"]
    assert got["pools"] == want and got["trades"] == trades > 1000
