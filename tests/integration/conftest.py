"""Fixtures shared by the integration tests (tests/conftest.py holds the databases they stand on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.database import DatabaseInfo
from sinks.postgres import PostgresSink


@pytest.fixture
async def sink(clean_db: DatabaseInfo) -> AsyncIterator[PostgresSink]:
    """A ``PostgresSink`` on the clean, migrated database, closed after the test."""
    s = await PostgresSink.connect(clean_db.dsn)
    try:
        yield s
    finally:
        await s.close()
