"""``dexnode <command>`` imports only the module of the command it runs; ``cli.main.app`` has them all."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# a fresh interpreter: this test session has imported everything already
_PROBE = """
import sys
from cli.main import _command_in, _register
app = _register(_command_in(sys.argv[1:]))
names = sorted(c.name for c in app.registered_commands)
watched = ("api.app", "duckdb", "uvicorn", "devnet", "cli.archive", "cli.demo")
heavy = sorted(m for m in watched if m in sys.modules)
print(" ".join(names) + "|" + " ".join(heavy))
"""


def probe(*args: str) -> tuple[list[str], list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], check=True, capture_output=True, text=True
    ).stdout.strip()
    names, heavy = out.split("|")
    return names.split(), heavy.split()


def test_a_backfill_registers_its_own_command_and_imports_neither_the_api_nor_the_devnet() -> None:
    names, heavy = probe("--log-level", "WARNING", "--config", "backfill", "backfill", "--from", "0")
    assert names == ["backfill", "follow", "serve"]  # the two defined in cli.main, and the one asked for
    assert heavy == []


def test_help_registers_every_command_and_the_devnet_group() -> None:
    names, heavy = probe("--help")
    assert names == sorted(
        ["follow", "serve", "backfill", "consume", "cex", "kafka-dev", "run", "archive", "query", "export",
         "replay", "demo"]
    )  # fmt: skip
    assert "devnet" in heavy and "cli.archive" in heavy


def test_the_command_is_the_first_word_after_the_root_options_and_their_values() -> None:
    from cli.main import _command_in

    assert _command_in(["backfill", "--from", "0"]) == "backfill"
    assert _command_in(["--log-level", "DEBUG", "--config", "run", "follow"]) == "follow"
    assert _command_in(["--log-level=DEBUG", "--config=x.toml", "demo"]) == "demo"
    assert _command_in(["--help"]) is None
    assert _command_in(["--log-level"]) is None


def test_cli_main_app_has_every_command_once_in_the_order_of_the_help() -> None:
    from cli import main

    first = [c.name for c in main.app.registered_commands]
    again = [c.name for c in main.app.registered_commands]  # a second access adds nothing
    assert first == again
    assert first == ["follow", "serve", "backfill", "consume", "cex", "kafka-dev", "run", "archive", "query",
                     "export", "replay", "demo"]  # fmt: skip
    assert [g.name for g in main.app.registered_groups] == ["db", "devnet"]
