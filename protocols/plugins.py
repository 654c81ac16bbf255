"""How a protocol module registers itself: a module-level ``PLUGIN`` found by walking ``protocols/``.

A plugin declares its name, its setting (``setting`` → ``DEXNODE_<SETTING>``, text
``0xADDRESS=label[:extra],...``), its mainnet venues, how one configured entry becomes a venue, and
how venues become a ``ProtocolSpec``. ``discover()`` imports every module under ``protocols/`` and
collects the ``PLUGIN`` s, so a new protocol is one new module: nothing else names it. Nothing here
reads the environment: the caller hands each plugin the text of its setting (``core.settings``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import protocols  # the package, to walk its modules (already imported: this module is inside it)
from core.errors import ConfigError
from protocols.base import ProtocolSpec

ParseVenue = Callable[[str, str, str], Any]  # (address, label, extra after ':') → venue; ValueError if bad


@dataclass(frozen=True, slots=True)
class Plugin:
    """A protocol as the registry sees it (see the module docstring)."""

    name: str  # "uniswap-v4"; unique
    setting: str  # "uniswap_v4_pool_managers": the setting's name, DEXNODE_ + upper case
    defaults: tuple[Any, ...]  # the venues on Ethereum mainnet
    parse_venue: ParseVenue
    build: Callable[[Sequence[Any]], ProtocolSpec]

    def venues(self, text: str | None) -> tuple[Any, ...]:
        """The configured venues: ``0xADDRESS=label[:extra],...``; unset or blank = mainnet defaults."""
        if text is None or not text.strip():
            return self.defaults
        venues = []
        for item in text.split(","):
            address, sep, rest = item.strip().partition("=")
            label, _, extra = rest.partition(":")
            if not sep or not label.strip():
                raise ConfigError(f"{self.setting}: {item.strip()!r}: expected 0xADDRESS=label")
            try:
                venues.append(self.parse_venue(address.strip().lower(), label.strip(), extra.strip()))
            except ValueError as exc:
                raise ConfigError(f"{self.setting}: {item.strip()!r}: {exc}") from None
        return tuple(venues)

    def spec(self, text: str | None) -> ProtocolSpec:
        return self.build(self.venues(text))


@cache
def discover() -> tuple[Plugin, ...]:
    """Every ``PLUGIN`` declared by a module under ``protocols/``, by name."""
    found: dict[str, Plugin] = {}
    for info in pkgutil.walk_packages(protocols.__path__, "protocols."):
        plugin = getattr(importlib.import_module(info.name), "PLUGIN", None)
        if isinstance(plugin, Plugin):
            if plugin.name in found:
                raise ConfigError(f"two protocol plugins named {plugin.name!r}")
            found[plugin.name] = plugin
    return tuple(found[name] for name in sorted(found))
