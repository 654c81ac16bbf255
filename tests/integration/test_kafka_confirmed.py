"""``confirmed.*`` from memory: the follower's ``Finalize`` publishes the batches the publisher
remembered after their commit; Postgres is read back only for blocks this process never held
(stored before it started). Expectations come from the synthetic chain the test writes."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from core.database import DatabaseInfo
from records import Block, DexTrade, Reorg, from_dict
from records.batch import Batch
from sinks.kafka import KafkaOptions, KafkaPostgresSink, kafka_composite
from sinks.kafka_confirmed import ConfirmedPublisher
from sinks.kafka_dev import KafkaDev, start_kafka_dev
from sinks.postgres import PostgresSink
from tests.finalizing import FinalizingWriter
from tests.integration.test_kafka_consumers import TOKENS, block, chain
from tests.kafka_check import read_all

pytestmark = pytest.mark.integration

CONFIRMATIONS = 2


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaDev]:
    with start_kafka_dev() as broker:
        yield broker


def publisher_of(writer: KafkaPostgresSink) -> ConfirmedPublisher:
    return writer.confirmed


def confirmed_of(kafka: KafkaDev, prefix: str, kind: str) -> list[object]:
    """Every message of the topic, in chain order (partitions keep no order between them)."""
    records = [from_dict(m.doc) for m in read_all(kafka.bootstrap, f"{prefix}confirmed.{kind}")]
    return sorted(
        records, key=lambda r: (getattr(r, "number", None) or getattr(r, "block_number", 0), repr(r))
    )


async def test_confirmed_comes_from_memory_and_a_restart_reads_back_only_the_blocks_it_never_held(
    clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}."
    genesis = block(0, "main", "0x" + "0" * 64)
    batches = [Batch("follow", [genesis]), *chain(1, 9, "main", genesis.hash, salt=0)]

    first = kafka_composite(
        KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS), await PostgresSink.connect(clean_db.dsn)
    )
    try:
        for b in batches[:7]:  # blocks 0..6: final up to 4
            await FinalizingWriter(first, CONFIRMATIONS).write(b)
        assert publisher_of(first).read_back_blocks == 0, "everything this process wrote, from memory"
    finally:
        await first.close()
    blocks = [b.blocks[0] for b in batches]
    assert confirmed_of(kafka, prefix, "blocks") == blocks[:5]  # every field, each once

    restarted = kafka_composite(
        KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS), await PostgresSink.connect(clean_db.dsn)
    )
    try:
        for b in batches[7:]:  # blocks 7..9: final up to 7; 5 and 6 were stored before the restart
            await FinalizingWriter(restarted, CONFIRMATIONS).write(b)
        assert publisher_of(restarted).read_back_blocks == 2, "only blocks 5 and 6 come from Postgres"
    finally:
        await restarted.close()

    got = confirmed_of(kafka, prefix, "blocks")
    assert got == blocks[:8]  # no gap, no repeat across the restart
    assert all(isinstance(b, Block) for b in got)
    trades = confirmed_of(kafka, prefix, "dex_trades")
    want = [t for b in batches[:8] for t in b.of(DexTrade)]
    assert Counter(map(repr, trades)) == Counter(map(repr, want))  # read back or from memory: the same
    # tokens: deduplicated per process (a restart may repeat them: same key, same content)
    assert {repr(t) for t in confirmed_of(kafka, prefix, "tokens")} == {repr(t) for t in TOKENS}


async def test_a_reorg_within_confirmations_publishes_only_the_new_branch_from_memory(
    clean_db: DatabaseInfo, kafka: KafkaDev
) -> None:
    prefix = f"n{uuid.uuid4().hex[:8]}."
    genesis = block(0, "main", "0x" + "0" * 64)
    main = chain(1, 5, "main", genesis.hash, salt=0)
    side = chain(5, 8, "side", main[3].blocks[0].hash, salt=3)  # replaces 5 (not final yet) with 5'
    reorg = Reorg(4, main[3].blocks[0].hash, 1, (main[4].blocks[0].hash,), (side[0].blocks[0].hash,), 1)
    writer = kafka_composite(
        KafkaOptions(kafka.bootstrap, prefix, CONFIRMATIONS), await PostgresSink.connect(clean_db.dsn)
    )
    try:
        finalizing = FinalizingWriter(writer, CONFIRMATIONS)
        for b in [Batch("follow", [genesis]), *main]:
            await finalizing.write(b)  # final up to 3
        await finalizing.write(Batch("follow", side[0].blocks, side[0].records, reorg=reorg))
        for b in side[1:]:
            await finalizing.write(b)  # tip 8: final up to 6
        assert publisher_of(writer).read_back_blocks == 0
    finally:
        await writer.close()
    want = [genesis, *(b.blocks[0] for b in main[:4]), *(b.blocks[0] for b in side[:2])]
    assert confirmed_of(kafka, prefix, "blocks") == want  # the orphaned 5 never reached confirmed.*
