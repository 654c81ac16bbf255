"""The follower's part, for tests that write batches by hand into the Kafka sinks.

The realtime core says a block is final when it is ``confirmations`` below the tip
(``indexer.realtime.core``); a test that writes a follow stream's batches itself says it the same
way, from its own synthetic chain: after each batch, the block that far below the batch's tip.
A failure of ``finalize`` fails the write, so ``write_with_retry`` writes the batch again (what
the pipeline does after a publisher failure on Postgres: a replay)."""

from __future__ import annotations

from records.batch import Batch
from sinks.kafka import KafkaPostgresSink
from sinks.postgres import BlockRef


class FinalizingWriter:
    def __init__(self, writer: KafkaPostgresSink, confirmations: int) -> None:
        self.writer = writer
        self.confirmations = confirmations

    async def write(self, batch: Batch) -> None:
        await self.writer.write(batch)
        tip = batch.tip
        if tip is not None and tip.number >= self.confirmations:
            await self.writer.finalize(BlockRef(tip.number - self.confirmations, "", ""))

    async def close(self) -> None:
        await self.writer.close()
