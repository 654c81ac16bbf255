"""The embedded PostgreSQL really runs with dexnode's settings (read back with ``SHOW``), the override
applies to an existing data dir at its next start, a server given by URL is left alone, and a server
that cannot get its shared memory starts with Postgres's defaults instead of not at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from core.database import open_database
from core.settings import build_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MB = 1024**2


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # outside pytest's 0700 basetemp: as root, pgserver runs PostgreSQL as another user (tests/conftest.py)
    root = Path(tempfile.mkdtemp(prefix="dexnode-test-pgconf-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def memtotal() -> int:
    """Physical memory as the kernel reports it (independent of the code's sysconf reading)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def cgroup_limit() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


async def shared_buffers_of(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW shared_buffers"))
    finally:
        await conn.close()


async def test_embedded_server_runs_with_dexnode_settings_and_the_override(data_dir: Path) -> None:
    memory = min(memtotal(), cgroup_limit() or memtotal())
    quarter_mb = min(memory // 4 // MB, 2048)
    quarter_mb = max(quarter_mb, 128)  # never below Postgres's default
    expected = f"{quarter_mb // 1024}GB" if quarter_mb % 1024 == 0 else f"{quarter_mb}MB"  # as SHOW writes it
    async with open_database(build_settings(data_dir=data_dir)) as db:
        assert await shared_buffers_of(db.dsn) == expected
    # the same (now existing) data dir, next start: the override applies
    async with open_database(build_settings(data_dir=data_dir, embedded_shared_buffers="192MB")) as db:
        assert await shared_buffers_of(db.dsn) == "192MB"
    async with open_database(build_settings(data_dir=data_dir, embedded_shared_buffers="off")) as db:
        assert await shared_buffers_of(db.dsn) == "128MB"
        conn = await asyncpg.connect(db.dsn)
        try:  # durability is not traded away
            for name in ("fsync", "full_page_writes", "synchronous_commit"):
                assert await conn.fetchval(f"SHOW {name}") == "on", name
        finally:
            await conn.close()


async def test_a_server_by_url_is_left_alone(pg_server: tuple[str, bool], data_dir: Path) -> None:
    url, _ = pg_server
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT sourcefile, name, setting FROM pg_file_settings ORDER BY 1, 2, 3"
        files_before = await conn.fetch(query)  # the config files as they are on disk now
        before = await conn.fetchval("SHOW shared_buffers")
        settings = build_settings(database_url=url, data_dir=data_dir, embedded_shared_buffers="176MB")
        async with open_database(settings) as db:
            assert not db.embedded
            assert await shared_buffers_of(db.dsn) == before
        assert await conn.fetch(query) == files_before
        assert await conn.fetchval("SHOW shared_buffers") == before
    finally:
        await conn.close()
    assert not (data_dir / "postgres").exists()


FALLBACK = """
import asyncio, logging, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))  # a tight ulimit -v: 1.5 GB
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
logging.getLogger("pgserver").setLevel(logging.CRITICAL)
import asyncpg
from core.database import embedded_server

async def show(uri):
    conn = await asyncpg.connect(uri)
    try:
        return await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()

with embedded_server(Path(sys.argv[1]), "8GB") as uri:
    print("shared_buffers", asyncio.run(show(uri)))
"""


def test_a_server_without_the_shared_memory_starts_with_postgres_defaults(data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK, str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "shared_buffers 128MB"
    assert "could not start with shared_buffers=8192MB (could not map anonymous shared memory" in done.stderr
    assert "starting it with Postgres's defaults" in done.stderr
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # stopped on exit as usual
