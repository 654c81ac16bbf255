"""The Postgres writer: one transaction per batch, COPY into staging, idempotent insert, cursor, rollback.

Per batch, in one transaction:
1. if the batch carries a reorg: delete every row above the common ancestor from every revertible
   kind's table (``records.kinds``: block-keyed tables, and pools created in those blocks), and the
   pools and tokens learned by ``eth_call`` that only the orphaned branch needs, record
   the reorg in ``reorgs`` — unless it is already applied (``reorg_is_applied``: the same batch
   written again after its commit), so a replayed reorg batch changes nothing;
2. per table with rows: COPY (text format for tables with NUMERIC columns, ``sinks.copy_text``;
   binary for the others) into a temporary staging table (created once per connection), then one
   statement that moves the rows out of staging (``DELETE ... RETURNING``) and inserts them
   ``ON CONFLICT (natural key) DO NOTHING``, so a replayed batch writes nothing twice — or, when
   none of the batch's blocks is stored, COPY straight into the tables;
3. move the stream's cursor to the batch's last block;
4. ``pg_notify('dexnode_blocks', ...)`` (``notify_payload``), delivered to listeners at COMMIT.
A crash at any point leaves either the whole batch or none of it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from core.database import asyncpg_dsn
from records import Record, kinds, to_dict
from records.batch import Batch
from records.kinds import Kind
from sinks import copy_text, schema
from sinks.copy_text import record_encoder

log = logging.getLogger("dexnode.sink.postgres")


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str
    parent_hash: str


def _nested_json(name: str) -> Callable[[Any], str | None]:
    """A JSONB column holding a tuple of nested records (a block's withdrawals, a transaction's
    authorizations): their JSON form, without ``type``/``version``."""
    get = attrgetter(name)

    def encode(record: Any) -> str | None:
        value = get(record)
        if value is None:
            return None
        return orjson.dumps([to_dict(v)["data"] for v in value]).decode()

    return encode


@dataclass(frozen=True)
class _TableWriter:
    table: sa.Table
    columns: tuple[str, ...]
    to_row: Callable[[Any], tuple[Any, ...]]
    # records → COPY text data (sinks.copy_text), for tables with NUMERIC columns; None: binary COPY
    encode: Callable[[Sequence[Any]], bytes] | None
    stage: str
    insert_sql: str
    record: type[Record]
    # rows belong to exactly one block, so a batch whose blocks are not stored has none stored either
    # (tokens, and pools that need not have a creation block, are shared across blocks)
    direct: bool


def _writer(kind: Kind[Any]) -> _TableWriter:
    table = schema.metadata.tables[kind.table]
    columns = tuple(
        c.name for c in table.columns if c.server_default is None and not isinstance(c.default, sa.Identity)
    )
    overrides = {c: _nested_json(c) for c in columns if isinstance(table.c[c].type, JSONB)}
    getter = attrgetter(*columns)
    if overrides:
        # one C-level attrgetter for every column, then the few converted ones patched in
        patches = tuple((columns.index(c), f) for c, f in overrides.items())

        def to_row(record: Any) -> tuple[Any, ...]:
            row = list(getter(record))
            for i, f in patches:
                row[i] = f(record)
            return tuple(row)
    else:

        def to_row(record: Any) -> tuple[Any, ...]:
            return getter(record)

    keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
    cols = ", ".join(f'"{c}"' for c in columns)
    stage = f"_stage_{table.name}"
    insert_sql = (
        f"WITH staged AS (DELETE FROM {stage} RETURNING {cols}) "
        f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM staged ON CONFLICT ({keys}) DO NOTHING'
    )
    direct = kind.block is not None and not table.c[kind.block].nullable
    # Text COPY where binary pays asyncpg's NUMERIC encoding (~2 µs a value), and everywhere its columns
    # allow when the C encoder is built (the devnet's 85,929 logs: binary 0.19-0.23 client CPU-s, C text
    # 0.11-0.13, the server's the same within noise); binary for the rest (logs in Python text: 0.43)
    numeric = any(isinstance(table.c[c].type, sa.Numeric) for c in columns)
    encode = None
    if numeric or copy_text.C_ENCODER:
        try:
            encode = record_encoder(table, columns, overrides, record=kind.record)
        except TypeError:  # a column type the text encoder does not print (binary COPY handles it)
            if numeric:
                raise
    return _TableWriter(table, columns, to_row, encode, stage, insert_sql, kind.record, direct)


STAGING_TRUNCATE_ROWS = 100_000
COPY_SLICE_ROWS = 1_000


async def _text_slices(encode: Callable[[Sequence[Any]], bytes], rows: Sequence[Any]) -> AsyncIterator[bytes]:
    """A table's COPY text data a slice of rows at a time: encoded whole, a budget-sized chunk of
    mainnet transactions would be held twice more as text (+25 MB peak RSS measured at --workers 1)."""
    for start in range(0, len(rows), COPY_SLICE_ROWS):
        yield encode(rows[start : start + COPY_SLICE_ROWS])


# one per kind a batch carries, in the registry's order
_WRITERS: tuple[_TableWriter, ...] = tuple(_writer(k) for k in kinds.BATCH_KINDS)

# a reorg deletes every revertible kind's rows above the common ancestor
_DELETES = tuple(f'DELETE FROM "{k.table}" WHERE "{k.block}" > $1' for k in kinds.CHAIN if k.revertible)

# Pools and tokens have no block of their own when the DEX enricher learned them by ``eth_call`` (a
# pool nobody saw created, a token's metadata): a reorg deletes those that only the orphaned branch
# needs, in its own transaction, so that the new branch classifies and reads them afresh (a contract
# at an address made by CREATE can differ between branches) and a crash never leaves one without the
# other. The enricher asks the same question before it enriches the reorg's new branch
# (``orphaned_pools_and_tokens``), so it treats exactly these rows as gone.
_POOL_REFERRERS = tuple(
    (k.table, k.block, name)
    for k in kinds.BATCH_KINDS
    if k.block is not None
    for name, target in k.refers.items()
    if target == kinds.POOLS.name
)
# pools without a creation block that rows above the ancestor name and no row at or below it does
_ORPHANED_POOLS_SQL = (
    "SELECT p.address FROM pools p WHERE p.created_block_number IS NULL AND p.address IN ("
    + " UNION ".join(f'SELECT "{c}" FROM "{t}" WHERE "{b}" > $1' for t, b, c in _POOL_REFERRERS)
    + ") AND "
    + " AND ".join(
        f'NOT EXISTS (SELECT 1 FROM "{t}" r WHERE r."{c}" = p.address AND r."{b}" <= $1)'
        for t, b, c in _POOL_REFERRERS
    )
    + " ORDER BY p.address"
)
# tokens named by pools the reorg deletes (created above the ancestor, or $2) and by no pool that stays
_ORPHANED_TOKENS_SQL = (
    "WITH gone AS (SELECT token0, token1, tokens FROM pools"
    " WHERE created_block_number > $1 OR address = ANY($2::text[])),"
    " named AS (SELECT token0 AS address FROM gone UNION SELECT token1 FROM gone"
    " UNION SELECT unnest(tokens) FROM gone)"
    " SELECT t.address FROM tokens t JOIN named n ON n.address = t.address WHERE NOT EXISTS ("
    "SELECT 1 FROM pools p WHERE (p.token0 = t.address OR p.token1 = t.address OR t.address = ANY(p.tokens))"
    " AND NOT (p.address = ANY($2::text[]))"
    " AND (p.created_block_number IS NULL OR p.created_block_number <= $1)) ORDER BY t.address"
)


async def orphaned_pools_and_tokens(
    db: asyncpg.Connection | asyncpg.Pool, ancestor: int
) -> tuple[list[str], list[str]]:
    """The addresses of the pools and tokens without a block of their own that a reorg above
    ``ancestor`` deletes (see ``_ORPHANED_POOLS_SQL``): what only the orphaned branch needs."""
    pools = [r["address"] for r in await db.fetch(_ORPHANED_POOLS_SQL, ancestor)]
    tokens = [r["address"] for r in await db.fetch(_ORPHANED_TOKENS_SQL, ancestor, pools)]
    return pools, tokens


# nothing above the ancestor but the new branch is stored, and the last recorded reorg is this one
_REORG_APPLIED_SQL = (
    "SELECT NOT EXISTS (SELECT 1 FROM blocks WHERE number > $1 AND hash <> ALL($2::text[]))"
    " AND EXISTS (SELECT 1 FROM (SELECT * FROM reorgs ORDER BY id DESC LIMIT 1) r"
    " WHERE r.common_ancestor_hash = $3 AND r.orphaned_hashes = $4::text[] AND r.new_hashes = $5::text[])"
)


async def reorg_is_applied(db: asyncpg.Connection | asyncpg.Pool, batch: Batch) -> bool:
    """The batch's reorg is already in Postgres: the batch is written again after its commit (the
    COMMIT's acknowledgement was lost, or a sink after Postgres failed), so the retry must neither
    delete the new branch nor record the reorg twice. (A reorg back to a branch seen before is not
    a replay: the branch it orphans is stored again.)"""
    reorg = batch.reorg
    assert reorg is not None
    return bool(
        await db.fetchval(
            _REORG_APPLIED_SQL,
            reorg.common_ancestor_number,
            [b.hash for b in batch.blocks],
            reorg.common_ancestor_hash,
            list(reorg.orphaned_hashes),
            list(reorg.new_hashes),
        )
    )


async def _create_staging(conn: asyncpg.Connection) -> None:
    for w in _WRITERS:
        cols = ", ".join(f'"{c}"' for c in w.columns)
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {w.stage} ON COMMIT PRESERVE ROWS AS "
            f'SELECT {cols} FROM "{w.table.name}" WITH NO DATA'
        )


NOTIFY_CHANNEL = "dexnode_blocks"
_NOTIFY_MAX_BYTES = 7900  # Postgres refuses a NOTIFY payload of 8000 bytes or more


def notify_payload(batch: Batch) -> str | None:
    """What ``NOTIFY dexnode_blocks`` says about a batch (None: nothing to announce): the stream, the
    block range and its tip, and the reorg applied first. Listeners (the API's websocket hub in another
    process) read the rows back; a deep reorg's orphaned hashes are left out when they do not fit
    (``orphaned`` null: read them from ``reorgs``)."""
    reorg = batch.reorg
    if not batch.blocks and reorg is None:
        return None
    doc: dict[str, Any] = {"stream": batch.stream, "first": None, "last": None, "hash": None, "reorg": None}
    if batch.blocks:
        doc.update(first=batch.blocks[0].number, last=batch.blocks[-1].number, hash=batch.blocks[-1].hash)
    if reorg is not None:
        doc["reorg"] = {
            "number": reorg.common_ancestor_number,
            "hash": reorg.common_ancestor_hash,
            "orphaned": list(reorg.orphaned_hashes),
        }
    text = orjson.dumps(doc).decode()
    if len(text) > _NOTIFY_MAX_BYTES and doc["reorg"] is not None:
        doc["reorg"]["orphaned"] = None
        text = orjson.dumps(doc).decode()
    return text


async def notify_blocks(conn: asyncpg.Connection, batch: Batch) -> None:
    """``pg_notify`` inside the write transaction: Postgres delivers it at COMMIT, and only then, so a
    listener never hears of rows it cannot read yet, nor of a batch that rolled back."""
    payload = notify_payload(batch)
    if payload is not None:
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)


class PostgresSink:
    """Writes batches; also answers the follower's questions about what is stored."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._staged: dict[int, int] = {}  # rows staged since the last TRUNCATE, per backend pid

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 4) -> PostgresSink:
        # synchronous_commit=off: a commit returns before its WAL reaches the disk. An OS crash can lose
        # the newest few batches, but only whole batches and in order, cursor included, so the node
        # re-indexes them from the chain on restart; the database never holds half a block.
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn),
            min_size=1,
            max_size=max_size,
            init=_create_staging,
            server_settings={"synchronous_commit": "off"},
        )
        return cls(pool)

    async def write(
        self, batch: Batch, *, before_commit: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """One transaction; ``before_commit`` runs last inside it (a raise there rolls it back).

        Blocks not stored yet (the usual live case, and every reorg's new branch once the orphans are
        deleted) are COPied straight into their tables: a third less time per
        live block than the staging pass. If a concurrent writer stored some of them meanwhile, the
        unique violation rolls everything back and the batch is written again through staging, where
        what is already stored is skipped."""
        try:
            await self._write(batch, allow_direct=True, before_commit=before_commit)
        except asyncpg.UniqueViolationError as exc:
            if not batch.blocks:
                raise
            log.info("block %d: stored meanwhile (%s); writing it idempotently", batch.blocks[0].number, exc)
            await self._write(batch, allow_direct=False, before_commit=before_commit)

    async def _write(
        self, batch: Batch, *, allow_direct: bool, before_commit: Callable[[], Awaitable[None]] | None
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if batch.reorg is not None:
                await self._apply_reorg(conn, batch)
            direct = False
            if allow_direct and batch.blocks:
                direct = not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM blocks WHERE number BETWEEN $1 AND $2)",
                    batch.blocks[0].number,
                    batch.blocks[-1].number,
                )
            await self._insert_rows(conn, batch, direct=direct)
            await self._checkpoint(conn, batch)
            await notify_blocks(conn, batch)
            if before_commit is not None:
                await before_commit()

    async def _vacuum_staging(self, conn: asyncpg.Connection, batch: Batch) -> None:
        """Staging tables are emptied by the DELETE ... RETURNING that moves their rows, which leaves
        dead tuples that nothing vacuums in a temporary table: truncate them now and then. (Emptying
        them with ON COMMIT DELETE ROWS instead costs a truncation of each at every commit: 2.5 ms of a
        10 ms live block here.)"""
        pid = conn.get_server_pid()
        staged = self._staged.get(pid, 0) + batch.count()
        if staged > STAGING_TRUNCATE_ROWS:
            await conn.execute("TRUNCATE " + ", ".join(w.stage for w in _WRITERS))
            staged = 0
        self._staged[pid] = staged

    async def _insert_rows(self, conn: asyncpg.Connection, batch: Batch, *, direct: bool = False) -> None:
        """Every table's rows: COPY into staging, then insert what is not stored yet.

        ``direct``: COPY straight into the block-keyed tables, for ``_write`` once it has checked in
        this transaction that none of the batch's heights is stored (a new live block, a new backfill
        chunk, a reorg's new branch); a row stored meanwhile by another writer then fails the
        transaction with a unique violation. Tokens and pools, shared across blocks, always go through
        staging.
        """
        await self._vacuum_staging(conn, batch)
        for writer in _WRITERS:
            rows: Sequence[Record] = batch.of(writer.record)
            if not rows:
                continue
            target = writer.table.name if direct and writer.direct else writer.stage
            if writer.encode is not None:
                data = _text_slices(writer.encode, rows)
                await conn.copy_to_table(target, source=data, columns=writer.columns, format="text")
            else:
                records = [writer.to_row(r) for r in rows]
                await conn.copy_records_to_table(target, records=records, columns=writer.columns)
            if target == writer.table.name:
                continue
            await conn.execute(writer.insert_sql)

    async def _checkpoint(self, conn: asyncpg.Connection, batch: Batch) -> None:
        """Record the batch's progress in its own transaction: here the stream's cursor; the
        backfill's subclass records its completed chunk instead."""
        tip = batch.tip
        if tip is not None:
            await self._set_cursor(conn, batch.stream, tip.number, tip.hash)

    async def _apply_reorg(self, conn: asyncpg.Connection, batch: Batch) -> None:
        reorg = batch.reorg
        assert reorg is not None
        if await reorg_is_applied(conn, batch):
            log.info("reorg above block %d already applied (a replayed batch)", reorg.common_ancestor_number)
        else:
            pools, tokens = await orphaned_pools_and_tokens(conn, reorg.common_ancestor_number)
            for sql in _DELETES:
                await conn.execute(sql, reorg.common_ancestor_number)
            if pools:
                await conn.execute("DELETE FROM pools WHERE address = ANY($1::text[])", pools)
            if tokens:
                await conn.execute("DELETE FROM tokens WHERE address = ANY($1::text[])", tokens)
            await conn.execute(
                "INSERT INTO reorgs (common_ancestor_number, common_ancestor_hash, depth, orphaned_hashes,"
                " new_hashes) VALUES ($1, $2, $3, $4, $5)",
                reorg.common_ancestor_number,
                reorg.common_ancestor_hash,
                reorg.depth,
                list(reorg.orphaned_hashes),
                list(reorg.new_hashes),
            )
        if not batch.blocks:  # the new branch is shorter and not fetched yet: the cursor goes back
            await self._set_cursor(
                conn, batch.stream, reorg.common_ancestor_number, reorg.common_ancestor_hash
            )

    @staticmethod
    async def _set_cursor(conn: asyncpg.Connection, stream: str, number: int, block_hash: str) -> None:
        await conn.execute(
            "INSERT INTO cursors (stream, block_number, block_hash, updated_at) VALUES ($1, $2, $3, now())"
            " ON CONFLICT (stream) DO UPDATE SET block_number = excluded.block_number,"
            " block_hash = excluded.block_hash, updated_at = excluded.updated_at",
            stream,
            number,
            block_hash,
        )

    async def close(self) -> None:
        await self.pool.close()

    # -- what is stored ---------------------------------------------------------------------

    async def cursor(self, stream: str) -> BlockRef | None:
        row = await self.pool.fetchrow(
            "SELECT c.block_number, c.block_hash, b.parent_hash FROM cursors c"
            " LEFT JOIN blocks b ON b.hash = c.block_hash WHERE c.stream = $1",
            stream,
        )
        if row is None:
            return None
        return BlockRef(row["block_number"], row["block_hash"], row["parent_hash"] or "")

    async def recent_blocks(self, up_to: int, count: int) -> list[BlockRef]:
        """Stored blocks numbered ``up_to - count + 1 .. up_to``, ascending."""
        rows = await self.pool.fetch(
            "SELECT number, hash, parent_hash FROM blocks"
            " WHERE number <= $1 AND number > $1 - $2 ORDER BY number",
            up_to,
            count,
        )
        return [BlockRef(r["number"], r["hash"], r["parent_hash"]) for r in rows]
