"""``backfill`` with Kafka configured (the Kafka sinks are imported only then): every backfilled block
and transaction on ``confirmed.*`` and ``head.*``, keyed and headed as the node has them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from core.database import DatabaseInfo
from core.settings import build_settings
from indexer.backfill.job import backfill
from indexer.chain.rpc import RpcClient
from sinks.kafka import KafkaOptions
from sinks.kafka_dev import start_kafka_dev
from tests.chain_check import mine, send_transfers
from tests.kafka_check import assert_blocks_and_transactions_on_both_flavours

pytestmark = pytest.mark.integration


@pytest.fixture
async def chain(anvil: str) -> AsyncIterator[RpcClient]:
    """Bare anvil with 20 blocks of ETH transfers (head 20)."""
    async with RpcClient(anvil) as rpc:
        await rpc.call("evm_setAutomine", [False])
        for i in range(20):
            await send_transfers(rpc, 1 + i % 3, salt=i)
            await mine(rpc)
        yield rpc


async def test_a_backfill_with_kafka_puts_every_block_and_transaction_on_both_flavours(
    chain: RpcClient, anvil: str, scratch_db: DatabaseInfo
) -> None:
    prefix = f"bf{uuid.uuid4().hex[:6]}."
    # the node's own answers are the truth: block number -> hash, transaction hash -> its block's hash
    blocks = [await chain.get_block_by_number(n, full_txs=False) for n in range(0, 16)]
    want_blocks = {str(int(b["number"], 16)): b["hash"] for b in blocks}
    want_txs = {tx: b["hash"] for b in blocks for tx in b["transactions"]}
    assert len(want_txs) > 16
    with start_kafka_dev() as broker:
        settings = build_settings(
            database_url=scratch_db.dsn,
            rpc_http=anvil,
            confirmations=5,  # head 20: blocks 0..15
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_topic_prefix=prefix,
        )
        report = await backfill(settings, from_block=0, batch_blocks=4, dex=False, progress_tty=False)
        assert (report.blocks, report.transactions) == (16, len(want_txs))
        options = KafkaOptions.from_settings(settings)
        assert options is not None

        await assert_blocks_and_transactions_on_both_flavours(
            options.consumer_config(), prefix, want_blocks, want_txs
        )
