"""Programmatic Alembic: upgrade, downgrade and revision status, for the CLI and the tests.

Alembic's command functions are synchronous and ``env.py`` runs its own event loop, so they run
in a worker thread when called from async code.

Every indexing command upgrades to head as it starts, and nearly always finds the schema there
already. Alembic costs that command ~0.2 CPU-s for nothing (its import, loading every revision, a
SQLAlchemy engine and event loop of its own), so ``upgrade`` first compares the database's
``alembic_version`` with the head read from the revision files' own ``revision``/``down_revision``
lines (one asyncpg query) and imports Alembic only when they differ.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from core.database import asyncpg_dsn

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(sqlalchemy_url: str) -> Config:
    # imported when used: Alembic is left out of a start-up that finds the schema at head
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {heads}")
    return heads[0]


# ``revision: str = "0008"`` / ``down_revision: str | None = "0007"`` (or ``= None``), as Alembic's
# template writes them; a file written otherwise makes ``file_head`` answer None (Alembic decides)
_REVISION_LINE = re.compile(
    r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:\"([^\"\n]*)\"|'([^'\n]*)'|(None))\s*$", re.MULTILINE
)


def file_head(versions: Path = MIGRATIONS_DIR / "versions") -> str | None:
    """The one head of the revision files, read from their text without importing them; None when a
    file does not state both lines plainly or there is not exactly one head (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        found = {m[1]: m[2] or m[3] or None for m in _REVISION_LINE.finditer(path.read_text())}
        if set(found) != {"revision", "down_revision"} or found["revision"] is None:
            return None
        revisions.add(found["revision"])
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def current_revision(sqlalchemy_url: str) -> str | None:
    """The database's ``alembic_version`` (None: no table, no row, or more than one)."""
    conn = await asyncpg.connect(asyncpg_dsn(sqlalchemy_url))
    try:
        if await conn.fetchval("SELECT to_regclass('alembic_version')") is None:
            return None
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return str(rows[0][0]) if len(rows) == 1 else None


# Alembic's command functions install their context in module globals (alembic.context, alembic.op): two
# at once in one process (``dexnode run``: the backfill and each CEX feed upgrade as they start) break
# each other with a KeyError. One at a time; the second finds the schema at head and returns at once.
_ALEMBIC = threading.Lock()


def _run_command(name: str, sqlalchemy_url: str, revision: str) -> None:
    from alembic import command

    with _ALEMBIC:
        getattr(command, name)(alembic_config(sqlalchemy_url), revision)


async def upgrade(sqlalchemy_url: str, revision: str = "head") -> None:
    if revision == "head":
        head = file_head()
        if head is not None and await current_revision(sqlalchemy_url) == head:
            return  # at head already: what Alembic would conclude, without loading it
    await asyncio.to_thread(_run_command, "upgrade", sqlalchemy_url, revision)


async def downgrade(sqlalchemy_url: str, revision: str) -> None:
    await asyncio.to_thread(_run_command, "downgrade", sqlalchemy_url, revision)


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
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

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
