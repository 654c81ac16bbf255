"""Migrations on a real Postgres: they build exactly the SQLAlchemy schema, are idempotent, and go down."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from core.database import DatabaseInfo
from indexer.backfill import store
from migrations import runner
from sinks import schema

pytestmark = pytest.mark.integration


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables"
            " WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
        )
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def _schema_diff(url: str) -> list[object]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), schema.metadata
                )
            )
    finally:
        await engine.dispose()


async def test_upgrade_builds_the_declared_schema_and_is_idempotent(scratch_db: DatabaseInfo) -> None:
    assert (await runner.status(scratch_db.sqlalchemy_url)).current is None
    await runner.upgrade(scratch_db.sqlalchemy_url)
    st = await runner.status(scratch_db.sqlalchemy_url)
    assert st.current == runner.head_revision()
    assert st.up_to_date
    assert await _tables(scratch_db.dsn) == set(schema.metadata.tables)
    # the migration produces exactly what the table definitions say: no missing column, index or type
    assert await _schema_diff(scratch_db.sqlalchemy_url) == []

    await runner.upgrade(scratch_db.sqlalchemy_url)  # second run: nothing to do, nothing changes
    assert (await runner.status(scratch_db.sqlalchemy_url)).current == st.current
    assert await _tables(scratch_db.dsn) == set(schema.metadata.tables)


async def test_down_and_up_round_trip(scratch_db: DatabaseInfo) -> None:
    await runner.upgrade(scratch_db.sqlalchemy_url)
    await runner.downgrade(scratch_db.sqlalchemy_url, "base")
    assert await _tables(scratch_db.dsn) == set()
    assert (await runner.status(scratch_db.sqlalchemy_url)).current is None
    await runner.upgrade(scratch_db.sqlalchemy_url)
    assert await _tables(scratch_db.dsn) == set(schema.metadata.tables)
    assert await _schema_diff(scratch_db.sqlalchemy_url) == []


async def test_natural_keys_make_replays_idempotent_and_numeric_holds_2_256(
    clean_db: DatabaseInfo,
) -> None:
    conn = await asyncpg.connect(clean_db.dsn)
    big = 2**256 - 1
    try:
        async with conn.transaction():
            for _ in range(2):
                await conn.execute(
                    "INSERT INTO token_transfers (block_hash, log_index, batch_index, block_number,"
                    " transaction_hash, transaction_index, token_address, from_address, to_address, value,"
                    " standard)"
                    " VALUES ($1, 0, 0, 1, $2, 0, $3, $3, $3, $4, 'erc20') ON CONFLICT DO NOTHING",
                    "0x" + "ab" * 32, "0x" + "cd" * 32, "0x" + "00" * 20, big,
                )  # fmt: skip
            rows = await conn.fetch(
                "SELECT value FROM token_transfers WHERE block_hash = $1", "0x" + "ab" * 32
            )
            assert [int(r["value"]) for r in rows] == [big]
            # one canonical chain: a second block at the same height is refused, not silently forked
            cols = "(number, hash, parent_hash, gas_limit, gas_used, timestamp, transaction_count)"
            await conn.execute(f"INSERT INTO blocks {cols} VALUES (5, '0xa', '0xp', 1, 1, 1, 0)")
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO blocks {cols} VALUES (5, '0xb', '0xp', 1, 1, 1, 0)")
            raise asyncpg.exceptions.TransactionRollbackError("leave the session database clean")
    except asyncpg.exceptions.TransactionRollbackError:
        pass
    finally:
        await conn.close()


async def _index_definitions(dsn: str) -> dict[str, str]:
    """Every index of the schema as Postgres prints it (method, columns, options)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        )
    finally:
        await conn.close()
    return {r["indexname"]: r["indexdef"] for r in rows}


def _declared_method(ix: sa.Index) -> str:
    return ix.dialect_options["postgresql"]["using"] or "btree"


async def test_index_methods_are_the_declared_ones_and_0010_goes_down(scratch_db: DatabaseInfo) -> None:
    # compare_metadata does not compare an index's method: checked here, for every declared index
    await runner.upgrade(scratch_db.sqlalchemy_url)
    defs = await _index_definitions(scratch_db.dsn)
    for table in schema.metadata.tables.values():
        for ix in table.indexes:
            assert f" USING {_declared_method(ix)} (" in defs[str(ix.name)], (ix.name, defs[str(ix.name)])
    assert defs["ix_logs_transaction"].endswith("USING hash (transaction_hash)")

    await runner.downgrade(scratch_db.sqlalchemy_url, "0009")
    down = await _index_definitions(scratch_db.dsn)
    assert down["ix_logs_transaction"].endswith("USING btree (transaction_hash)")
    assert {k: v for k, v in down.items() if k != "ix_logs_transaction"} == {
        k: v for k, v in defs.items() if k != "ix_logs_transaction"
    }
    await runner.upgrade(scratch_db.sqlalchemy_url)
    assert await _index_definitions(scratch_db.dsn) == defs


async def test_deferred_indexes_are_rebuilt_as_the_migrations_build_them(scratch_db: DatabaseInfo) -> None:
    """A first backfill drops the secondary indexes and builds them from ``sinks.schema`` at its end:
    the same definitions, method included, as the migrations made."""
    await runner.upgrade(scratch_db.sqlalchemy_url)
    migrated = await _index_definitions(scratch_db.dsn)
    pool = await asyncpg.create_pool(scratch_db.dsn, min_size=1, max_size=2)
    try:
        dropped = await store.drop_secondary_indexes(pool)
        assert "ix_logs_transaction" in dropped
        assert set(await _index_definitions(scratch_db.dsn)) == set(migrated) - set(dropped)
        await store.rebuild_indexes(pool)
    finally:
        await pool.close()
    assert await _index_definitions(scratch_db.dsn) == migrated
