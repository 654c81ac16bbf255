"""Shared test infrastructure: a fresh real Postgres database per session, anvil, fixture paths.

Database: on the server named by ``DATABASE_URL`` when set (a new database is created there and
dropped afterwards), else on an embedded pgserver started in a temporary directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.database import DatabaseInfo, asyncpg_dsn, embedded_server, ensure_database

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
ANVIL = REPO / "node_modules" / ".bin" / "anvil"

pytest_plugins = [
    "pytester",  # for tests/unit/test_markers.py
    "tests.markers",  # every test is unit or integration, and a unit test starts no real component
    *(["tests.devnet_fixture"] if (REPO / "tests" / "devnet_fixture.py").exists() else []),
]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The recorded real data. Missing, every golden test fails (never skips): a green run must mean
    the recordings were checked."""
    if not FIXTURES.is_dir():
        pytest.fail(
            f"recorded fixtures not found at {FIXTURES}: the golden tests need ../shared/fixtures beside "
            "the checkout (see DESIGN.md, 'Real data for tests')",
            pytrace=False,
        )
    return FIXTURES


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    """(server URL, embedded?) — DATABASE_URL's server, or an embedded pgserver for this session.

    The embedded cluster lives outside pytest's basetemp: as root, pgserver runs PostgreSQL as an
    unprivileged user, which cannot enter pytest's 0700 ``pytest-of-root`` directory."""
    from tests.markers import refuse_in_unit_test  # a plugin: imported after pytest registered it

    refuse_in_unit_test(request, "Postgres")
    url = os.environ.get("DATABASE_URL")
    if url:
        yield asyncpg_dsn(url), False
        return
    root = Path(tempfile.mkdtemp(prefix="dexnode-test-pg-"))
    try:
        with embedded_server(root) as uri:
            yield uri, True
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def database(pg_server: tuple[str, bool]) -> AsyncIterator[DatabaseInfo]:
    """A new, empty database for this test session (dropped at the end on a shared server)."""
    server, embedded = pg_server
    name = f"dexnode_test_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = await ensure_database(server, name)
    yield DatabaseInfo(dsn=dsn, embedded=embedded)
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def migrated_db(database: DatabaseInfo) -> DatabaseInfo:
    """The session database with the schema at head."""
    from migrations import runner  # alembic: imported here, so the unit loop does not pay for it

    await runner.upgrade(database.sqlalchemy_url)
    return database


@pytest.fixture
async def scratch_db(pg_server: tuple[str, bool]) -> AsyncIterator[DatabaseInfo]:
    """A new empty database for one test (for migrations and destructive tests)."""
    server, embedded = pg_server
    name = f"dexnode_scratch_{secrets.token_hex(4)}"
    dsn = await ensure_database(server, name)
    yield DatabaseInfo(dsn=dsn, embedded=embedded)
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def anvil(anvil_process: tuple[str, subprocess.Popen[bytes]]) -> str:
    """A bare anvil's HTTP URL (the websocket is the same port with ws://)."""
    return anvil_process[0]


@pytest.fixture
def anvil_process(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A bare anvil (npm-installed binary) on a free port: its HTTP URL and process."""
    from tests.markers import refuse_in_unit_test

    refuse_in_unit_test(request, "anvil")
    if not ANVIL.exists():
        pytest.fail(f"{ANVIL} missing: run `make install` (npm ci)")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGCONT)  # in case a test paused it
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``dexnode`` CLI in a subprocess, with a private data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEXNODE_")}
    env["DEXNODE_DATA_DIR"] = str(tmp_path / "data")
    return env


def dexnode_bin() -> str:
    exe = REPO / ".venv" / "bin" / "dexnode"
    return str(exe) if exe.exists() else (shutil.which("dexnode") or "dexnode")


@pytest.fixture
async def clean_db(migrated_db: DatabaseInfo) -> DatabaseInfo:
    """The session database, emptied of rows (schema kept) before the test."""
    await empty_tables(migrated_db.dsn)
    return migrated_db


async def empty_tables(dsn: str) -> None:
    """Every table of the schema emptied (TRUNCATE), the schema kept."""
    from sinks.schema import metadata

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in metadata.tables))
    finally:
        await conn.close()
