"""A backfill that replaces blocks the follower stored (which a reorg since orphaned) reverts them on
``head.*``: a consumer applying docs/kafka.md's rule to every ``head.*`` topic ends with exactly the
canonical chain, and each replaced block's revert comes before the backfill's record of that height.

Real anvil (a reorg by ``anvil_reorg``), real Postgres, librdkafka's mock cluster. The truth is the
node's own chain (``assert_db_is_canonical``) and Postgres read with plain SQL against a bare
consumer (``assert_kafka_is_postgres``, which shares no code with the Kafka sinks).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from core.database import DatabaseInfo
from core.settings import build_settings
from indexer.backfill.job import backfill
from indexer.chain.extract import extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import FOLLOW_STREAM, batch_of
from sinks.kafka import KafkaOptions, kafka_composite
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from tests.chain_check import assert_db_is_canonical, mine, reorg, send_transfers
from tests.kafka_check import (
    assert_kafka_is_postgres,
    deploy_transfer_emitter,
    raw_messages,
    send_token_transfers,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


@pytest.fixture
async def chain(anvil: str) -> AsyncIterator[RpcClient]:
    """anvil with 30 blocks of ETH transfers and token transfers (logs) after the token's deployment."""
    async with RpcClient(anvil) as rpc:
        emitter = await deploy_transfer_emitter(rpc)
        await rpc.call("evm_setAutomine", [False])
        for i in range(30):
            await send_transfers(rpc, 1 + i % 2, salt=i)
            await send_token_transfers(rpc, emitter, 1 + i % 3, salt=i)
            await mine(rpc)
        yield rpc


async def test_a_backfill_replacing_the_followers_orphaned_blocks_reverts_them_on_head_topics(
    chain: RpcClient, anvil: str, clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    prefix = f"bfr{uuid.uuid4().hex[:6]}."
    settings = build_settings(
        database_url=clean_db.dsn,
        rpc_http=anvil,
        confirmations=1,
        kafka_bootstrap_servers=kafka.bootstrap,
        kafka_topic_prefix=prefix,
    )
    options = KafkaOptions.from_settings(settings)
    assert options is not None

    # the follower stored the last 12 blocks on Postgres and head.* (the node's blocks then), one a batch
    head = await chain.block_number()
    blocks = await chain.get_blocks(list(range(head - 11, head + 1)))
    receipts = await chain.get_receipts_for_blocks(blocks)
    followed = [extract_block(b, r) for b, r in zip(blocks, receipts, strict=True)]
    follower = kafka_composite(options, await PostgresSink.connect(clean_db.dsn))
    try:
        for extracted in followed:
            await follower.write(batch_of(FOLLOW_STREAM, [extracted]))
    finally:
        await follower.close()

    # then the node replaced the last 7 with a branch of other transactions (no token transfers), and went on
    await reorg(chain, 7, 5, salt=77)
    await mine(chain, 3)
    orphaned = {b.block.number: b.block.hash for b in followed[5:]}
    now = {int(b["number"], 16): b["hash"] for b in await chain.get_blocks(sorted(orphaned))}
    assert all(now[n] != orphaned[n] for n in orphaned), "anvil did not replace the blocks"
    orphaned_logs = sum(len(b.logs) for b in followed[5:])
    assert orphaned_logs > 7  # the orphaned branch had records of its own, which the new one lacks

    report = await backfill(settings, from_block=0, batch_blocks=6, dex=False, progress_tty=False)
    assert report.blocks == head + 3  # 0..head+2 (head+3 now, 1 confirmation)

    # and the follower, restarted, stores the head (the one block the backfill may not write)
    (tip,) = await chain.get_blocks([head + 3])
    (tip_receipts,) = await chain.get_receipts_for_blocks([tip])
    follower = kafka_composite(options, await PostgresSink.connect(clean_db.dsn))
    try:
        await follower.write(batch_of(FOLLOW_STREAM, [extract_block(tip, tip_receipts)]))
    finally:
        await follower.close()

    await assert_db_is_canonical(clean_db.dsn, chain, 0)
    counts = await assert_kafka_is_postgres(kafka.bootstrap, prefix, clean_db.dsn, confirmations=1)
    assert counts["reverts"] >= len(orphaned) + orphaned_logs  # a block, its logs, transfers, txs

    # per height, on head.blocks (one key, one partition): the follower's block, its revert, the backfill's
    by_key: dict[str, list[tuple[str, str]]] = {}
    for m in raw_messages(kafka.bootstrap, f"{prefix}head.blocks"):
        by_key.setdefault(m.key, []).append(
            (m.doc["type"], m.doc["data"].get("hash") or m.doc["data"]["block_hash"])
        )
    for number, old in orphaned.items():
        assert by_key[str(number)] == [("block", old), ("revert", old), ("block", now[number])], number
    kept = followed[1].block  # below the reorg: the follower's record, then the backfill's duplicate
    assert by_key[str(kept.number)] == [("block", kept.hash), ("block", kept.hash)]
