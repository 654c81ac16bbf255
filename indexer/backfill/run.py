"""The parallel backfill: confirmed block ranges → chunks → fetch, extract, enrich → one transaction each.

``Backfill.run(chunks)`` fetches up to ``AdaptiveLoad.workers`` chunks at once and holds at most twice
as many (fetched, waiting for their turn, being written); with a ``MemoryBudget`` chunks are cut so
that what is held fits the budget, measured in bytes of the node's answers per block. A chunk's blocks are
fetched in JSON-RPC batches of ``rpc.max_batch_size`` (``eth_getBlockByNumber`` with full
transactions, then ``eth_getBlockReceipts``), extracted as each batch arrives (so at most one batch
of raw JSON per chunk is alive) and checked to form one chain (each block's parent hash is the
previous block's hash). Chunks are then enriched with protocol records one at a time in block order
(when an ``Enricher`` is given) and written by ``BackfillSink``, in parallel, each in one transaction
together with its checkpoint row.

Only confirmed blocks are ever asked for: ``resolve_target`` turns ``--to`` into a block at or below
``head - confirmations`` (or the node's ``finalized`` block), so a backfill never stores a block that
can still be reorged and can run beside the follower.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import ConfigError, DexnodeError, RetryableError
from core.retry import RetryPolicy
from indexer.backfill.load import NODE_DOWN, NODE_DOWN_LOG_EVERY, AdaptiveLoad, MemoryBudget, Slots
from indexer.backfill.plan import BlockRange
from indexer.backfill.progress import Progress
from indexer.chain.extract import ExtractedBlock, InconsistentBlockError, extract_block
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import (
    RECORD_MAKERS,
    Enricher,
    batch_of,
    fewer_collections,
    write_with_retry,
)
from records import DexTrade, Log, TokenTransfer, Transaction
from records.batch import Batch
from sinks.base import Sink

log = logging.getLogger("dexnode.backfill")

BACKFILL_STREAM = "backfill"
# tries of one batch of blocks whose answers do not fit together (a load-balanced node whose backends
# disagree for a moment): short waits, the backends catch up within a block time
REFETCH = RetryPolicy(attempts=5, base_delay=0.2, max_delay=1.0)
MEASURE_FIRST, MEASURE_EVERY = 8, 16  # batches whose answers are measured for the memory budget


@dataclass(frozen=True)
class Target:
    last: int  # the last block this run may write
    head: int
    note: str | None  # said to the user when --to asked for more than is confirmed


async def resolve_target(rpc: RpcClient, to: str, confirmations: int) -> Target:
    """``to`` is a block number, ``confirmed`` (head - confirmations) or ``finalized`` (the node's tag)."""
    head = await rpc.block_number()
    if to == "finalized":
        block = await rpc.get_block_by_number("finalized", full_txs=False)
        return Target(int(block["number"], 16), head, None)
    safe = head - confirmations
    if to == "confirmed":
        return Target(safe, head, None)
    try:
        wanted = int(to)
    except ValueError:
        raise ConfigError(f"--to must be a block number, 'confirmed' or 'finalized' (got {to!r})") from None
    if wanted <= safe:
        return Target(wanted, head, None)
    note = (
        f"--to {wanted} is above the last confirmed block {safe} (head {head} minus {confirmations}"
        f" confirmations): only blocks up to {safe} are written, so none can be reorged;"
        " `dexnode follow` indexes the newer ones"
    )
    return Target(safe, head, note)


@dataclass
class BackfillReport:
    chunks: int = 0
    blocks: int = 0
    transactions: int = 0
    logs: int = 0
    token_transfers: int = 0
    dex_trades: int = 0
    seconds: float = 0.0
    fetch_seconds: float = 0.0  # summed over chunks (they overlap)
    write_seconds: float = 0.0
    refetches: int = 0
    backoffs: int = 0
    node_failures: int = 0  # tries of a chunk that failed after the client's retries, then waited out
    index_rebuild_seconds: float = 0.0

    def line(self) -> str:
        s = max(self.seconds, 1e-6)
        return (
            f"backfilled {self.blocks:,} blocks, {self.transactions:,} txs, {self.logs:,} logs,"
            f" {self.token_transfers:,} token transfers, {self.dex_trades:,} DEX trades in {self.chunks:,}"
            f" chunks in {self.seconds:.2f}s: {self.blocks / s:,.1f} blocks/s, {self.transactions / s:,.0f}"
            f" txs/s, {self.logs / s:,.0f} logs/s"
            + (
                f"; secondary indexes rebuilt in {self.index_rebuild_seconds:.2f}s"
                if self.index_rebuild_seconds
                else ""
            )
        )


class Backfill:
    def __init__(
        self,
        rpc: RpcClient,
        sink: Sink,
        *,
        load: AdaptiveLoad,
        enrich: Enricher | None = None,
        progress: Progress | None = None,
        budget: MemoryBudget | None = None,
        node_down: RetryPolicy = NODE_DOWN,
        log_every: float = NODE_DOWN_LOG_EVERY,
    ) -> None:
        self.rpc = rpc
        self.sink = sink
        self.load = load
        self.enrich = enrich
        self.progress = progress
        self.budget = budget
        self.node_down = node_down
        self.log_every = log_every
        self.report = BackfillReport()
        self._slots = Slots(load)
        self._queue: deque[BlockRange] = deque()
        self._unenriched: list[int] = []  # heap of the first blocks of chunks not enriched yet
        self._enrich_cond = asyncio.Condition()
        self._down_since: float | None = None  # when the node started failing every try
        self._down_logged = 0.0
        self._measured_batches = 0
        rpc.max_batch_size = load.batch

    @property
    def window(self) -> int:
        """Most chunks held at once (fetched or being fetched, waiting, being written)."""
        return 2 * self.load.max_workers

    async def run(self, chunks: Sequence[BlockRange]) -> BackfillReport:
        """Write every chunk. A retryable failure (the node down, 429s beyond the client's retries)
        is waited out and the chunk tried again; a fatal error in one chunk stops the others (a chunk
        is all or nothing) and is raised as itself, not inside an ``ExceptionGroup``."""
        ordered = sorted(chunks)
        self._queue.extend(ordered)
        if self.enrich is not None:
            self._unenriched = [c.first for c in ordered]
            heapq.heapify(self._unenriched)
        t0 = time.perf_counter()
        if self.progress is not None:
            self.progress.set_load(self.load.workers, self.load.batch)
        try:
            if self.budget is not None and not self.budget.measured and ordered:
                # one block alone first, to measure the node's answers before sizing chunks by them
                await self._fetch_until_done(BlockRange(ordered[0].first, ordered[0].first))
            with fewer_collections():
                async with asyncio.TaskGroup() as tasks:
                    for i in range(min(self.window, len(ordered))):
                        tasks.create_task(self._worker(), name=f"backfill-worker-{i}")
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self.report.seconds = time.perf_counter() - t0
            self.report.backoffs = self.load.backoffs
        return self.report

    async def _worker(self) -> None:
        while self._queue:
            chunk = await self._take()
            if chunk is not None:
                await self._process(chunk)

    async def _take(self) -> BlockRange | None:
        """The next chunk, cut to what the memory budget allows."""
        if not self._queue:
            return None
        if self.budget is None:
            return self._queue.popleft()
        return self._cut(self.budget.chunk_blocks(len(self._queue[0]), self.window))

    def _cut(self, blocks: int) -> BlockRange:
        chunk = self._queue.popleft()
        if len(chunk) <= blocks:
            return chunk
        piece, rest = (
            BlockRange(chunk.first, chunk.first + blocks - 1),
            BlockRange(chunk.first + blocks, chunk.last),
        )
        self._queue.appendleft(rest)
        if self.enrich is not None:
            heapq.heappush(self._unenriched, rest.first)
        return piece

    async def _process(self, chunk: BlockRange) -> None:
        """Fetch (holding one of ``load.workers`` slots and the chunk's share of the memory budget),
        enrich in block order, write; the budget is released once the chunk's data is gone."""
        cost = 0
        if self.budget is not None and self.budget.measured:
            cost = self.budget.cost(len(chunk))
            await self.budget.reserve(cost, lambda: self._is_next(chunk))
        try:
            t0 = time.perf_counter()
            extracted = await self._fetch_until_done(chunk)
            if self.enrich is not None:
                batch = await self._enrich_in_order(chunk, extracted)
            else:
                batch = batch_of(BACKFILL_STREAM, extracted)
            del extracted
            t1 = time.perf_counter()
            await write_with_retry(self.sink, batch)
            self._done(batch, t1 - t0, time.perf_counter() - t1)
            del batch
        finally:
            if cost and self.budget is not None:
                await self.budget.release(cost)

    def _is_next(self, chunk: BlockRange) -> bool:
        return self.enrich is not None and bool(self._unenriched) and self._unenriched[0] == chunk.first

    async def _fetch_until_done(self, chunk: BlockRange) -> list[ExtractedBlock]:
        failures = 0
        while True:
            await self._slots.acquire()
            try:
                extracted = await self.fetch(chunk)
            except RetryableError as exc:
                failures += 1
                error: RetryableError | None = exc
            else:
                error = None
            finally:
                await self._slots.release()
            if error is None:
                self._node_is_back()
                return extracted
            await self._wait_out(f"blocks {chunk}", error, failures)

    async def _wait_out(self, what: str, exc: RetryableError, failures: int) -> None:
        """The node failed every try of the client: back off (fewer chunks at once, smaller batches),
        wait, and say so now and then; the caller then tries the same work again."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning("node unavailable: %s (%s); waiting and retrying", exc, what)
        elif now - self._down_logged >= self.log_every:
            self._down_logged = now
            log.warning("node unavailable for %.0fs: %s; still retrying", now - self._down_since, exc)
        if self.load.node_failed(now=now):
            self.rpc.max_batch_size = min(self.rpc.max_batch_size, self.load.batch)
            if self.progress is not None:
                self.progress.set_load(self.load.workers, self.load.batch)
        self.report.node_failures += 1
        await asyncio.sleep(self.node_down.delay(failures, exc.retry_after))

    def _node_is_back(self) -> None:
        if self._down_since is not None:
            log.warning("node available again after %.0fs", time.monotonic() - self._down_since)
            self._down_since = None

    def _done(self, batch: Batch, fetch_seconds: float, write_seconds: float) -> None:
        r = self.report
        r.chunks += 1
        r.blocks += len(batch.blocks)
        r.transactions += len(batch.of(Transaction))
        r.logs += len(batch.of(Log))
        r.token_transfers += len(batch.of(TokenTransfer))
        r.dex_trades += len(batch.of(DexTrade))
        r.fetch_seconds += fetch_seconds
        r.write_seconds += write_seconds
        self.load.chunk_done(retries=self.rpc.stats.retries, client_batch=self.rpc.max_batch_size)
        self.rpc.max_batch_size = self.load.batch
        if self.progress is not None:
            self.progress.set_load(self.load.workers, self.load.batch)
            self.progress.advance(len(batch.blocks), len(batch.of(Transaction)), len(batch.of(Log)))

    async def _enrich_in_order(self, chunk: BlockRange, extracted: list[ExtractedBlock]) -> Batch:
        """Chunks are fetched and written in parallel but enriched one after the other in block
        order, as the follower would: a pool is emitted by the chunk with its creation event (not by
        a later chunk that happened to be fetched first and resolved it on chain), so the result does
        not depend on timing, and a killed run resumed equals an uninterrupted one. A retryable
        failure (a call the node could not answer) is waited out and the chunk enriched again whole,
        still in its turn: nothing is stored from a guess."""
        assert self.enrich is not None
        async with self._enrich_cond:
            await self._enrich_cond.wait_for(lambda: self._is_next(chunk))
        failures = 0
        try:
            while True:
                try:
                    batch = await self.enrich(extracted, batch_of(BACKFILL_STREAM, extracted))
                except RetryableError as exc:
                    failures += 1
                    await self._wait_out(f"enriching blocks {chunk}", exc, failures)
                    continue
                self._node_is_back()
                return batch
        finally:
            async with self._enrich_cond:
                heapq.heappop(self._unenriched)
                self._enrich_cond.notify_all()
            if self.budget is not None:
                await self.budget.poke()

    async def fetch(self, chunk: BlockRange) -> list[ExtractedBlock]:
        """The chunk's blocks with their receipts, extracted, in order, checked to be one chain."""
        out: list[ExtractedBlock] = []
        number = chunk.first
        while number <= chunk.last:
            numbers = list(range(number, min(chunk.last, number + self.rpc.max_batch_size - 1) + 1))
            part = await self._fetch_batch(numbers, out[-1] if out else None)
            out.extend(part)
            number = numbers[-1] + 1
        return out

    async def _fetch_batch(self, numbers: list[int], previous: ExtractedBlock | None) -> list[ExtractedBlock]:
        attempt = 0
        while True:
            attempt += 1
            blocks = await self.rpc.get_blocks(numbers)
            receipts = await self.rpc.get_receipts_for_blocks(blocks)
            self._measure(blocks, receipts)
            try:
                part = [extract_block(b, r, RECORD_MAKERS) for b, r in zip(blocks, receipts, strict=True)]
                _check_chain(part, previous)
                return part
            except InconsistentBlockError as exc:
                if REFETCH.exhausted(attempt):
                    raise
                self.report.refetches += 1
                log.warning("blocks %d–%d: %s; fetching them again", numbers[0], numbers[-1], exc)
                await asyncio.sleep(REFETCH.delay(attempt, None))

    def _measure(self, blocks: list[Any], receipts: list[Any]) -> None:
        """The answers' size in JSON bytes, for the memory budget: the first batches, then one in
        ``MEASURE_EVERY`` (serialising costs about 0.3 ms per MB)."""
        if self.budget is None:
            return
        self._measured_batches += 1
        if self._measured_batches > MEASURE_FIRST and self._measured_batches % MEASURE_EVERY:
            return
        size = len(orjson.dumps(blocks)) + len(orjson.dumps(receipts))
        self.budget.observe(len(blocks), size)


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error that ended a task group: the first that is not a cancellation, dexnode's own first."""
    found = [e for e in _leaves(group) if not isinstance(e, asyncio.CancelledError)]
    ours = [e for e in found if isinstance(e, DexnodeError)]
    return (ours or found or [group])[0]


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def _check_chain(part: Sequence[ExtractedBlock], previous: ExtractedBlock | None) -> None:
    """A node behind a load balancer, or mid-reorg, can answer blocks of two branches in one batch."""
    parent = previous.block if previous is not None else None
    for item in part:
        block = item.block
        if parent is not None and block.parent_hash != parent.hash:
            raise InconsistentBlockError(
                f"block {block.number} {block.hash[:10]} does not follow {parent.number} {parent.hash[:10]}"
            )
        parent = block
