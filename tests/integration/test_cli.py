"""The ``dexnode`` CLI as a user runs it: a subprocess, real databases, bad input gives one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.database import DatabaseInfo
from migrations import runner
from tests.conftest import dexnode_bin

pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dexnode_bin(), *args], env=env, capture_output=True, text=True, timeout=120)


def test_every_command_has_help(cli_env: dict[str, str]) -> None:
    top = run(["--help"], cli_env)
    assert top.returncode == 0
    assert "db" in top.stdout
    for cmd in (
        ["db", "--help"],
        ["db", "upgrade", "--help"],
        ["db", "status", "--help"],
        ["demo", "--help"],
    ):
        res = run(cmd, cli_env)
        assert res.returncode == 0, res.stderr
        assert "--database-url" in res.stdout or cmd == ["db", "--help"]


def test_upgrade_twice_then_status_on_a_server(scratch_db: DatabaseInfo, cli_env: dict[str, str]) -> None:
    first = run(["db", "upgrade", "--database-url", scratch_db.dsn], cli_env)
    assert first.returncode == 0, first.stderr
    head = runner.head_revision()
    assert f"schema upgraded empty -> {head}" in first.stdout
    second = run(["db", "upgrade", "--database-url", scratch_db.dsn], cli_env)
    assert second.returncode == 0, second.stderr
    assert f"schema already at {head}" in second.stdout
    env = {**cli_env, "DEXNODE_DATABASE_URL": scratch_db.dsn}  # the same setting from the environment
    status = run(["db", "status"], env)
    assert status.returncode == 0, status.stderr
    assert f"schema revision: {head} (code head {head}, up to date)" in status.stdout
    assert "dex_trades" in status.stdout


def test_embedded_default_starts_reuses_and_stops(cli_env: dict[str, str], tmp_path: Path) -> None:
    data = Path(cli_env["DEXNODE_DATA_DIR"])
    up = run(["db", "upgrade"], cli_env)
    assert up.returncode == 0, up.stderr
    assert f"upgraded empty -> {runner.head_revision()}" in up.stdout
    assert (data / "postgres" / "PG_VERSION").exists()
    assert not (data / "postgres" / "postmaster.pid").exists()  # stopped cleanly on exit
    status = run(["db", "status"], cli_env)  # reuses the same cluster: the schema is still there
    assert status.returncode == 0, status.stderr
    assert "embedded" in status.stdout and "up to date" in status.stdout


@pytest.mark.parametrize(
    ("args", "env_extra", "code", "message"),
    [
        (
            ["db", "status", "--database-url", "mysql://root@localhost/x"],
            {},
            2,
            "must start with postgresql://",
        ),
        (
            ["db", "status", "--database-url", "postgresql://u@127.0.0.1:1/x"],
            {},
            1,
            "cannot connect to the database",
        ),
        (["db", "status", "--data-dir", "/proc/dexnode-cannot-write"], {}, 2, "is not writable"),
        (["db", "status"], {"DEXNODE_CONFIRMATIONS": "many"}, 2, "DEXNODE_CONFIRMATIONS"),
        (["db", "status"], {"DEXNODE_RPC_WS": "http://x"}, 2, "ws:// or wss://"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli_env: dict[str, str], args: list[str], env_extra: dict[str, str], code: int, message: str
) -> None:
    res = run(args, {**cli_env, **env_extra})
    assert res.returncode == code
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("dexnode:")]
    assert len(lines) == 1 and message in lines[0], res.stderr
