"""Programmatic Alembic: upgrade, downgrade and revision status, for the CLI and the tests.

Alembic's command functions are synchronous and ``env.py`` runs its own event loop, so they run
in a worker thread when called from async code.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(sqlalchemy_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {heads}")
    return heads[0]


# Alembic's command functions install their context in module globals (alembic.context, alembic.op): two
# at once in one process (``dexnode run``: the backfill and each CEX feed upgrade as they start) break
# each other with a KeyError. One at a time; the second finds the schema at head and returns at once.
_ALEMBIC = threading.Lock()


def _locked(func: Any, *args: Any) -> None:
    with _ALEMBIC:
        func(*args)


async def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(_locked, command.upgrade, alembic_config(sqlalchemy_url), revision)


async def downgrade(sqlalchemy_url: str, revision: str) -> None:
    await asyncio.to_thread(_locked, command.downgrade, alembic_config(sqlalchemy_url), revision)


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    server_version: str
    tables: dict[str, int]  # table -> estimated rows

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


async def status(sqlalchemy_url: str) -> SchemaStatus:
    engine = create_async_engine(sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            version = (await conn.exec_driver_sql("SHOW server_version")).scalar_one()
            rows = await conn.exec_driver_sql(
                "SELECT c.relname, GREATEST(c.reltuples, 0)::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
                "AND c.relname <> 'alembic_version' ORDER BY c.relname"
            )
            tables = {str(row[0]): int(row[1]) for row in cast(list[Any], rows.all())}
    finally:
        await engine.dispose()
    return SchemaStatus(current=current, head=head_revision(), server_version=str(version), tables=tables)
