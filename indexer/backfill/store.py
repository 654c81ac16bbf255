"""The backfill's side of Postgres: the chunk checkpoint, what is done, status, deferred indexes.

Each chunk is written by ``BackfillSink`` in one transaction with its ``backfill_chunks`` row, so a
row exists exactly when every block of its range (and everything derived from them) is stored. The
done ranges are the union of those rows; a restarted backfill writes only what they do not cover,
and the follower started on a backfilled database resumes after the end of the contiguous range
that starts at the lowest backfilled block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from indexer.backfill.plan import BlockRange, gaps, missing
from records import Log, Transaction
from records.batch import Batch
from sinks import schema
from sinks.postgres import PostgresSink

log = logging.getLogger("dexnode.backfill")

# Done ranges straight from the chunk rows (islands: a chunk starts a new range unless it begins at
# or before the previous chunks' end + 1), so even millions of chunks cost one index scan.
_DONE_RANGES_SQL = """
SELECT min(first_block) AS first, max(last_block) AS last FROM (
    SELECT first_block, last_block, sum(starts) OVER (ORDER BY first_block) AS island FROM (
        SELECT first_block, last_block,
               CASE WHEN first_block <= max(last_block) OVER (
                        ORDER BY first_block ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1
                    THEN 0 ELSE 1 END AS starts
        FROM backfill_chunks
    ) marked
) grouped GROUP BY island ORDER BY 1
"""

Executor: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


class BackfillSink(PostgresSink):
    """``PostgresSink`` whose batch transaction records the completed chunk instead of a cursor.

    A chunk none of whose blocks is stored (the usual case) is COPied straight into the tables
    (``PostgresSink.write``); if another writer (the follower, a second backfill) stores some of
    them meanwhile, it is written again the idempotent way, and a deadlock with such a writer is
    retried. Commits do not wait for the WAL flush (``synchronous_commit = off``): a server crash can
    lose the last chunks, but always with their checkpoint rows, so a rerun writes them again.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.run_started_at = datetime.now(UTC)

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 4) -> BackfillSink:
        sink = await super().connect(dsn, max_size=max_size)
        assert isinstance(sink, BackfillSink)
        return sink

    async def write(
        self, batch: Batch, *, before_commit: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        for attempt in range(1, 6):
            try:
                await super().write(batch, before_commit=before_commit)
                return
            except asyncpg.TransactionRollbackError as exc:  # a deadlock with a concurrent writer
                if attempt == 5 or not batch.blocks:
                    raise
                log.info("chunk at block %d rolled back (%s): writing it again", batch.blocks[0].number, exc)

    async def _insert_rows(self, conn: asyncpg.Connection, batch: Batch, *, direct: bool = False) -> None:
        if not direct and batch.blocks:  # some of the chunk's heights are stored: by whom, which blocks?
            await replace_orphans(conn, batch)
        await super()._insert_rows(conn, batch, direct=direct)

    async def _checkpoint(self, conn: asyncpg.Connection, batch: Batch) -> None:
        """The chunk's row. Another run (other ``--to``, other ``--batch-blocks``, or one running at
        the same time) may have recorded a chunk with the same first block: the longer of the two is
        kept, with its own counts, so the done ranges are exactly what is stored."""
        if not batch.blocks:
            return
        first, tip = batch.blocks[0], batch.blocks[-1]
        await conn.execute(
            "INSERT INTO backfill_chunks (first_block, last_block, last_hash, transaction_count, log_count,"
            " run_started_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (first_block) DO UPDATE SET"
            " last_block = excluded.last_block, last_hash = excluded.last_hash,"
            " transaction_count = excluded.transaction_count, log_count = excluded.log_count,"
            " run_started_at = excluded.run_started_at, completed_at = now()"
            " WHERE excluded.last_block > backfill_chunks.last_block",
            first.number,
            tip.number,
            tip.hash,
            len(batch.of(Transaction)),
            len(batch.of(Log)),
            self.run_started_at,
        )


# Rows of a block-keyed table at heights [$1, $2] whose block is not one of $3 (the confirmed hashes).
def _block_columns(table: sa.Table) -> tuple[str, str]:
    return ("number", "hash") if table is schema.blocks else ("block_number", "block_hash")


_STALE_SQL = tuple(
    f'DELETE FROM "{t.name}" WHERE "{num}" BETWEEN $1 AND $2 AND "{col}" <> ALL($3::text[])'
    for t, (num, col) in (
        *((t, _block_columns(t)) for t in schema.BLOCK_TABLES),
        (schema.pools, ("created_block_number", "created_block_hash")),
    )
)


async def replace_orphans(conn: asyncpg.Connection, batch: Batch) -> int:
    """Delete, in the chunk's transaction, every row stored at the chunk's heights for a block that
    is not the chunk's (a block the follower stored before a reorg orphaned it): the confirmed chain
    wins, and ``blocks.number`` stays unique. → blocks replaced."""
    first, last = batch.blocks[0].number, batch.blocks[-1].number
    hashes = [b.hash for b in batch.blocks]
    stale = await conn.fetch(
        "SELECT number, hash FROM blocks WHERE number BETWEEN $1 AND $2 AND hash <> ALL($3::text[])",
        first,
        last,
        hashes,
    )
    if not stale:
        return 0
    for sql in _STALE_SQL:
        await conn.execute(sql, first, last, hashes)
    log.warning(
        "replaced %d orphaned block(s) stored at %s with the confirmed chain's",
        len(stale),
        ", ".join(f"{r['number']} {r['hash'][:10]}" for r in stale),
    )
    return len(stale)


async def done_ranges(db: Executor) -> list[BlockRange]:
    """Merged ranges of completed chunks, ascending."""
    return [BlockRange(r["first"], r["last"]) for r in await db.fetch(_DONE_RANGES_SQL)]


async def contiguous_end(db: Executor) -> int | None:
    """The last block of the contiguous backfilled range starting at the lowest backfilled block."""
    done = await done_ranges(db)
    return done[0].last if done else None


@dataclass(frozen=True)
class LastRun:
    started_at: datetime
    finished_at: datetime
    blocks: int
    transactions: int
    logs: int

    @property
    def seconds(self) -> float:
        return max((self.finished_at - self.started_at).total_seconds(), 1e-6)


@dataclass(frozen=True)
class BackfillStatus:
    done: list[BlockRange]
    gaps: list[BlockRange]  # holes between done ranges, and inside the asked range when one is given
    blocks: int
    transactions: int
    logs: int
    chunks: int
    last_run: LastRun | None
    missing_indexes: list[str] = field(default_factory=list)

    @property
    def follower_resumes_after(self) -> int | None:
        return self.done[0].last if self.done else None

    def lines(self) -> list[str]:
        if not self.done:
            out = ["backfill: nothing done yet"]
        else:
            out = [
                f"done: {', '.join(map(str, self.done))} ({self.blocks:,} blocks, {self.transactions:,} txs,"
                f" {self.logs:,} logs in {self.chunks:,} chunks)",
                f"gaps: {', '.join(map(str, self.gaps)) if self.gaps else 'none'}"
                + (f" ({sum(len(g) for g in self.gaps):,} blocks)" if self.gaps else ""),
                f"contiguous: {self.done[0]} (the follower continues at block {self.done[0].last + 1})",
            ]
        run = self.last_run
        if run is not None:
            s = run.seconds
            out.append(
                f"last run: started {run.started_at:%Y-%m-%d %H:%M:%S} UTC, {run.blocks:,} blocks in {s:.1f}s"
                f" = {run.blocks / s:,.1f} blocks/s, {run.transactions / s:,.0f} txs/s,"
                f" {run.logs / s:,.0f} logs/s"
            )
        if self.missing_indexes:
            out.append(
                f"secondary indexes dropped (--defer-indexes): {len(self.missing_indexes)};"
                " the next backfill run rebuilds them"
            )
        return out


async def status(db: Executor, wanted: BlockRange | None = None) -> BackfillStatus:
    done = await done_ranges(db)
    totals = await db.fetchrow(
        "SELECT coalesce(sum(last_block - first_block + 1), 0) AS blocks,"
        " coalesce(sum(transaction_count), 0) AS txs, coalesce(sum(log_count), 0) AS logs,"
        " count(*) AS chunks FROM backfill_chunks"
    )
    assert totals is not None
    run = await db.fetchrow(
        "SELECT run_started_at, max(completed_at) AS finished,"
        " sum(last_block - first_block + 1) AS blocks, sum(transaction_count) AS txs, sum(log_count) AS logs"
        " FROM backfill_chunks GROUP BY run_started_at ORDER BY run_started_at DESC LIMIT 1"
    )
    last_run = (
        LastRun(run["run_started_at"], run["finished"], int(run["blocks"]), int(run["txs"]), int(run["logs"]))
        if run is not None
        else None
    )
    holes = missing(wanted, done) if wanted is not None else gaps(done)
    return BackfillStatus(
        done=done,
        gaps=holes,
        blocks=sum(len(r) for r in done),  # chunks of two runs may overlap: count each block once
        transactions=int(totals["txs"]),
        logs=int(totals["logs"]),
        chunks=int(totals["chunks"]),
        last_run=last_run,
        missing_indexes=await missing_indexes(db),
    )


# -- deferred secondary indexes ---------------------------------------------------------------------

# Not dropped: primary keys (ON CONFLICT needs them) and unique indexes (blocks.number keeps one
# canonical chain). The rest only serve reads and cost most of the write time on a large backfill.
DEFERRABLE_TABLES: tuple[sa.Table, ...] = schema.BLOCK_TABLES


def secondary_indexes() -> list[sa.Index]:
    return [
        ix for t in DEFERRABLE_TABLES for ix in sorted(t.indexes, key=lambda i: str(i.name)) if not ix.unique
    ]


async def missing_indexes(db: Executor) -> list[str]:
    present = {
        r["indexname"]
        for r in await db.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    }
    return [str(ix.name) for ix in secondary_indexes() if ix.name not in present]


async def drop_secondary_indexes(db: Executor) -> list[str]:
    names = [str(ix.name) for ix in secondary_indexes()]
    for name in names:
        await db.execute(f'DROP INDEX IF EXISTS "{name}"')  # names come from our schema, not input
    log.info("dropped %d secondary indexes for the backfill; rebuilt at the end", len(names))
    return names


async def rebuild_indexes(pool: asyncpg.Pool, *, parallel: int = 2) -> float:
    """Create every missing secondary index, ``parallel`` at a time; → seconds taken."""
    names = set(await missing_indexes(pool))
    if not names:
        return 0.0
    todo = [ix for ix in secondary_indexes() if ix.name in names]
    t0 = time.perf_counter()
    log.info("rebuilding %d secondary indexes", len(todo))
    queue: asyncio.Queue[sa.Index] = asyncio.Queue()
    for ix in todo:
        queue.put_nowait(ix)

    async def builder() -> None:
        async with pool.acquire() as conn:
            await conn.execute("SET maintenance_work_mem = '256MB'")
            while not queue.empty():
                ix = queue.get_nowait()
                ddl = str(CreateIndex(ix, if_not_exists=True).compile(dialect=postgresql.dialect()))
                await conn.execute(ddl)
            await conn.execute("RESET maintenance_work_mem")

    await asyncio.gather(*(builder() for _ in range(max(1, min(parallel, len(todo))))))
    seconds = time.perf_counter() - t0
    log.info("rebuilt %d secondary indexes in %.1fs", len(todo), seconds)
    return seconds
