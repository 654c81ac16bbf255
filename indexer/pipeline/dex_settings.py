"""The DEX registry from the settings: every protocol plugin (``protocols.plugins``), each configured by
its own setting, and the command-line flags of those settings. Nothing here names a protocol: a new
plugin module is found, configured and given its flag as it is."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from protocols.plugins import discover
from protocols.registry import Registry, registry_of


def registry_for(settings: Settings) -> Registry:
    """Every protocol plugin, each configured by its own setting (``Settings.plugin_setting``)."""
    return registry_of({p.setting: settings.plugin_setting(p.setting) for p in discover()})


def registry_from(*texts: str | None) -> Registry:
    """The older call shape: the venue texts of the plugins whose settings are ``Settings`` fields,
    in the fields' order (the Uniswap v2, then v3 factories); every other plugin on its defaults."""
    names = [name for name in Settings.model_fields if name in {p.setting for p in discover()}]
    return registry_of(dict(zip(names, texts, strict=False)))


@dataclass(frozen=True, slots=True)
class PluginFlag:
    """The command-line flag of one protocol plugin's setting (``--uniswap-v4-pool-managers`` for
    ``uniswap_v4_pool_managers``, i.e. ``DEXNODE_UNISWAP_V4_POOL_MANAGERS``)."""

    setting: str
    flag: str
    help: str


def plugin_flags() -> tuple[PluginFlag, ...]:
    """A flag for every plugin whose setting is no ``Settings`` field (those fields have flags of
    their own in the CLI), derived from the plugin's declaration: a new plugin gets its flag without
    a CLI edit. Its value reaches the plugin through ``Settings.plugin_settings``."""
    return tuple(
        PluginFlag(
            p.setting,
            "--" + p.setting.replace("_", "-"),
            f"{p.name} venues 0xADDRESS=label,... (env DEXNODE_{p.setting.upper()}; unset: mainnet)",
        )
        for p in discover()
        if p.setting not in Settings.model_fields
    )
