"""``dexnode db upgrade|downgrade|status``."""

from __future__ import annotations

import time

import asyncpg
import typer
from sqlalchemy.exc import DBAPIError, OperationalError

from archive.archiver import archive_lag
from core.database import asyncpg_dsn, open_database
from core.errors import FatalError
from core.settings import Settings
from migrations import runner


async def upgrade(settings: Settings, revision: str = "head") -> None:
    async with open_database(settings) as db:
        before = (await runner.status(db.sqlalchemy_url)).current
        try:
            await runner.upgrade(db.sqlalchemy_url, revision)
        except (DBAPIError, OperationalError) as exc:
            raise FatalError(f"migration failed: {exc.orig}") from None
        after = (await runner.status(db.sqlalchemy_url)).current
        if before == after:
            typer.echo(f"schema already at {after} on {db.display}")
        else:
            typer.echo(f"schema upgraded {before or 'empty'} -> {after} on {db.display}")


async def downgrade(settings: Settings, revision: str) -> None:
    async with open_database(settings) as db:
        before = (await runner.status(db.sqlalchemy_url)).current
        await runner.downgrade(db.sqlalchemy_url, revision)
        after = (await runner.status(db.sqlalchemy_url)).current
        typer.echo(f"schema downgraded {before or 'empty'} -> {after or 'empty'} on {db.display}")


async def status(settings: Settings) -> None:
    async with open_database(settings) as db:
        st = await runner.status(db.sqlalchemy_url)
        lag = await _archive_lag(db.dsn, settings.confirmations) if st.current else {}
    kind = "embedded" if db.embedded else "server"
    typer.echo(f"database: {db.display} ({kind}, PostgreSQL {st.server_version})")
    state = "up to date" if st.up_to_date else "needs `dexnode db upgrade`"
    typer.echo(f"schema revision: {st.current or 'none'} (code head {st.head}, {state})")
    for table, rows in st.tables.items():
        typer.echo(f"  {table:<20} ~{rows} rows")
    for stream, figures in lag.items():
        typer.echo(f"archive {stream}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


async def _archive_lag(dsn: str, confirmations: int) -> dict[str, dict[str, int]]:
    """The Parquet archive's lag per stream (empty when no archiver has run here; ``archive.archiver``)."""
    pool = await asyncpg.create_pool(asyncpg_dsn(dsn), min_size=1, max_size=1)
    try:
        return await archive_lag(pool, confirmations, time.time())
    finally:
        await pool.close()
