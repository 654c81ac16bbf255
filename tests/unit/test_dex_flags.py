"""Command-line flags of the protocol plugins' settings: ``--uniswap-v4-pool-managers`` and
``--balancer-v2-vaults`` on ``follow``, ``backfill`` and ``run`` reach the DEX registry those commands
build (an Initialize or TokensRegistered log from the flag's contract makes a pool of the flag's label;
one from the mainnet deployment is then not trusted), a flag wins over its variable, and a plugin
nobody wrote a flag for gets one from its declaration alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cli.backfill
import cli.follow
import cli.run
from cli.common import settings_of, with_plugin_flags
from cli.main import app
from core.errors import ConfigError
from core.settings import Settings
from indexer.pipeline import dex_settings
from indexer.pipeline.dex_settings import registry_for
from protocols.plugins import Plugin, discover
from records import Pool
from tests.unit import test_balancer_v2 as balancer
from tests.unit import test_v4_protocol as v4

pytestmark = pytest.mark.unit

MANAGER, VAULT = "0x" + "42" * 20, "0x" + "43" * 20
FLAGS = ["--uniswap-v4-pool-managers", f"{MANAGER}=my-v4", "--balancer-v2-vaults", f"{VAULT}=my-balancer"]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """The settings each command hands to what it runs (the follower, the backfill, the node)."""
    seen: list[Settings] = []

    async def follow(settings: Settings, **_: Any) -> None:
        seen.append(settings)

    async def backfill(settings: Settings, **_: Any) -> None:
        seen.append(settings)

    def run_forever(settings: Settings, **_: Any) -> None:
        seen.append(settings)

    monkeypatch.setattr(cli.follow, "follow", follow)
    monkeypatch.setattr(cli.backfill, "backfill", backfill)
    monkeypatch.setattr(cli.run, "run_forever", run_forever)
    for name in ("DEXNODE_UNISWAP_V4_POOL_MANAGERS", "DEXNODE_BALANCER_V2_VAULTS", "DEXNODE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield seen


def pools_made(settings: Settings) -> dict[str, tuple[str, str]]:
    """Pools the registry ``settings`` configure makes from a v4 Initialize and a Balancer
    TokensRegistered, each emitted by the flags' contracts and by the mainnet deployments."""
    registry = registry_for(settings)
    initialize = v4.initialize(v4.USDC, v4.WETH, 500, 10, v4.NO_HOOK, 2**96, 0)  # mainnet's PoolManager
    registered = balancer.event_log(
        "TokensRegistered",
        [("bytes32", balancer.pid(balancer.POOL_ID))],
        [("address[]", balancer.TOKENS), ("address[]", ["0x" + "00" * 20] * 3)],
    )  # mainnet's Vault
    logs = [initialize, v4.moved(initialize, MANAGER), registered, v4.moved(registered, VAULT)]
    made: dict[str, tuple[str, str]] = {}
    for entry in logs:
        for record in registry.decode([entry], v4.context()).records:
            if isinstance(record, Pool):
                made[entry.address] = (record.exchange, record.contract or "")
    return made


@pytest.mark.parametrize(
    "command",
    [["follow"], ["backfill", "--from", "0"], ["run"]],
    ids=["follow", "backfill", "run"],
)
def test_the_plugin_flags_reach_the_registry_of_each_command(
    captured: list[Settings], command: list[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./dexnode.toml of the checkout's
    result = CliRunner().invoke(app, [*command, *FLAGS])
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert settings.plugin_setting("uniswap_v4_pool_managers") == f"{MANAGER}=my-v4"
    assert settings.plugin_setting("balancer_v2_vaults") == f"{VAULT}=my-balancer"
    assert pools_made(settings) == {MANAGER: ("my-v4", MANAGER), VAULT: ("my-balancer", VAULT)}


def test_without_the_flags_the_mainnet_deployments_are_trusted(
    captured: list[Settings], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["follow"]).exit_code == 0
    assert pools_made(captured[0]) == {
        v4.MANAGER: ("uniswap-v4", v4.MANAGER),
        balancer.VAULT: ("balancer-v2", balancer.VAULT),
    }


def test_a_flag_wins_over_its_variable_and_the_variable_stays_for_the_other_plugin(
    captured: list[Settings], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEXNODE_UNISWAP_V4_POOL_MANAGERS", f"{'0x' + '99' * 20}=from-env")
    monkeypatch.setenv("DEXNODE_BALANCER_V2_VAULTS", f"{VAULT}=vault-from-env")
    result = CliRunner().invoke(app, ["follow", "--uniswap-v4-pool-managers", f"{MANAGER}=my-v4"])
    assert result.exit_code == 0, result.output
    made = pools_made(captured[0])
    assert made == {MANAGER: ("my-v4", MANAGER), VAULT: ("vault-from-env", VAULT)}


def test_a_bad_flag_value_is_refused_like_its_variable(
    captured: list[Settings], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked where the registry is built (the command's start), naming the setting, as the variable is."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["follow", "--balancer-v2-vaults", "not-an-address"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="balancer_v2_vaults: 'not-an-address'"):
        registry_for(captured[0])


def test_a_new_plugin_gets_its_flag_from_its_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CLI edit: a plugin with a new setting name appears as a flag on a decorated command."""
    template = next(p for p in discover() if p.name == "uniswap-v4")
    extra = Plugin("curve-ng", "curve_ng_factories", (), template.parse_venue, template.build)
    monkeypatch.setattr(dex_settings, "discover", lambda: (*discover(), extra))
    seen: list[Settings] = []

    def command(ctx: typer.Context) -> None:
        seen.append(settings_of(ctx))

    small = typer.Typer()
    small.command("follow")(with_plugin_flags(command))
    small.command("other")(lambda: None)  # two commands: typer keeps the command name
    help_text = CliRunner().invoke(small, ["follow", "--help"]).output
    assert "--curve-ng-factories" in help_text and "DEXNODE_CURVE_NG_FACTORIES" in help_text
    result = CliRunner().invoke(small, ["follow", "--curve-ng-factories", f"{MANAGER}=mine"])
    assert result.exit_code == 0, result.output
    assert seen[0].plugin_setting("curve_ng_factories") == f"{MANAGER}=mine"


@pytest.mark.parametrize("path", ["indexer/pipeline/dex_settings.py", "indexer/pipeline/dex_resolve.py"])
def test_the_modules_split_from_the_enricher_name_no_protocol(path: str) -> None:
    """The split of indexer/pipeline/dex.py keeps the seam's rule (test_dex_plugins checks dex.py)."""
    from tests.unit.test_dex_plugins import code_words

    for word in code_words(path):
        for name in ("uniswap", "balancer", "v2", "v3", "v4"):
            assert name not in word, f"{path}: {word!r} names a protocol"
