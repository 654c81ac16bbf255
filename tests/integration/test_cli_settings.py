"""A flag wins over its ``DEXNODE_*`` variable, as a user sees it: the real ``dexnode`` in a subprocess."""

from __future__ import annotations

import socket
import subprocess

import pytest

from core.database import DatabaseInfo
from tests.conftest import dexnode_bin

pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dexnode_bin(), *args], env={**env, **extra}, capture_output=True, text=True, timeout=120
    )


def one_error_line(res: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert res.returncode == exit_code, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    ours = [line for line in res.stderr.splitlines() if line.startswith("dexnode:")]
    assert len(ours) == 1 and res.stderr.rstrip().endswith(ours[0]), res.stderr
    return ours[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("variable", "flag"),
    [("DEXNODE_MAX_REORG_DEPTH", "--max-reorg-depth"), ("DEXNODE_RPC_BATCH_SIZE", "--rpc-batch-size")],
)
def test_follow_takes_its_settings_as_flags_over_the_variables(
    cli_env: dict[str, str], variable: str, flag: str
) -> None:
    # the variable is valid: only the flag's 0 can be what is refused
    line = one_error_line(run(["follow", flag, "0"], cli_env, **{variable: "5"}), 2)
    assert f"{variable} / {flag}" in line and "greater than or equal to 1" in line


def test_backfill_and_consume_refuse_a_bad_flag_in_one_line(cli_env: dict[str, str]) -> None:
    refused = run(["backfill", "--from", "0", "--rpc-batch-size", "0"], cli_env, DEXNODE_RPC_BATCH_SIZE="50")
    assert "--rpc-batch-size" in one_error_line(refused, 2)
    bad_option = run(["consume", "head.blocks", "--kafka-option", "client.id"], cli_env)
    assert "--kafka-option must be NAME=VALUE" in one_error_line(bad_option, 2)


def test_a_database_flag_wins_over_the_variable(scratch_db: DatabaseInfo, cli_env: dict[str, str]) -> None:
    port = closed_port()
    nowhere = f"postgresql://nobody@127.0.0.1:{port}/none"
    res = run(["db", "status", "--database-url", scratch_db.dsn], cli_env, DEXNODE_DATABASE_URL=nowhere)
    assert res.returncode == 0, res.stderr
    assert "(server, PostgreSQL" in res.stdout and f":{port}" not in res.stdout


def test_log_level_flag_wins_over_the_variable(scratch_db: DatabaseInfo, cli_env: dict[str, str]) -> None:
    """A node that never answers: the client's retry warnings are logged at WARNING, which the
    variable (ERROR) hides and the flag shows; the run ends with one line, exit 1."""
    node = f"http://127.0.0.1:{closed_port()}"
    args = ["--log-level", "warning", "follow", "--rpc-http", node, "--database-url", scratch_db.dsn]
    res = run(args, cli_env, DEXNODE_LOG_LEVEL="ERROR")
    one_error_line(res, 1)
    assert "WARNING dexnode.rpc: retry 1/5" in res.stderr
    bad = run(["--log-level", "loud", "db", "status"], cli_env)
    assert "DEXNODE_LOG_LEVEL / --log-level" in one_error_line(bad, 2)
