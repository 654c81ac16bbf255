"""Follower events → batches → sinks, with the one-line-per-block log.

I/O lives here and in the follower; extraction and decoding stay pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import asyncpg

from core.errors import FatalError, RetryableError
from core.retry import RetryPolicy
from indexer.chain.extract import ExtractedBlock, Makers
from indexer.pipeline.events import ChainEvent, EventSource, Finalized, FollowerEvent, NewBlock, Reorg
from protocols.trades import c_receipt_logs, slot_maker
from records import DexLiquidity, DexTrade, Log, TokenTransfer, Transaction
from records import Reorg as ReorgRecord
from records.batch import Batch
from sinks.base import Sink
from sinks.postgres import BlockRef

log = logging.getLogger("dexnode.pipeline")

FOLLOW_STREAM = "follow"

# Extraction's records made by protocols/_speedups.c's slot maker (the Python twin without it): equal
# records, their slots filled in one call and, holding no container, left out of the cycle collector's
# tracking. Extracting the 2,011-block devnet with 16 chunks held: 0.63 -> 0.43 CPU-s. A receipt's logs
# checked and made in C too where it is the common case (``receipt_logs``; the Python check decides
# the rest): 0.65 -> 0.47 CPU-s, token transfers' 0.19 included (load ~4).
# ERC-20 token transfers the same way (``decode_transfers``): 158-163 -> 63 ms for the devnet's 43,352
# (load ~3); the extraction of the devnet 0.361 -> 0.246 CPU-s.
RECORD_MAKERS = Makers(
    log=slot_maker(Log),
    transaction=slot_maker(Transaction),
    transfer=slot_maker(TokenTransfer),
    receipt_logs=c_receipt_logs,
)


class Enricher(Protocol):
    """A step that adds protocol records (DEX trades, pools, tokens) to a batch; may do RPC I/O."""

    async def __call__(self, blocks: Sequence[ExtractedBlock], batch: Batch) -> Batch: ...


def batch_of(stream: str, blocks: Sequence[ExtractedBlock], reorg: ReorgRecord | None = None) -> Batch:
    return Batch(
        stream,
        [b.block for b in blocks],
        {
            Transaction: [t for b in blocks for t in b.transactions],
            Log: [lg for b in blocks for lg in b.logs],
            TokenTransfer: [t for b in blocks for t in b.token_transfers],
        },
        reorg=reorg,
        skipped={"token_transfers": sum(b.skipped_transfers for b in blocks)},
    )


def batch_of_event(stream: str, event: ChainEvent) -> Batch:
    if isinstance(event, NewBlock):
        return batch_of(stream, [event.extracted])
    record = ReorgRecord(
        common_ancestor_number=event.ancestor.number,
        common_ancestor_hash=event.ancestor.hash,
        depth=event.depth,
        orphaned_hashes=tuple(r.hash for r in event.orphaned),
        new_hashes=tuple(n.extracted.block.hash for n in event.new),
        detected_at=time.time_ns() // 1000,
    )
    return batch_of(stream, [n.extracted for n in event.new], record)


@dataclass
class Timing:
    """Per-block latency split: waiting on the node vs. our processing + commit (ms)."""

    node_ms: list[float] = field(default_factory=list)
    process_commit_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    extract_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    enrich_ms: list[float] = field(default_factory=list)  # batching + DEX decoding


@runtime_checkable
class Finalizing(Protocol):
    """A sink that publishes final blocks (``confirmed.*``) when the follower says they are."""

    async def finalize(self, block: BlockRef) -> None: ...


WRITE_RETRY = RetryPolicy(attempts=0, base_delay=0.4, max_delay=30.0)  # wait the database out, for ever


# a lost database or broker connection: waited out, never a dropped batch
TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    TimeoutError,
    RetryableError,  # e.g. Kafka deliveries that failed: the whole batch is produced again
)


async def write_with_retry(sink: Sink, batch: Batch, *, retry: RetryPolicy = WRITE_RETRY) -> None:
    """Write until it succeeds: a lost database or broker connection is waited out, never a dropped batch.

    ``retry`` bounds the attempts (default: unbounded); data errors (constraint violations) are fatal.
    """
    try:
        await _until_done(lambda: sink.write(batch), f"writing block {batch.first_number}", retry)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise FatalError(f"database refused batch at block {batch.first_number}: {exc}") from None


async def finalize_with_retry(sink: Finalizing, block: BlockRef, *, retry: RetryPolicy = WRITE_RETRY) -> None:
    """``sink.finalize`` until it succeeds (its cursor is in Postgres: a lost connection is waited out;
    the records stay in the publisher's memory meanwhile)."""
    await _until_done(lambda: sink.finalize(block), f"publishing final block {block.number}", retry)


async def _until_done(action: Callable[[], Awaitable[None]], what: str, retry: RetryPolicy) -> None:
    """``action()`` again after each transient failure, backing off by ``retry``; other errors propagate."""
    failures = 0
    while True:
        try:
            await action()
            return
        except TRANSIENT as exc:
            failures += 1
            if retry.exhausted(failures):
                raise FatalError(f"database unavailable after {failures} attempts: {exc}") from None
            delay = retry.delay(failures, None)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)


def describe(event: ChainEvent, batch: Batch, ms: float) -> str:
    blocks = [event.extracted] if isinstance(event, NewBlock) else [n.extracted for n in event.new]
    parts = []
    if isinstance(event, Reorg):
        parts.append(f"REORG depth {event.depth} above {event.ancestor.number};")
    for b in blocks:
        parts.append(
            f"block {b.block.number} {b.block.hash[:10]} txs={len(b.transactions)} logs={len(b.logs)}"
            f" transfers={len(b.token_transfers)}"
        )
    trades, liquidity = batch.of(DexTrade), batch.of(DexLiquidity)
    if trades or liquidity:
        parts.append(f"trades={len(trades)} liquidity={len(liquidity)}")
    skipped = {k: v for k, v in batch.skipped.items() if v}
    if skipped:  # bad input is counted and logged, never silently dropped
        parts.append("skipped " + ",".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    return " ".join(parts) + f" {ms:.1f}ms"


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Indexing allocates millions of short-lived records: with the default thresholds the
    cyclic garbage collector runs every 700 allocations and keeps rescanning everything alive
    (measured: 15–40% of the extraction's CPU time, growing with the live heap). Collect less often
    and never rescan what was alive before the run (imports, settings)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


async def consume(
    follower: EventSource,
    sink: Sink,
    *,
    stream: str = FOLLOW_STREAM,
    quiet: bool = False,
    timing: Timing | None = None,
    on_event: Callable[[FollowerEvent], None] | None = None,
    enrich: Enricher | None = None,
) -> None:
    """Drain the follower's events into the sink, one transaction per event; a ``Finalized`` event
    goes to the sink's ``finalize`` (``confirmed.*``), if it has one."""
    with fewer_collections():
        await _consume(follower, sink, stream, quiet, timing, on_event, enrich)


async def _consume(
    follower: EventSource,
    sink: Sink,
    stream: str,
    quiet: bool,
    timing: Timing | None,
    on_event: Callable[[FollowerEvent], None] | None,
    enrich: Enricher | None,
) -> None:
    finalizing = sink if isinstance(sink, Finalizing) else None
    async for event in follower.events():
        if isinstance(event, Finalized):
            if finalizing is not None:
                await finalize_with_retry(finalizing, event.block)
            if on_event is not None:
                on_event(event)
            continue
        t0 = time.perf_counter()
        batch = batch_of_event(stream, event)
        if enrich is not None:
            blocks = [event.extracted] if isinstance(event, NewBlock) else [n.extracted for n in event.new]
            batch = await enrich(blocks, batch)
        t1 = time.perf_counter()
        await write_with_retry(sink, batch)
        done = time.perf_counter()
        ms = (done - t0) * 1000
        if timing is not None:
            new = [event] if isinstance(event, NewBlock) else list(event.new)
            for nb in new:
                total = (done - nb.head_seen_at) * 1000
                timing.node_ms.append(nb.fetch_ms)
                timing.process_commit_ms.append(total - nb.fetch_ms)
                timing.total_ms.append(total)
                timing.extract_ms.append(nb.extract_ms)
                timing.write_ms.append((done - t1) * 1000 / len(new))
                timing.enrich_ms.append((t1 - t0) * 1000 / len(new))
        if not quiet:
            log.info(describe(event, batch, ms))
        if on_event is not None:
            on_event(event)
