"""``runner.upgrade`` skips Alembic only when the database is at the head already."""

from __future__ import annotations

import asyncpg
import pytest

from core.database import DatabaseInfo
from migrations import runner

pytestmark = pytest.mark.integration


async def _columns(dsn: str, table: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
        )
    finally:
        await conn.close()
    return {r["column_name"] for r in rows}


async def test_upgrade_from_an_older_revision_still_migrates(scratch_db: DatabaseInfo) -> None:
    url = scratch_db.sqlalchemy_url
    assert await runner.current_revision(url) is None  # empty database: no alembic_version yet
    await runner.upgrade(url)
    head = runner.head_revision()
    assert await runner.current_revision(url) == head
    assert "reason" in await _columns(scratch_db.dsn, "cex_book_events")  # added by 0008

    await runner.downgrade(url, "0007")
    assert await runner.current_revision(url) == "0007"
    assert "reason" not in await _columns(scratch_db.dsn, "cex_book_events")
    await runner.upgrade(url)  # not at head: Alembic runs 0008 again
    assert await runner.current_revision(url) == head
    assert "reason" in await _columns(scratch_db.dsn, "cex_book_events")
    assert (await runner.status(url)).up_to_date

    await runner.upgrade(url)  # at head: nothing to do, and nothing changes
    assert await runner.current_revision(url) == head
