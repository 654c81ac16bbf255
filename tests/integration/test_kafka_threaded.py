"""A big batch is encoded and produced in the producer's thread while Postgres writes it
(``sinks.kafka.THREADED_RECORDS``): Postgres must still commit only once Kafka has every message.

Against librdkafka's mock cluster (its own process, frozen to stop answering), a real anvil and a real
Postgres; the truth is the node's own blocks and transactions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.database import DatabaseInfo
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import batch_of
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import start_kafka_dev
from sinks.kafka_producer import KafkaUnavailable
from sinks.postgres import PostgresSink
from tests.chain_check import mine, send_transfers
from tests.kafka_check import assert_blocks_and_transactions_on_both_flavours

pytestmark = pytest.mark.integration

BLOCKS = 12


@pytest.fixture
async def chain(anvil: str) -> AsyncIterator[RpcClient]:
    """Bare anvil with blocks of ETH transfers (head ``BLOCKS``)."""
    async with RpcClient(anvil) as rpc:
        await rpc.call("evm_setAutomine", [False])
        for i in range(BLOCKS):
            await send_transfers(rpc, 1 + i % 3, salt=i)
            await mine(rpc)
        yield rpc


async def test_a_threaded_batch_commits_only_after_kafka_acknowledged_all_of_it(
    chain: RpcClient, clean_db: DatabaseInfo
) -> None:
    numbers = list(range(BLOCKS + 1))
    blocks = await chain.get_blocks(numbers)
    receipts = await chain.get_receipts_for_blocks(blocks)
    batch = batch_of("backfill", [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)])
    want_blocks = {str(int(b["number"], 16)): b["hash"] for b in blocks}
    want_txs = {tx["hash"]: b["hash"] for b in blocks for tx in b["transactions"]}
    assert len(want_txs) > BLOCKS
    prefix = f"th{uuid.uuid4().hex[:6]}."
    with start_kafka_dev() as broker:
        options = KafkaOptions(broker.bootstrap, prefix, 5, {"message.timeout.ms": "1500"})
        postgres = await PostgresSink.connect(clean_db.dsn)
        writer = kafka_composite(options, postgres, journal=False, threaded_records=0)
        try:
            await writer.head.start("backfill")
            broker.pause()
            try:
                with pytest.raises(KafkaUnavailable):  # every delivery times out: the COMMIT waited
                    await writer.write(batch)
            finally:
                broker.resume()
            conn = await asyncpg.connect(clean_db.dsn)
            try:
                assert await conn.fetchval("SELECT count(*) FROM blocks") == 0  # rolled back
                assert await conn.fetchval("SELECT count(*) FROM cursors") == 0
                await writer.write(batch)  # written again once the broker answers
                stored = {
                    str(r["number"]): r["hash"] for r in await conn.fetch("SELECT number, hash FROM blocks")
                }
                assert stored == want_blocks
            finally:
                await conn.close()
        finally:
            await writer.close()

        await assert_blocks_and_transactions_on_both_flavours(
            options.consumer_config(), prefix, want_blocks, want_txs
        )


@pytest.mark.parametrize("threaded_records", [0, 10_000], ids=["threaded", "on the event loop"])
async def test_a_backfill_batch_is_not_kept_encoded_a_follow_batch_is(
    chain: RpcClient, clean_db: DatabaseInfo, threaded_records: int
) -> None:
    """A backfill batch is on ``confirmed.*`` once the head sink wrote it: its encoding is not kept for
    the confirmed publisher (which never sends it again), while a follow batch's is, for when it is final."""
    numbers = list(range(BLOCKS + 1))
    blocks = await chain.get_blocks(numbers)
    receipts = await chain.get_receipts_for_blocks(blocks)
    extracted = [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)]
    backfill, follow = batch_of("backfill", extracted[:-1]), batch_of("follow", extracted[-1:])
    want_blocks = {str(int(b["number"], 16)): b["hash"] for b in blocks[:-1]}
    want_txs = {tx["hash"]: b["hash"] for b in blocks[:-1] for tx in b["transactions"]}
    prefix = f"th{uuid.uuid4().hex[:6]}."
    with start_kafka_dev() as broker:
        options = KafkaOptions(broker.bootstrap, prefix, 5)
        postgres = await PostgresSink.connect(clean_db.dsn)
        writer = kafka_composite(options, postgres, journal=False, threaded_records=threaded_records)
        try:
            await writer.head.start("backfill")
            await writer.write(backfill)
            assert backfill not in writer.head.cache
        finally:
            await writer.close()
        await assert_blocks_and_transactions_on_both_flavours(
            options.consumer_config(), prefix, want_blocks, want_txs
        )
        # a follow batch (its own topics: head.* only until final) is kept for the publisher
        options = KafkaOptions(broker.bootstrap, f"th{uuid.uuid4().hex[:6]}.", 5)
        postgres = await PostgresSink.connect(clean_db.dsn)  # closed with the first writer
        writer = kafka_composite(options, postgres, journal=False, threaded_records=threaded_records)
        try:
            await writer.write(follow)
            assert follow in writer.confirmed.cache
        finally:
            await writer.close()
