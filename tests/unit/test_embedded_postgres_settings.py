"""The embedded PostgreSQL's settings as dexnode computes and writes them (core/embedded_postgres.py):
the memory size rule, the override's syntax, and the files in the data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.embedded_postgres import (
    INCLUDE_LINE,
    SETTINGS_FILE,
    auto_shared_buffers,
    parse_shared_buffers,
    server_settings,
    write_settings,
)
from core.errors import ConfigError
from core.settings import build_settings

pytestmark = pytest.mark.unit

MB, GB = 1024**2, 1024**3


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (24 * GB, 2 * GB),  # a quarter would be 6 GB: capped
        (8 * GB, 2 * GB),  # exactly the cap
        (4 * GB, 1 * GB),
        (1 * GB, 256 * MB),
        (600 * MB, 150 * MB),
        (512 * MB, None),  # a quarter is Postgres's own 128MB: leave the default
        (256 * MB, None),  # never below the default
    ],
)
def test_auto_is_a_quarter_of_memory_capped_at_2gb(memory: int, expected: int | None) -> None:
    assert auto_shared_buffers(memory) == expected


def test_auto_rounds_down_to_whole_megabytes() -> None:
    assert auto_shared_buffers(2 * GB + 3) == 512 * MB
    assert auto_shared_buffers(1001 * MB) == 250 * MB


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MB", 512 * MB), ("2GB", 2 * GB), (" 1GB ", GB), ("131072kB", 128 * MB), ("off", None), ("0", None),
     ("OFF", None)],
)  # fmt: skip
def test_sizes_in_postgres_units(text: str, expected: int | None) -> None:
    assert parse_shared_buffers(text) == expected


@pytest.mark.parametrize("text", ["512", "1.5GB", "512mb", "lots", "-1GB", "64kB", "", "auto-ish"])
def test_other_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shared_buffers(text)


def test_settings_name_the_variable_of_a_bad_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXNODE_EMBEDDED_SHARED_BUFFERS", "lots")
    with pytest.raises(ConfigError, match="DEXNODE_EMBEDDED_SHARED_BUFFERS / --embedded-shared-buffers"):
        build_settings()
    monkeypatch.setenv("DEXNODE_EMBEDDED_SHARED_BUFFERS", "768MB")
    assert build_settings().embedded_shared_buffers == "768MB"
    monkeypatch.delenv("DEXNODE_EMBEDDED_SHARED_BUFFERS")
    assert build_settings().embedded_shared_buffers == "auto"


def test_settings_in_postgres_syntax() -> None:
    assert server_settings(2 * GB) == {"shared_buffers": "2048MB"}
    assert server_settings(128 * 1024 + 8192) == {"shared_buffers": "136kB"}
    assert server_settings(None) == {}


def test_written_beside_postgresql_conf_and_included_once(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.conf"
    conf.write_text("max_connections = 100\n")
    write_settings(tmp_path, {"shared_buffers": "512MB"})
    write_settings(tmp_path, {"shared_buffers": "1024MB"})  # the next start: replaced, not appended
    assert conf.read_text().splitlines().count(INCLUDE_LINE) == 1
    assert conf.read_text().startswith("max_connections = 100\n")
    lines = [ln for ln in (tmp_path / SETTINGS_FILE).read_text().splitlines() if not ln.startswith("#")]
    assert lines == ["shared_buffers = '1024MB'"]
    write_settings(tmp_path, {})  # off: no setting left, Postgres's defaults
    assert [ln for ln in (tmp_path / SETTINGS_FILE).read_text().splitlines() if not ln.startswith("#")] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [SETTINGS_FILE, "postgresql.conf"]  # no scratch file
