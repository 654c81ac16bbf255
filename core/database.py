"""Where the database is: a server by URL, or the embedded PostgreSQL (pgserver) in the data dir.

``open_database(settings)`` is a context manager that yields a ``DatabaseInfo`` with a plain
``postgresql://`` DSN for asyncpg (writes) and a ``postgresql+asyncpg://`` URL for SQLAlchemy's
async engine (reads, migrations). The embedded server is started on entry, reused if another
dexnode process already runs it, and stopped on exit when no other process uses it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from core import embedded_postgres
from core.errors import ConfigError, FatalError
from core.settings import Settings

log = logging.getLogger("dexnode.db")

EMBEDDED_DATABASE = "dexnode"


@dataclass(frozen=True)
class DatabaseInfo:
    dsn: str  # for asyncpg
    embedded: bool

    @property
    def sqlalchemy_url(self) -> str:
        scheme, rest = self.dsn.split("://", 1)
        return f"postgresql+asyncpg://{rest}" if scheme != "postgresql+asyncpg" else self.dsn

    @property
    def display(self) -> str:
        """The URL with any password masked, for logs and status lines."""
        parts = urlsplit(self.dsn)
        netloc = parts.netloc
        if "@" in netloc:
            cred, host = netloc.rsplit("@", 1)
            if ":" in cred:
                netloc = f"{cred.split(':', 1)[0]}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes only postgresql:// or postgres://."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme == "postgresql+asyncpg" else url


def _prepare_data_dir(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data dir {data_dir} is not writable: {exc.strerror or exc}") from None
    return data_dir.resolve()


# pgserver counts users per process, not per handle: the first cleanup() in a process stops the
# server even if another part of the same process still uses it. Count the handles here.
_EMBEDDED: dict[Path, tuple[Any, int]] = {}


@contextlib.contextmanager
def embedded_server(data_dir: Path, shared_buffers: str = "auto") -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL in ``data_dir/postgres``; yield its server URI.

    ``shared_buffers``: the ``embedded_shared_buffers`` setting (``auto``, a size, or ``off``), written
    with dexnode's other settings into the data dir before the server starts (core/embedded_postgres.py);
    a server another process already runs keeps its own until its next start.
    Nested uses in one process share the server; it stops when the last one exits (and no other
    dexnode process uses it)."""
    root = _prepare_data_dir(data_dir)
    pgdata = root / "postgres"
    entry = _EMBEDDED.get(pgdata)
    if entry is None:
        try:
            size = embedded_postgres.parse_shared_buffers(shared_buffers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        pgdata.mkdir(exist_ok=True)
        entry = (embedded_postgres.start_server(pgdata, embedded_postgres.server_settings(size)), 0)
    server, users = entry
    _EMBEDDED[pgdata] = (server, users + 1)
    try:
        yield server.get_uri()
    finally:
        server, users = _EMBEDDED[pgdata]
        if users == 1:
            del _EMBEDDED[pgdata]
            server.cleanup()
        else:
            _EMBEDDED[pgdata] = (server, users - 1)


async def ensure_database(server_uri: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its DSN.

    It is created with the ``C`` collation: every key dexnode stores is lower-case hex or ASCII, which
    ``C`` orders exactly as ``C.UTF-8`` does (by code point), but compares with ``memcmp`` instead of
    ``strcoll`` (``bench/collation.py``: sorts and DISTINCT over hex keys 0.63× the time, COPY into an
    indexed table 0.96×). Character classes (``LC_CTYPE``) stay the server's default."""
    conn = await connect(server_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # name is ours, not user input; template0, because template1 may carry another collation
            await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LC_COLLATE 'C'")
    finally:
        await conn.close()
    parts = urlsplit(server_uri)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def connect(dsn: str, timeout: float = 10.0) -> asyncpg.Connection:
    """One asyncpg connection with errors a user can act on."""
    try:
        return await asyncpg.connect(asyncpg_dsn(dsn), timeout=timeout)
    except (OSError, TimeoutError) as exc:
        where = urlsplit(dsn).hostname or "local socket"
        raise FatalError(f"cannot connect to the database at {where}: {exc}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise FatalError(f"database does not exist: {exc}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise FatalError(f"database refused the login: {exc}") from None
    except asyncpg.InvalidPasswordError as exc:
        raise FatalError(f"database refused the password: {exc}") from None
    except asyncpg.PostgresError as exc:
        raise FatalError(f"database error: {exc}") from None


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[DatabaseInfo]:
    """Resolve the settings to a reachable database (starting the embedded one if no URL is set)."""
    if settings.database_url:
        conn = await connect(settings.database_url)
        await conn.close()
        yield DatabaseInfo(dsn=asyncpg_dsn(settings.database_url), embedded=False)
        return
    with embedded_server(settings.data_dir, settings.embedded_shared_buffers) as server_uri:
        dsn = await ensure_database(server_uri, EMBEDDED_DATABASE)
        log.info("embedded PostgreSQL running in %s", settings.data_dir / "postgres")
        yield DatabaseInfo(dsn=dsn, embedded=True)
