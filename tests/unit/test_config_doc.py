"""docs/configuration.md is generated from the code (``python -m cli.config_doc``): the committed page
must be what the generator writes now, and it must name every setting a user can set, with the flag
the command line really accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cex.exchanges import EXCHANGES
from cli import config_doc, schema_doc
from cli.main import app
from core.settings import Settings
from indexer.chain.extract import extract_receipts_only
from protocols.plugins import discover
from records import to_json

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
        expected |= {f"DEXNODE_CEX_{key}_WS_URL", f"DEXNODE_CEX_{key}_REST_URL", f"DEXNODE_CEX_{key}_SYMBOLS"}
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
    monkeypatch.setattr(schema_doc, "DOC_PATH", tmp_path / "record-schemas.md")  # never the real page
    assert config_doc.main(["--check"]) == 1
    assert config_doc.REGENERATE in capsys.readouterr().err
    config_doc.main([])
    assert config_doc.main(["--check"]) == 0


def test_committed_record_schemas_page_is_the_generated_one() -> None:
    assert schema_doc.DOC_PATH.read_text() == schema_doc.render(), (
        f"docs/record-schemas.md is out of date with records/: run `{config_doc.REGENERATE}` and commit it"
    )


def _schema_rows(page: str, record_type: str) -> dict[str, str]:
    section = page.split(f"## `{record_type}` (", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.split("\n\n`", 1)[0].splitlines():  # the record's own table, not nested ones
        if line.startswith("| `"):
            name, kind = (cell.strip() for cell in line.strip("|").split(" | "))
            rows[name.strip("`")] = kind
    return rows


def _json_matches(described: str, value: object) -> bool:
    if value is None:
        return described.endswith(" or null")
    kind = described.removesuffix(" or null")
    if kind == "number":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "string (integer)":
        return isinstance(value, str) and value.isdigit()
    if kind == "string (decimal)":
        return isinstance(value, str) and value.replace(".", "", 1).lstrip("-").isdigit()
    if kind == "string":
        return isinstance(value, str)
    if kind.startswith("array of "):
        return isinstance(value, list)
    if kind.startswith("object"):
        return isinstance(value, dict)
    return False


@pytest.mark.usefixtures("fixtures_dir")  # fails, not skips, without ../shared/fixtures
def test_record_schemas_say_what_the_encoder_writes_for_a_mainnet_block() -> None:
    """The page's JSON types against the JSON a real record encodes to (mainnet block 21925176)."""
    root = (
        Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mainnet-block-21925176-helios"
    )
    extracted = extract_receipts_only(
        json.loads((root / "block.json").read_text()), json.loads((root / "receipts.json").read_text())
    )
    page = schema_doc.render()
    samples = [extracted.block, extracted.logs[0], extracted.token_transfers[0]]
    for record in samples:
        encoded = json.loads(to_json(record))
        rows = _schema_rows(page, encoded["type"])
        assert set(rows) == set(encoded["data"]), encoded["type"]
        for name, value in encoded["data"].items():
            assert _json_matches(rows[name], value), (encoded["type"], name, rows[name], value)
    assert _schema_rows(page, "block")["base_fee_per_gas"] == "string (integer) or null"
    assert _schema_rows(page, "dex_trade")["amount_sold"] == "string (decimal) or null"
