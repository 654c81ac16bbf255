"""The plugin seam: plugins are discovered, configured by their own settings, and nothing in the
registry or the pipeline names a protocol."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import build_settings
from indexer.pipeline.dex import registry_for, registry_from
from protocols.plugins import discover
from protocols.uniswap.v2 import DEFAULT_V2_VENUES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "0x" + "12" * 20
V2_PAIR_CREATED = "0x0d3648bd0f6ba80134a33ba9275ac585d9d315f0ad8355cddefde31afa28d0e9"


def test_every_protocol_module_registers_itself() -> None:
    plugins = {p.name: p for p in discover()}
    assert {"uniswap-v2", "uniswap-v3"} <= set(plugins)
    assert plugins["uniswap-v2"].setting == "uniswap_v2_factories"
    assert plugins["uniswap-v3"].setting == "uniswap_v3_factories"
    assert len({p.setting for p in plugins.values()}) == len(plugins)  # one setting each


def code_words(path: str) -> set[str]:
    """Identifiers, imported names and string constants of a module: its code, without docstrings
    and comments (which may give protocols as examples)."""
    tree = ast.parse((ROOT / path).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.alias):
            words.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            words.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    return {w.lower() for w in words}


@pytest.mark.parametrize("path", ["protocols/registry.py", "protocols/plugins.py", "indexer/pipeline/dex.py"])
def test_the_registry_and_the_pipeline_name_no_protocol(path: str) -> None:
    for word in code_words(path):
        for name in ("uniswap", "balancer", "v2", "v3", "v4"):
            assert name not in word, f"{path}: {word!r} names a protocol"


def test_settings_name_only_the_two_historic_protocol_settings() -> None:
    names = {w for w in code_words("core/settings.py") if w.isidentifier()}  # not the help texts
    named = {w for w in names if "uniswap" in w or "balancer" in w}
    assert named <= {"uniswap_v2_factories", "uniswap_v3_factories"}


def test_a_plugin_setting_comes_from_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXNODE_UNISWAP_V2_FACTORIES", f"{FACTORY}=myfork:2500")
    settings = build_settings()
    assert settings.plugin_setting("uniswap_v2_factories") == f"{FACTORY}=myfork:2500"
    spec = next(s for s in registry_for(settings).protocols if s.name == "uniswap-v2")
    created = next(h for h in spec.handlers if h.topic0 == V2_PAIR_CREATED)
    assert created.event == "PairCreated"
    plugin = next(p for p in discover() if p.name == "uniswap-v2")
    assert plugin.venues(settings.plugin_setting(plugin.setting))[0].fee == 2500
    # unset: the mainnet venues
    monkeypatch.delenv("DEXNODE_UNISWAP_V2_FACTORIES")
    assert plugin.venues(build_settings().plugin_setting(plugin.setting)) == DEFAULT_V2_VENUES


def test_a_setting_that_is_no_field_reaches_plugin_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXNODE_SOME_PLUGIN_CONTRACTS", f"{FACTORY}=x")
    monkeypatch.setenv("DEXNODE_KAFKA_SASL_MECHANISM", "PLAIN")  # librdkafka's, not a plugin's
    settings = build_settings()
    assert settings.plugin_setting("some_plugin_contracts") == f"{FACTORY}=x"
    assert "kafka_sasl_mechanism" not in settings.plugin_settings
    assert settings.with_overrides(chain="other").plugin_setting("some_plugin_contracts") == f"{FACTORY}=x"


def test_positional_texts_still_configure_the_first_two_settings() -> None:
    registry = registry_from(f"{FACTORY}=fork", "")
    plugin = next(p for p in discover() if p.name == "uniswap-v2")
    assert plugin.venues(f"{FACTORY}=fork")[0].label == "fork"
    assert {s.name for s in registry.protocols} == {p.name for p in discover()}


@pytest.mark.parametrize("text", ["0x12=", "no-equals-sign", f"{FACTORY}=x:fee"])
def test_a_bad_venue_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="uniswap_v2_factories"):
        registry_from(text)


def test_v4_and_balancer_deployments_come_from_their_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    manager, vault = "0x" + "34" * 20, "0x" + "56" * 20
    plugins = {p.name: p for p in discover()}
    assert plugins["uniswap-v4"].setting == "uniswap_v4_pool_managers"
    assert plugins["balancer-v2"].setting == "balancer_v2_vaults"
    defaults = build_settings()
    assert plugins["uniswap-v4"].venues(defaults.plugin_setting("uniswap_v4_pool_managers"))[
        0
    ].pool_manager == ("0x000000000004444c5dc75cb358380d2e3de08a90")
    assert plugins["balancer-v2"].venues(defaults.plugin_setting("balancer_v2_vaults"))[0].vault == (
        "0xba12222222228d8ba445958a75a0704d566bf2c8"
    )
    monkeypatch.setenv("DEXNODE_UNISWAP_V4_POOL_MANAGERS", f"{manager.upper().replace('0X', '0x')}=my-v4")
    monkeypatch.setenv("DEXNODE_BALANCER_V2_VAULTS", f"{vault}=my-balancer")
    settings = build_settings()
    (v4,) = plugins["uniswap-v4"].venues(settings.plugin_setting("uniswap_v4_pool_managers"))
    (balancer,) = plugins["balancer-v2"].venues(settings.plugin_setting("balancer_v2_vaults"))
    assert (v4.pool_manager, v4.label, balancer.vault, balancer.label) == (
        manager,
        "my-v4",
        vault,
        "my-balancer",
    )
    registry = registry_for(settings)
    initialize = "0xdd466e674ea557f56295e2d0218a125ea4b4f0f6f3307b95f85e6110838d6438"
    handler = registry.lookup(initialize)
    assert handler is not None and handler.protocol == "uniswap-v4"
    monkeypatch.setenv("DEXNODE_BALANCER_V2_VAULTS", f"{vault}=x:1")
    with pytest.raises(ConfigError, match="balancer_v2_vaults"):
        registry_for(build_settings())
