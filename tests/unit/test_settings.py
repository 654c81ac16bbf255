"""Settings once: ``core.settings`` is the one reader of the environment, and bad values name the
variable and the flag in one line."""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import build_settings, librdkafka_from_flags

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PRODUCT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
NAMES = {"environ", "environb", "getenv", "getenvb"}
# the modules allowed to touch os.environ, and why
ALLOWED = {
    "core/settings.py": "the one place settings come from",
    "sinks/kafka_dev.py": "hands its own environment (plus PYTHONPATH) to the mock broker's child process",
}


def environment_reads(source: str) -> list[int]:
    """Lines that read the process environment: ``os.environ``, ``os.getenv``, ``os.environb``, or
    ``environ``/``getenv`` imported from ``os``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in NAMES
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in NAMES for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_the_detector_finds_every_spelling() -> None:
    source = "import os\nfrom os import getenv\na = os.environ['X']\nb = os.getenv('Y')\nc = os.sep\n"
    assert sorted(environment_reads(source)) == [2, 3, 4]


def test_no_product_module_reads_the_environment_but_settings() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            name = path.relative_to(REPO).as_posix()
            if name in ALLOWED:
                continue
            offenders += [f"{name}:{line}" for line in environment_reads(path.read_text())]
    assert offenders == [], "read the environment outside core/settings.py: " + ", ".join(offenders)
    assert environment_reads((REPO / "core/settings.py").read_text())  # the allowance is still needed


def test_the_log_level_and_kafka_pass_through_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("DEXNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEXNODE_LOG_LEVEL", "warning")
    monkeypatch.setenv("DEXNODE_KAFKA_CLIENT_ID", "indexer-1")
    settings = build_settings()
    assert settings.log_level == "WARNING"
    assert settings.librdkafka == {"client.id": "indexer-1"}
    assert settings.with_overrides(log_level="debug").log_level == "DEBUG"  # --log-level wins


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"log_level": "LOUD"}, "DEXNODE_LOG_LEVEL / --log-level"),
        ({"max_reorg_depth": 0}, "DEXNODE_MAX_REORG_DEPTH / --max-reorg-depth"),
        ({"rpc_batch_size": 0}, "DEXNODE_RPC_BATCH_SIZE / --rpc-batch-size"),
        ({"rpc_http": "ftp://user:secret@node"}, "DEXNODE_RPC_HTTP / --rpc-http"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_flag_and_no_secret(
    values: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings(**values)
    assert words in str(exc.value) and "secret" not in str(exc.value)


def test_kafka_option_flags() -> None:
    assert librdkafka_from_flags(None) is None
    assert librdkafka_from_flags(["client.id=a", "sasl.password=p=q"]) == {
        "client.id": "a",
        "sasl.password": "p=q",  # only the first '=' separates
    }
    with pytest.raises(ConfigError, match="NAME=VALUE") as exc:
        librdkafka_from_flags(["sasl.password:hunter2"])  # a typo for '=' must not print the password
    assert "hunter2" not in str(exc.value)
