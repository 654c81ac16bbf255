"""``confirmed.*``: canonical blocks deeper than ``confirmations``, published after Postgres commits them.

Two ways onto ``confirmed.*``, one per kind of stream:

- Streams that may see reorgs (``follow``): the publisher keeps its own cursor (``cursors`` row
  ``kafka.confirmed``) and, after each batch Postgres committed, publishes every stored block from
  that cursor up to ``tip - confirmations``, read back from Postgres (the canonical chain) in chunks,
  moving the cursor after each delivered chunk. A restart continues from the cursor: no gap, at most
  the last chunk again. It never skips a block that is not stored yet: it waits for it. With no
  cursor yet, it starts at the lowest stored block.
- Streams that write only confirmed blocks (``backfill``): the head sink already wrote their records
  to ``confirmed.*`` too, before Postgres committed them (the same guarantee as ``head.*``: never
  lost, maybe repeated). Here the cursor only moves over them when they continue it, so the
  follower's publisher does not read them back; a backfill chunk it cannot move over (written out of
  order, or below the cursor) is on ``confirmed.*`` all the same.

A failed delivery here does not fail the batch (Postgres has committed it): the next batch retries
from the cursor. A failure on Postgres does fail it, and the pipeline writes the batch again: a
replay, which changes nothing (``sinks.kafka``, point 5). Nothing is ever reverted on
``confirmed.*``; a reorg deeper than ``confirmations`` is logged once as an error and the new branch
is published after the old one.
"""

from __future__ import annotations

import asyncio
import logging

from records.batch import Batch
from sinks.kafka_keys import CONFIRMED, KINDS, EncodedCache, OutMessage, Topics, encode_batch
from sinks.kafka_producer import KafkaProducer, KafkaUnavailable
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.sink.kafka")

CONFIRMED_CURSOR = "kafka.confirmed"
CONFIRMED_STREAMS = frozenset({"backfill"})  # streams that write only confirmed blocks
PENDING_BATCHES = 64


class ConfirmedPublisher:
    """``confirmed.*`` from Postgres, by cursor. Goes after the Postgres sink."""

    def __init__(
        self,
        producer: KafkaProducer,
        topics: Topics,
        stored: StoredChain,
        confirmations: int,
        *,
        cache: EncodedCache | None = None,
        chunk_blocks: int = 100,
        confirmed_streams: frozenset[str] = CONFIRMED_STREAMS,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.stored = stored
        self.confirmations = confirmations
        self.cache = cache or EncodedCache()
        self.chunk_blocks = chunk_blocks
        self.confirmed_streams = confirmed_streams
        self._published: dict[str, set[bytes]] = {"pools": set(), "tokens": set()}
        self._lock = asyncio.Lock()  # a backfill writes chunks concurrently: one publisher at a time
        self._already: dict[int, Batch] = {}  # confirmed-stream batches already on Kafka, by first block

    async def write(self, batch: Batch) -> None:
        try:
            async with self._lock:
                await self._publish(batch)
        except KafkaUnavailable as exc:
            log.warning("confirmed topics not published (%s); the next batch retries from their cursor", exc)

    async def publish(self) -> None:
        """Catch up from the cursor (also done after every batch)."""
        async with self._lock:
            await self._publish(None)

    async def _publish(self, batch: Batch | None) -> None:
        stored = await self.stored.block_range()
        if stored is None:
            return
        target = stored[1] - self.confirmations
        recent = None
        # a confirmed stream's own process never reads back: what it writes is on Kafka already
        read_back = batch is None or batch.stream not in self.confirmed_streams
        if batch is not None and batch.blocks and batch.reorg is None:
            if batch.stream in self.confirmed_streams:
                if len(self._already) < PENDING_BATCHES:
                    self._already[batch.blocks[0].number] = batch
            else:
                recent = batch  # with confirmations = 0 it is the next range itself
        if self._already:
            target = max(target, *(b.blocks[-1].number for b in self._already.values()))
        cursor = await self.stored.cursor(CONFIRMED_CURSOR)
        start = stored[0] if cursor is None else await self._resume_after(cursor.number, cursor.hash)
        previous = cursor.hash if cursor is not None and start == cursor.number + 1 else None
        while start <= target:
            done = self._already.pop(start, None)
            ready = done or recent
            if ready is not None and self._is_next(ready, start, target, previous):
                if done is None:
                    await self._send(ready, fresh=True)
                tip = ready.blocks[-1]
                await self.stored.move_cursor_forward(CONFIRMED_CURSOR, tip.number, tip.hash)
                start, previous = tip.number + 1, tip.hash
                continue
            if not read_back:
                break
            last = await self.stored.contiguous_up_to(start, min(target, start + self.chunk_blocks - 1))
            if last is None:
                log.debug("confirmed topics wait for block %d (not stored yet)", start)
                break
            await self._send(await self.stored.batch_between(start, last.number), fresh=False)
            await self.stored.move_cursor_forward(CONFIRMED_CURSOR, last.number, last.hash)
            start, previous = last.number + 1, last.hash
        for first in [f for f in self._already if f < start]:  # below the cursor: nothing left to do
            del self._already[first]

    @staticmethod
    def _is_next(batch: Batch, start: int, target: int, previous_hash: str | None) -> bool:
        """The batch is exactly the next range, all confirmed, and continues the published chain."""
        blocks = batch.blocks
        return (
            batch.reorg is None
            and bool(blocks)
            and blocks[0].number == start
            and blocks[-1].number <= target
            and (previous_hash is None or blocks[0].parent_hash == previous_hash)
        )

    async def _resume_after(self, number: int, block_hash: str) -> int:
        if await self.stored.hash_at(number) == block_hash:
            return number + 1
        ancestor = await self.stored.pool.fetchval(
            "SELECT min(common_ancestor_number) FROM reorgs WHERE $1 = ANY(orphaned_hashes)", block_hash
        )
        restart = int(ancestor) + 1 if ancestor is not None else number
        previous = await self.stored.hash_at(restart - 1)
        if previous is None:
            await self.stored.delete_cursor(CONFIRMED_CURSOR)
        else:  # said once: from now on the cursor is on the canonical chain again
            await self.stored.set_cursor(CONFIRMED_CURSOR, restart - 1, previous)
        log.error(
            "confirmed topics hold block %d %s, which a reorg deeper than DEXNODE_CONFIRMATIONS=%d replaced;"
            " publishing the new branch from block %d (confirmed consumers must drop the old one)",
            number,
            block_hash[:10],
            self.confirmations,
            restart,
        )
        return restart

    async def _send(self, batch: Batch, *, fresh: bool) -> None:
        encoded = self.cache.encode(batch) if fresh else encode_batch(batch)
        topics = {kind: self.topics.of(CONFIRMED, kind) for kind in KINDS}
        messages: list[OutMessage] = []
        for kind, key, value, headers in encoded:
            seen = self._published.get(kind)
            if seen is not None:  # pools and tokens: once per process is enough (dedupe by key)
                if key in seen:
                    continue
                if len(seen) > 500_000:
                    seen.clear()
                seen.add(key)
            messages.append((topics[kind], key, value, headers, -1))
        await self.producer.send(messages)

    async def close(self) -> None:
        return None
