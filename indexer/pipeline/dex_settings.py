"""The DEX registry from the settings: every protocol plugin (``protocols.plugins``), each configured by
its own setting. Nothing here names a protocol: a new plugin module is found and configured as it is."""

from __future__ import annotations

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
