"""The embedded PostgreSQL's own settings: dexnode's, written into its data dir before each start.

pgserver starts PostgreSQL with the stock ``postgresql.conf`` (``shared_buffers = 128MB``). dexnode
writes ``dexnode.conf`` beside it and includes it from ``postgresql.conf`` (``include_if_exists``,
appended once), so a new data dir and an existing one both start with dexnode's settings; a server
that another process already runs keeps its settings until its next start. A server given by URL is
the user's own and never touched (this module only serves the embedded one).

The settings are those a tuning guide gives a single-purpose local database:

- ``shared_buffers``: 25% of the machine's memory (``MemTotal``, or the cgroup's limit when lower), at
  most 2 GB. PostgreSQL also reads through the OS page cache, so the rest of memory is not lost to it;
  the cap is there because the embedded server shares the machine with dexnode's own processes (the
  indexer, API workers) and the user's, because several embedded servers may run at once (the test
  suite, one per data dir), each keeping what it has read until it stops, and because a database that
  outgrows a few GB of cache belongs on its own tuned server (``DEXNODE_DATABASE_URL``). Memory is
  only taken as pages are read. ``DEXNODE_EMBEDDED_SHARED_BUFFERS`` overrides the size; ``off`` keeps
  Postgres's default.
- Durability is not traded: ``fsync`` and ``full_page_writes`` stay on, and ``synchronous_commit`` is
  left to the code, which sets it per session where it may.

If the server cannot get the shared memory (a tight ``ulimit -v`` or overcommit limit), it is started
once more with Postgres's defaults and a warning says why.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

from core.errors import FatalError

log = logging.getLogger("dexnode.db")

SETTINGS_FILE = "dexnode.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'  # dexnode's settings (core/embedded_postgres.py)"
AUTO_SHARE = 4  # a quarter of memory
AUTO_CAP = 2 * 1024**3
POSTGRES_DEFAULT = 128 * 1024**2
_MIN_SHARED_BUFFERS = 128 * 1024  # Postgres refuses fewer than 16 buffers of 8 kB
_UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)\s*$")
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def parse_shared_buffers(text: str) -> int | None:
    """``auto`` → the machine's share (see the module docstring); ``0``/``off`` → None (Postgres's
    default); a size in Postgres's units (``512MB``, ``2GB``) → bytes. Anything else: ``ValueError``."""
    word = text.strip().lower()
    if word in {"0", "off"}:
        return None
    if word == "auto":
        return auto_shared_buffers(machine_memory())
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"shared buffers must be auto, off, 0 or a size such as 512MB or 2GB (got {text!r})")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size < _MIN_SHARED_BUFFERS:
        raise ValueError(f"shared buffers must be at least 128kB (got {text!r})")
    return size


def auto_shared_buffers(memory: int) -> int | None:
    """A quarter of ``memory`` in whole MB, at most ``AUTO_CAP``; None where that is below Postgres's
    own default (a machine under 512 MB)."""
    size = min(memory // AUTO_SHARE, AUTO_CAP) // 1024**2 * 1024**2
    return size if size > POSTGRES_DEFAULT else None


def machine_memory() -> int:
    """Physical memory, or the memory cgroup's limit where that is lower (a container)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in _CGROUP_LIMITS:
        try:
            limit = limit_file.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            memory = min(memory, int(limit))
    return memory


def server_settings(shared_buffers: int | None) -> dict[str, str]:
    """The settings dexnode gives the embedded server (empty: Postgres's defaults)."""
    if shared_buffers is None:
        return {}
    mb, rest = divmod(shared_buffers, 1024**2)
    return {"shared_buffers": f"{mb}MB" if rest == 0 else f"{shared_buffers // 1024}kB"}


def write_settings(pgdata: Path, settings: dict[str, str]) -> None:
    """Write ``dexnode.conf`` (replaced whole, atomically) and include it from ``postgresql.conf``."""
    conf = pgdata / "postgresql.conf"
    lines = [
        "# Written by dexnode before each start of its embedded PostgreSQL; edits here are overwritten.",
        "# Set DEXNODE_EMBEDDED_SHARED_BUFFERS (a size, or off for Postgres's defaults) instead.",
        *(f"{name} = '{value}'" for name, value in settings.items()),
    ]
    target = pgdata / SETTINGS_FILE
    scratch = pgdata / f".{SETTINGS_FILE}.{os.getpid()}"
    scratch.write_text("\n".join(lines) + "\n")
    owner = conf.stat()
    if os.geteuid() == 0:  # pgserver runs PostgreSQL as its own user when we are root
        os.chown(scratch, owner.st_uid, owner.st_gid)
    scratch.replace(target)
    if INCLUDE_LINE not in conf.read_text().splitlines():
        with conf.open("a") as out:
            out.write(f"\n{INCLUDE_LINE}\n")


def start_server(pgdata: Path, settings: dict[str, str]) -> Any:
    """Start (or join) the pgserver server in ``pgdata`` with ``settings``; fall back to Postgres's
    defaults once where the server cannot get its shared memory. Returns pgserver's handle."""
    log_file = pgdata / "log"
    seen = log_file.stat().st_size if log_file.exists() else 0
    try:
        return _server_class()(pgdata, settings)
    except Exception as exc:  # pgserver raises plain exceptions with the pg_ctl output
        failure = exc
    _forget_failed_start(pgdata)
    reason = _shared_memory_failure(log_file, seen)
    if settings and reason:
        log.warning(
            "the embedded PostgreSQL in %s could not start with %s (%s); starting it with Postgres's"
            " defaults",
            pgdata,
            ", ".join(f"{k}={v}" for k, v in settings.items()),
            reason,
        )
        try:
            return _server_class()(pgdata, {})
        except Exception as exc:
            failure = exc
            _forget_failed_start(pgdata)
    raise FatalError(f"could not start the embedded PostgreSQL in {pgdata}: {failure}") from None


def _shared_memory_failure(log_file: Path, seen: int) -> str | None:
    """The server log's shared-memory complaint written since offset ``seen``, if any."""
    try:
        with log_file.open("rb") as stream:
            stream.seek(seen)
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "shared memory" in line and ("FATAL" in line or "could not" in line):
            return line.split("FATAL:", 1)[-1].strip()
    return None


def _forget_failed_start(pgdata: Path) -> None:
    """pgserver registers a handle (and its exit hook) before starting: drop the failed one, so its exit
    hook cannot take this process's entry from the handle list of a later, working start."""
    handle = _server_class().__mro__[1]._instances.pop(pgdata, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)


_SERVER_CLASS: Any = None


def _server_class() -> Any:
    """pgserver's server class with dexnode's settings written in the step between ``initdb`` and start
    (under pgserver's inter-process lock). pgserver is imported here, on first use: it costs ~0.2 s
    and warns about the missing XDG runtime dir, and a user with a database URL never needs it."""
    global _SERVER_CLASS
    if _SERVER_CLASS is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        class EmbeddedServer(pgserver.PostgresServer):
            def __init__(self, pgdata: Path, settings: dict[str, str]) -> None:
                self.dexnode_settings = settings
                super().__init__(pgdata, cleanup_mode="stop")

            def ensure_pgdata_inited(self) -> None:
                super().ensure_pgdata_inited()
                write_settings(self.pgdata, self.dexnode_settings)

        _SERVER_CLASS = EmbeddedServer
    return _SERVER_CLASS
