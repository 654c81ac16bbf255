"""``confirmed.*``: canonical blocks deeper than ``confirmations``, published after Postgres commits them.

Two ways onto ``confirmed.*``, one per kind of stream:

- Streams that may see reorgs (``follow``): ``write`` only remembers each batch (after its Postgres
  commit, with its DEX records) in memory, and forgets the blocks a reorg batch orphans. The
  follower's core says when blocks are final (``Finalize``, ``tip - confirmations``), and
  ``finalize`` publishes from memory every block from the publisher's cursor (``cursors`` row
  ``kafka.confirmed``) up to that block, moving the cursor after each delivered batch: the records
  are encoded once (the head sink's encoding, when still cached), never read back. The read-backs
  left: blocks memory cannot have — stored before this process started (a restart continues from the
  cursor), or dropped from memory when it is full — and the final part of a reorg's new branch whose
  newer blocks are not final yet, are read from Postgres (the canonical chain) in chunks. It never
  skips a block that is not stored yet: it waits for it. With no cursor yet, it starts at the lowest
  stored block.
- Streams that write only confirmed blocks (``backfill``): the head sink already wrote their records
  to ``confirmed.*`` too, before Postgres committed them (the same guarantee as ``head.*``: never
  lost, maybe repeated). Here the cursor only moves over them when they continue it; a backfill
  chunk it cannot move over (written out of order, or below the cursor) is on ``confirmed.*`` all
  the same.

A failed delivery here does not fail the batch (Postgres has committed it): the next ``finalize``
retries from the cursor. A failure on Postgres does fail it, and the pipeline writes the batch
again: a replay, which changes nothing (``sinks.kafka``, point 5). Nothing is ever reverted on
``confirmed.*``; a reorg deeper than ``confirmations`` is logged once as an error and the new branch
is published after the old one.
"""

from __future__ import annotations

import asyncio
import logging

from records.batch import Batch
from sinks.kafka_keys import (
    CONFIRMED,
    KINDS,
    EncodedCache,
    OutMessage,
    Topics,
    encode_batch,
    merged_trade_messages,
)
from sinks.kafka_producer import KafkaProducer, KafkaUnavailable
from sinks.postgres import BlockRef
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.sink.kafka")

CONFIRMED_CURSOR = "kafka.confirmed"
CONFIRMED_STREAMS = frozenset({"backfill"})  # streams that write only confirmed blocks
PENDING_BATCHES = 64
REMEMBERED_BATCHES = 4096  # unfinalised follow batches kept; beyond (a huge DEXNODE_CONFIRMATIONS) read back


class ConfirmedPublisher:
    """``confirmed.*`` from the batches in memory (Postgres only for what memory cannot have), by
    cursor. Goes after the Postgres sink."""

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
        self.read_back_blocks = 0  # blocks published from Postgres, not from memory (restarts)
        self._published: dict[str, set[bytes]] = {"pools": set(), "tokens": set()}
        self._lock = asyncio.Lock()  # a backfill writes chunks concurrently: one publisher at a time
        self._already: dict[int, Batch] = {}  # confirmed-stream batches already on Kafka, by first block
        self._pending: dict[int, Batch] = {}  # follow batches committed, not final yet, by first block
        self._cursor: BlockRef | None = None  # the last published block, once read from Postgres
        self._cursor_known = False

    async def write(self, batch: Batch) -> None:
        try:
            async with self._lock:
                if batch.stream in self.confirmed_streams:
                    await self._move_over(batch)
                else:
                    await self._remember(batch)
        except KafkaUnavailable as exc:
            log.warning("confirmed topics not published (%s); the next batch retries from their cursor", exc)

    async def finalize(self, block: BlockRef) -> None:
        """``block`` and everything below it are final: publish them, from memory where it can. A
        failed delivery waits for the next final block; a failure on Postgres (the cursor) raises,
        and the caller retries (``indexer.pipeline.pipeline``): memory still holds the batches."""
        try:
            async with self._lock:
                await self._publish_up_to(block.number)
        except KafkaUnavailable as exc:
            log.warning("confirmed topics not published (%s); the next final block retries", exc)

    async def publish(self) -> None:
        """Catch up from the cursor to the stored tip minus ``confirmations``."""
        stored = await self.stored.block_range()
        if stored is not None:
            async with self._lock:
                await self._publish_up_to(stored[1] - self.confirmations)

    async def _remember(self, batch: Batch) -> None:
        if batch.reorg is not None:
            ancestor = batch.reorg.common_ancestor_number
            for first in [f for f, b in self._pending.items() if b.blocks[-1].number > ancestor]:
                del self._pending[first]  # orphaned (a batch that straddles the ancestor: read back)
            cursor = await self._load_cursor()
            if cursor is not None and cursor.number > ancestor:
                await self._published_orphans(cursor, ancestor, batch.reorg.common_ancestor_hash)
        if not batch.blocks:
            return
        self._pending[batch.blocks[0].number] = batch
        if len(self._pending) > REMEMBERED_BATCHES:
            del self._pending[min(self._pending)]  # read back from Postgres when final

    async def _load_cursor(self) -> BlockRef | None:
        """The cursor, read from Postgres once (checked canonical: a reorg deeper than
        ``confirmations`` may have replaced it while the process was down); then kept in memory."""
        if not self._cursor_known:
            cursor = await self.stored.cursor(CONFIRMED_CURSOR)
            if cursor is not None and await self.stored.hash_at(cursor.number) != cursor.hash:
                await self._resume_after(cursor.number, cursor.hash)
                cursor = await self.stored.cursor(CONFIRMED_CURSOR)
            self._cursor, self._cursor_known = cursor, True
        return self._cursor

    async def _published_orphans(self, cursor: BlockRef, ancestor: int, ancestor_hash: str) -> None:
        log.error(
            "confirmed topics hold blocks up to %d %s, which a reorg deeper than DEXNODE_CONFIRMATIONS=%d"
            " replaced above block %d; publishing the new branch from block %d (confirmed consumers must"
            " drop the old one)",
            cursor.number,
            cursor.hash[:10],
            self.confirmations,
            ancestor,
            ancestor + 1,
        )
        await self.stored.set_cursor(CONFIRMED_CURSOR, ancestor, ancestor_hash)
        self._cursor = BlockRef(ancestor, ancestor_hash, "")

    async def _publish_up_to(self, target: int) -> None:
        after = await self._first_unpublished(await self._load_cursor())
        if after is None:
            return
        start, previous = after
        while start <= target:
            ready = self._pending.get(start)
            if ready is not None and self._is_next(ready, start, target, previous):
                await self._send(ready, fresh=True)  # kept until the cursor moved: a failure retries it
            else:
                # not the next range in memory: stored before this process started, dropped when memory
                # was full, or a reorg's new branch reaching above the final block (its final part is
                # read back now, the rest when final: confirmed.* never lags more than confirmations)
                end = min(target, start + self.chunk_blocks - 1, *(f - 1 for f in self._pending if f > start))
                last = await self.stored.contiguous_up_to(start, end)
                if last is None:
                    log.debug("confirmed topics wait for block %d (not stored yet)", start)
                    break
                ready = await self.stored.batch_between(start, last.number)
                self.read_back_blocks += len(ready.blocks)
                await self._send(ready, fresh=False)
            tip = ready.blocks[-1]
            await self.stored.move_cursor_forward(CONFIRMED_CURSOR, tip.number, tip.hash)
            self._cursor = BlockRef(tip.number, tip.hash, tip.parent_hash)
            self._pending.pop(start, None)
            start, previous = tip.number + 1, tip.hash
        for first in [f for f in self._pending if f < start]:  # below the cursor: nothing left to do
            del self._pending[first]

    async def _first_unpublished(self, cursor: BlockRef | None) -> tuple[int, str | None] | None:
        """(first block not on ``confirmed.*`` yet, hash it must follow): after the cursor, or the first
        stored block when nothing was published; None when nothing is stored."""
        if cursor is not None:
            return cursor.number + 1, cursor.hash
        stored = await self.stored.block_range()
        return None if stored is None else (stored[0], None)

    async def _move_over(self, batch: Batch) -> None:
        """A confirmed stream's batch is on ``confirmed.*`` already: move the cursor over it (and
        over those written before it out of order) when it continues the cursor."""
        if batch.blocks and batch.reorg is None and len(self._already) < PENDING_BATCHES:
            self._already[batch.blocks[0].number] = batch
        # a follower may move the cursor too: read it, not the cached one
        after = await self._first_unpublished(await self.stored.cursor(CONFIRMED_CURSOR))
        if after is None:
            return
        start, previous = after
        while (done := self._already.pop(start, None)) is not None:
            if not self._is_next(done, start, done.blocks[-1].number, previous):
                break
            tip = done.blocks[-1]
            await self.stored.move_cursor_forward(CONFIRMED_CURSOR, tip.number, tip.hash)
            start, previous = tip.number + 1, tip.hash
        for first in [f for f in self._already if f < start]:
            del self._already[first]
        self._cursor_known = False  # re-read by a follow stream's publisher in this process, if any

    @staticmethod
    def _is_next(batch: Batch, start: int, target: int, previous_hash: str | None) -> bool:
        """The batch is exactly the next range, all confirmed, and continues the published chain (a
        reorg batch's new branch counts: ``confirmed.*`` carries its records, never the reorg)."""
        blocks = batch.blocks
        return (
            bool(blocks)
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
            topic = topics.get(kind)
            if topic is not None:  # no confirmed.reorgs: nothing there is undone
                messages.append((topic, key, value, headers, -1))
        messages.extend(merged_trade_messages(batch, self.topics.merged_trades()))  # final: never reverted
        await self.producer.send(messages)

    async def close(self) -> None:
        return None
