"""docs/configuration.md is generated from the code (``python -m cli.config_doc``): the committed page
must be what the generator writes now, and it must name every setting a user can set, with the flag
the command line really accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cex.exchanges import EXCHANGES
from cli import config_doc
from cli.main import app
from core.settings import Settings
from protocols.plugins import discover

pytestmark = pytest.mark.unit


def test_committed_configuration_page_is_the_generated_one() -> None:
    committed = config_doc.DOC_PATH.read_text()
    generated = config_doc.render()
    assert committed == generated, (
        f"docs/configuration.md is out of date with core/settings.py or the commands: run "
        f"`{config_doc.REGENERATE}` and commit the result"
    )


def test_every_variable_a_user_can_set_is_on_the_page() -> None:
    page = config_doc.render()
    expected = {f"DEXNODE_{name.upper()}" for name in Settings.model_fields} - {
        "DEXNODE_LIBRDKAFKA",
        "DEXNODE_PLUGIN_SETTINGS",
    }
    expected |= {f"DEXNODE_{plugin.setting.upper()}" for plugin in discover()}
    for name in EXCHANGES:
        key = name.replace("-", "_").upper()
        expected |= {f"DEXNODE_CEX_{key}_WS_URL", f"DEXNODE_CEX_{key}_REST_URL"}
    listed = set(re.findall(r"`(DEXNODE_[A-Z0-9_]+)`", page))
    assert expected <= listed, f"missing: {sorted(expected - listed)}"
    assert "DEXNODE_UNISWAP_V4_POOL_MANAGERS" in listed and "DEXNODE_CEX_OKX_WS_URL" in listed
    assert "DEXNODE_KAFKA_<NAME>" in page


def _row(page: str, variable: str) -> list[str]:
    line = next(line for line in page.splitlines() if line.startswith(f"| `{variable}` |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_rows_carry_the_default_type_and_the_flags_the_cli_accepts() -> None:
    page = config_doc.render()
    variable, flags, kind, default, description = _row(page, "DEXNODE_API_PORT")
    assert (kind, default) == ("integer, ≥ 1, ≤ 65,535", "`8000`")
    assert flags.startswith("`--port` (") and "serve" in flags
    assert description == Settings.model_fields["api_port"].description
    _, flags, _, default, _ = _row(page, "DEXNODE_DATABASE_URL")
    assert default == "unset" and "`--database-url`" in flags and "follow" in flags
    _, flags, kind, default, _ = _row(page, "DEXNODE_LOG_LEVEL")
    assert flags == "`--log-level` (before the command)" and "`CRITICAL`" in kind and default == "`INFO`"

    # the flag the page gives for a variable really sets it on that command: an out-of-range value
    # is refused naming that variable
    runner = CliRunner()
    for variable, command in (("DEXNODE_API_PORT", "serve"), ("DEXNODE_RPC_BATCH_SIZE", "follow")):
        flag = re.findall(r"`(--[a-z-]+)`", _row(page, variable)[1])[0]
        result = runner.invoke(app, [command, flag, "0"], obj=Settings())
        assert result.exit_code != 0
        assert f"{variable} /" in str(result.exception), (command, flag, result.exception)


def test_check_mode_reports_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(config_doc.render().replace("DEXNODE_API_PORT", "DEXNODE_API_PORTX"))
    monkeypatch.setattr(config_doc, "DOC_PATH", stale)
    assert config_doc.main(["--check"]) == 1
    assert config_doc.REGENERATE in capsys.readouterr().err
    config_doc.main([])
    assert config_doc.main(["--check"]) == 0
