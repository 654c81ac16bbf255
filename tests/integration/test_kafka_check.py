"""The oracle ``tests.kafka_check.assert_kafka_is_postgres`` can fail: after the real follower wrote a
bare anvil chain with token transfers and a reorg to Postgres and Kafka, it passes; then one changed
field of a stored record, a stored block Kafka never carried, or a record Kafka holds that Postgres lost
each make it fail, naming the topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from core.database import DatabaseInfo
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import consume
from indexer.realtime.follower import Follower
from indexer.realtime.heads import HeadStream
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from tests.chain_check import mine, reorg, send_transfers, wait_for_tip
from tests.kafka_check import (
    assert_kafka_is_postgres,
    deploy_transfer_emitter,
    send_token_transfers,
    wait_for_confirmed,
)

pytestmark = pytest.mark.integration

CONFIRMATIONS = 2


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@pytest.fixture
async def rpc(anvil: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(anvil) as client:
        await client.call("evm_setAutomine", [False])
        yield client


@contextlib.asynccontextmanager
async def _saved(conn: asyncpg.Connection, table: str) -> AsyncIterator[None]:
    await conn.execute(f'CREATE TEMP TABLE _saved AS SELECT * FROM "{table}"')
    try:
        yield
    finally:
        await conn.execute(
            f'TRUNCATE "{table}"; INSERT INTO "{table}" SELECT * FROM _saved; DROP TABLE _saved'
        )


async def test_the_oracle_passes_on_what_the_node_wrote_and_fails_on_any_difference(
    anvil: str, rpc: RpcClient, clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    emitter = await deploy_transfer_emitter(rpc)
    postgres = await PostgresSink.connect(clean_db.dsn)
    writer = kafka_composite(KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS, {}), postgres)
    heads = HeadStream(anvil.replace("http", "ws"), rpc, silence_timeout=5)
    follower = Follower(rpc, heads, start=[], from_block=0, max_reorg_depth=10, confirmations=CONFIRMATIONS)
    task = asyncio.create_task(consume(follower, writer, quiet=True))
    try:
        for i in range(6):
            await send_transfers(rpc, 1, salt=i)
            await send_token_transfers(rpc, emitter, 2, salt=i)
            await mine(rpc)
        await wait_for_tip(clean_db.dsn, rpc)
        await reorg(rpc, 2, 2, salt=9)
        await mine(rpc, 3)
        await wait_for_tip(clean_db.dsn, rpc)
        await wait_for_confirmed(clean_db.dsn, await rpc.block_number() - CONFIRMATIONS)
        assert not task.done(), f"the follower died: {task.exception()!r}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await writer.close()

    async def check() -> dict[str, int]:
        return await assert_kafka_is_postgres(
            kafka.bootstrap, prefix, clean_db.dsn, confirmations=CONFIRMATIONS
        )

    counts = await check()
    assert counts["reverts"] > 0 and counts["confirmed"] > 0

    conn = await asyncpg.connect(clean_db.dsn)
    try:
        changes = [
            ("token_transfers", "UPDATE token_transfers SET value = value + 1 WHERE ctid ="
             " (SELECT min(ctid) FROM token_transfers)", r"head\.token_transfers .*differ"),
            ("transactions", "UPDATE transactions SET gas_used = gas_used + 1 WHERE ctid ="
             " (SELECT min(ctid) FROM transactions)", r"head\.transactions .*differ"),
            ("logs", "DELETE FROM logs WHERE ctid = (SELECT min(ctid) FROM logs)",
             r"head\.logs: keys only on Kafka"),
            ("blocks", "INSERT INTO blocks SELECT number + 1000, 'x', hash, nonce, sha3_uncles, logs_bloom,"
             " transactions_root, state_root, receipts_root, miner, difficulty, total_difficulty, extra_data,"
             " size, gas_limit, gas_used, base_fee_per_gas, timestamp, transaction_count, withdrawals_root,"
             " withdrawals, blob_gas_used, excess_blob_gas, parent_beacon_block_root, requests_hash"
             " FROM blocks ORDER BY number LIMIT 1",
             r"head\.blocks: keys only on Kafka \[\], only in Postgres"),
        ]  # fmt: skip
        for table, sql, message in changes:
            async with _saved(conn, table):
                await conn.execute(sql)
                with pytest.raises(AssertionError, match=message):
                    await check()
    finally:
        await conn.close()
    await check()
