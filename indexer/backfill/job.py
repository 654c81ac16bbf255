"""The backfill job: resolve the confirmed range, skip the chunks done, write the rest in parallel through
the Postgres (and Kafka) sinks, rebuild dropped indexes at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer

from core.database import open_database
from core.errors import ConfigError, FatalError, RetryableError
from core.retry import RetryPolicy
from core.settings import Settings
from indexer.backfill.load import (
    NODE_DOWN,
    NODE_DOWN_LOG_EVERY,
    AdaptiveLoad,
    MemoryBudget,
    RateLimitedTransport,
)
from indexer.backfill.plan import BlockRange, plan
from indexer.backfill.progress import make_progress
from indexer.backfill.run import Backfill, BackfillReport, resolve_target
from indexer.backfill.store import (
    BackfillSink,
    done_ranges,
    drop_secondary_indexes,
    missing_indexes,
    rebuild_indexes,
)
from indexer.chain.rpc import RpcClient
from indexer.pipeline.dex import DexEnricher, registry_for
from indexer.pipeline.pipeline import Enricher
from migrations import runner
from sinks.base import Sink

log = logging.getLogger("dexnode.backfill")
T = TypeVar("T")

EnricherFactory = Callable[[RpcClient, asyncpg.Pool], Enricher]


async def backfill(
    settings: Settings,
    *,
    from_block: int,
    to: str = "confirmed",
    workers: int = 8,
    batch_blocks: int = 50,
    max_rps: float | None = None,
    defer_indexes: bool | None = False,
    dex: bool = True,
    make_enricher: EnricherFactory | None = None,
    progress_tty: bool | None = None,
    allow_unconfirmed: bool = False,
    memory_mb: int = 256,
) -> BackfillReport:
    """Resolve the confirmed range, skip what is done, write the rest; rebuild dropped indexes at the end.

    ``make_enricher(rpc, pool)`` builds the protocol step; by default (``dex``) the DEX enricher
    over the venues in the settings. ``confirmations`` 0 is refused unless ``allow_unconfirmed``.
    ``defer_indexes``: drop the secondary indexes for the run and build them at its end; None: do so
    when the database holds no block yet (``dexnode backfill``'s default: nothing there to query
    meanwhile, and building each index once over all rows costs the server less than maintaining it
    row by row). ``dexnode run`` keeps them (False): its API serves during the backfill.
    """

    if to.isdigit() and int(to) < from_block:
        raise ConfigError(f"--to {to} is below --from {from_block}")
    check_confirmations(settings, to, allow_unconfirmed)
    if make_enricher is None and dex:
        make_enricher = dex_enricher(settings)
    async with open_database(settings) as db:
        await runner.upgrade(db.sqlalchemy_url)
        sink = await BackfillSink.connect(db.dsn, max_size=workers + 2)
        # Kafka (when configured) sees each chunk before Postgres commits it; confirmed blocks cannot be
        # orphaned, so no in-flight journal is needed
        writer: Sink = sink
        if settings.kafka_bootstrap_servers:
            # imported only when used: confluent-kafka and the Kafka sinks are ~5% of the command's
            # start-up CPU (python -X importtime), paid by every backfill without Kafka otherwise
            from sinks.kafka import with_kafka

            writer = with_kafka(settings, sink, journal=False)
        try:
            limit = settings.rpc_max_response_bytes
            transport = RateLimitedTransport(max_rps, connections=workers * 2, max_response_bytes=limit)
            async with RpcClient(
                settings.rpc_http,
                max_batch_size=settings.rpc_batch_size,
                transport=transport,
                max_response_bytes=limit,
            ) as rpc:
                enrich = make_enricher(rpc, sink.pool) if make_enricher is not None else None
                job = _Job(settings, rpc, sink, workers, batch_blocks, defer_indexes, progress_tty, enrich)
                job.writer, job.memory_mb = writer, memory_mb
                return await job.run(from_block, to)
        finally:
            await writer.close()  # the composite closes the Postgres sink too


class _Job:
    def __init__(
        self,
        settings: Settings,
        rpc: RpcClient,
        sink: BackfillSink,
        workers: int,
        batch_blocks: int,
        defer_indexes: bool | None,
        progress_tty: bool | None,
        enrich: Enricher | None,
    ) -> None:
        self.settings, self.rpc, self.sink = settings, rpc, sink
        self.workers, self.batch_blocks, self.defer_indexes = workers, batch_blocks, defer_indexes
        self.progress_tty, self.enrich = progress_tty, enrich
        self.writer: Sink = sink
        self.memory_mb = 256

    async def run(self, from_block: int, to: str) -> BackfillReport:

        target = await patiently(lambda: resolve_target(self.rpc, to, self.settings.confirmations))
        await patiently(lambda: check_same_chain(self.rpc, self.sink.pool, target.head))
        if target.note:
            log.warning(target.note)
            typer.echo(f"note: {target.note}", err=True)
        if target.last < from_block:
            typer.echo(
                f"nothing to backfill: the last confirmed block is {target.last} (head {target.head}),"
                f" below --from {from_block}"
            )
            return BackfillReport()
        wanted = BlockRange(from_block, target.last)
        chunks = plan(wanted, await done_ranges(self.sink.pool), self.batch_blocks)
        todo = sum(len(c) for c in chunks)
        log.info(
            "backfill %s (head %d): %d blocks to write in %d chunks, %d already done",
            wanted, target.head, todo, len(chunks), len(wanted) - todo,
        )  # fmt: skip
        report = await self._write(chunks, todo) if chunks else BackfillReport()
        report.index_rebuild_seconds = await rebuild_indexes(self.sink.pool)  # also after a killed run
        typer.echo(report.line() if chunks else f"nothing to backfill: {wanted} is done")
        return report

    async def _write(self, chunks: list[BlockRange], todo: int) -> BackfillReport:

        defer = self.defer_indexes
        if defer is None:
            defer = not await self.sink.pool.fetchval("SELECT EXISTS (SELECT 1 FROM blocks)")
            if defer:
                typer.echo(
                    "note: a fresh database: secondary indexes are built at the end of the run"
                    " (--keep-indexes maintains them meanwhile; a killed run's next backfill builds them)",
                    err=True,
                )
        if defer:
            await drop_secondary_indexes(self.sink.pool)
        load = AdaptiveLoad(max_workers=self.workers, max_batch=self.settings.rpc_batch_size)
        progress = make_progress(todo, tty=self.progress_tty)
        try:
            budget = MemoryBudget(self.memory_mb * 2**20)
            job = Backfill(
                self.rpc, self.writer, load=load, enrich=self.enrich, progress=progress, budget=budget
            )
            return await job.run(chunks)
        except BaseException:
            with contextlib.suppress(Exception):
                if await missing_indexes(self.sink.pool):
                    log.warning(
                        "secondary indexes are still dropped; the next `dexnode backfill` rebuilds them"
                    )
            raise
        finally:
            progress.close()


async def patiently(
    call: Callable[[], Awaitable[T]],
    node_down: RetryPolicy = NODE_DOWN,
    log_every: float = NODE_DOWN_LOG_EVERY,
) -> T:
    """``call()`` until it does not fail with a retryable error (the node down at the start): waited
    out like a chunk, with a log line now and then; fatal errors are raised."""

    failures, since, logged = 0, time.monotonic(), 0.0
    while True:
        try:
            return await call()
        except RetryableError as exc:
            failures += 1
            now = time.monotonic()
            if failures == 1 or now - logged >= log_every:
                logged = now
                log.warning("node unavailable for %.0fs: %s; still retrying", now - since, exc)
            await asyncio.sleep(node_down.delay(failures, exc.retry_after))


def check_confirmations(settings: Settings, to: str, allow_unconfirmed: bool) -> None:
    """A backfill promises never to store a block that a reorg can replace: 0 confirmations breaks
    that, so it must be asked for explicitly, and never with Kafka (confirmed.* is never reverted)."""

    if settings.confirmations > 0 or to == "finalized":
        return
    if not allow_unconfirmed:
        raise ConfigError(
            "--confirmations 0 would write blocks at the head, which a reorg can still replace: give at"
            " least 1, or --to finalized, or --allow-unconfirmed (devnets and tests)"
        )
    if settings.kafka_bootstrap_servers:
        raise ConfigError(
            "--allow-unconfirmed cannot be used with Kafka: confirmed.* topics are never reverted"
        )
    log.warning(
        "--allow-unconfirmed: blocks up to the head are written; a reorg can leave orphaned blocks"
        " that only `dexnode follow` replaces"
    )


async def check_same_chain(rpc: RpcClient, pool: asyncpg.Pool, head: int) -> None:
    """Refuse to add another chain's blocks to this database (wrong URL, wrong network): the
    newest backfilled block, confirmed when it was written, must be the node's block at its height."""

    row = await pool.fetchrow(
        "SELECT last_block, last_hash FROM backfill_chunks ORDER BY last_block DESC LIMIT 1"
    )
    if row is None:
        return
    number, stored = int(row["last_block"]), str(row["last_hash"])
    if number > head:
        raise FatalError(
            f"the node's head is block {head}, below the backfilled block {number}:"
            " is DEXNODE_RPC_HTTP the chain this database indexed (or is the node still syncing)?"
        )
    block = await rpc.get_block_by_number(number, full_txs=False)
    if str(block["hash"]).lower() != stored:
        raise FatalError(
            f"the node's block {number} is {str(block['hash'])[:12]}, the database has {stored[:12]}:"
            " is DEXNODE_RPC_HTTP the chain this database indexed?"
        )


def dex_enricher(settings: Settings) -> EnricherFactory:

    registry = registry_for(settings)
    return lambda rpc, pool: DexEnricher(rpc, pool, registry)
