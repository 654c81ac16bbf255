"""The configuration file (``dexnode.toml``): every setting a flag or ``DEXNODE_*`` variable sets, in TOML.

Precedence is flag > environment > file > default: ``load_settings`` builds the one ``Settings`` with the
file as the lowest source (``core.settings`` puts it below the environment), so the rest of the code
never knows where a value came from.

Names: a setting is its ``DEXNODE_*`` variable lower-cased without the prefix, either at the top level
(``rpc_http = "..."``) or split at its first word into a table (``[rpc]`` ``http = "..."``; ``[api]``
``port = 8000``; ``[kafka]`` ``bootstrap_servers``). Three tables are more than a prefix:

- ``[kafka.librdkafka]``: librdkafka settings by their own dotted names (``"sasl.mechanism" = "PLAIN"``);
- ``[plugins]``: protocol plugins' settings (``uniswap_v4_pool_managers = "..."``);
- ``[cex.<exchange>]``: per exchange ``symbols``, ``ws_url``, ``rest_url`` (a list or a comma-separated
  string for ``symbols``); ``[cex]`` ``exchanges``, ``symbols``, ``feeds`` for all of them.

A list where a setting takes comma-separated text is joined with commas. Errors name the file and the
key, never the value (it may be a key or a password): an unknown key with a "did you mean", a wrong type,
a bad URL, an unknown exchange — each a ``ConfigError``.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from core.errors import ConfigError
from core.settings import Settings, build_settings

DEFAULT_CONFIG = Path("dexnode.toml")
# tables whose keys are not settings' name parts
_LIBRDKAFKA, _PLUGINS, _CEX = "librdkafka", "plugin_settings", "cex"
_EXCHANGE_KEYS = {"symbols": None, "ws_url": {"ws", "wss"}, "rest_url": {"http", "https"}}
# set by the loader itself, never by the file
_NOT_IN_FILE = {"config", _LIBRDKAFKA, _PLUGINS}


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    values: dict[str, Any]  # Settings field -> value, as Settings takes it
    keys: dict[str, str] = field(default_factory=dict)  # Settings field -> the key as written in the file


def _fields() -> dict[str, Any]:
    return {name: f for name, f in Settings.model_fields.items() if name not in _NOT_IN_FILE}


def _valid_keys(exchanges: Iterable[str]) -> list[str]:
    """Every key the file accepts, in its dotted form (for "did you mean")."""
    keys = []
    for name in _fields():
        keys.append(name)
        head, _, rest = name.partition("_")
        if rest:
            keys.append(f"{head}.{rest}")
    keys += ["kafka.librdkafka", "plugins"]
    keys += [f"cex.{ex}.{k}" for ex in exchanges for k in _EXCHANGE_KEYS]
    return keys


def _text(value: Any, where: str, path: Path) -> str:
    """A TOML scalar or list as the text a setting takes (lists joined with commas)."""
    if isinstance(value, list):
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{path}: {where}: a list of strings expected")
        return ",".join(str(v) for v in value)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{path}: {where}: text expected, got a {_toml_type(value)}")


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "table"
    return {str: "string", int: "integer", float: "float", list: "array"}.get(type(value), "value")


class _Reader:
    def __init__(self, path: Path, exchanges: Iterable[str] | None) -> None:
        self.path = path
        self.exchanges = sorted(exchanges) if exchanges is not None else None
        self.fields = _fields()
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.librdkafka: dict[str, str] = {}
        self.plugins: dict[str, str] = {}

    def unknown(self, key: str) -> ConfigError:
        hint = difflib.get_close_matches(key, _valid_keys(self.exchanges or []), n=1, cutoff=0.6)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        return ConfigError(f"{self.path}: unknown key {key!r}{more}")

    def set(self, name: str, value: Any, key: str) -> None:
        if name in self.keys:
            raise ConfigError(f"{self.path}: {key!r} is set twice (also as {self.keys[name]!r})")
        if isinstance(value, dict):
            raise ConfigError(f"{self.path}: {key}: a value expected, got a table")
        annotation = str(self.fields[name].annotation)
        if isinstance(value, list) and "list" not in annotation and "dict" not in annotation:
            value = _text(value, key, self.path)
        self.values[name], self.keys[name] = value, key

    def table(self, doc: Mapping[str, Any], prefix: str = "") -> None:
        for key, value in doc.items():
            dotted = f"{prefix}.{key}" if prefix else key
            name = dotted.replace(".", "_")
            if dotted == "plugins":
                self.plugin_table(value, dotted)
            elif dotted == "kafka.librdkafka":
                self.librdkafka_table(value, dotted)
            elif dotted.startswith("cex.") and isinstance(value, dict) and name not in self.fields:
                self.exchange_table(key, value, dotted)
            elif name in self.fields:
                self.set(name, value, dotted)
            elif isinstance(value, dict) and any(f.startswith(name + "_") for f in self.fields):
                self.table(value, dotted)
            else:
                raise self.unknown(dotted)

    def plugin_table(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: {where}: a table expected")
        for key, item in value.items():
            self.plugins[key.lower()] = _text(item, f"{where}.{key}", self.path)

    def librdkafka_table(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: {where}: a table of librdkafka settings expected")
        for key, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"
            self.librdkafka[key] = _text(item, f"{where}.{key}", self.path)

    def exchange_table(self, exchange: str, value: dict[str, Any], where: str) -> None:
        self.check_exchange(exchange, where)
        for key, item in value.items():
            if key not in _EXCHANGE_KEYS:
                raise self.unknown(f"{where}.{key}")
            text = _text(item, f"{where}.{key}", self.path)
            schemes = _EXCHANGE_KEYS[key]
            if schemes is not None and _scheme(text) not in schemes:
                raise ConfigError(
                    f"{self.path}: {where}.{key}: must be a {' or '.join(sorted(s + '://' for s in schemes))}"
                    " URL"
                )
            self.plugins[f"cex_{exchange.replace('-', '_')}_{key}"] = text

    def check_exchange(self, name: str, where: str) -> None:
        if self.exchanges is None or name in self.exchanges:
            return
        hint = difflib.get_close_matches(name, self.exchanges, n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{self.path}: {where}: unknown exchange {name!r}{more}; known: {', '.join(self.exchanges)}"
        )

    def result(self) -> ConfigFile:
        if "cex_exchanges" in self.values:
            for name in str(self.values["cex_exchanges"]).split(","):
                if name.strip():
                    self.check_exchange(name.strip(), self.keys["cex_exchanges"])
        values = dict(self.values)
        if self.librdkafka:
            values[_LIBRDKAFKA] = self.librdkafka
        if self.plugins:
            values[_PLUGINS] = self.plugins
        return ConfigFile(self.path, values, self.keys)


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


def read_config_file(path: Path, *, exchanges: Iterable[str] | None = None) -> ConfigFile:
    """Parse and check ``path``; ``exchanges``: the exchange names ``[cex]`` may use (None: unchecked)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    reader = _Reader(path, exchanges)
    reader.table(doc)
    config = reader.result()
    _check_types(config)
    return config


def _check_types(config: ConfigFile) -> None:
    """Validate the file's values alone, so a wrong one is reported by its key in the file (the
    environment's own mistakes are reported by ``build_settings``, naming the variable)."""
    try:
        Settings.model_validate(config.values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"] or str(err["loc"][0]) not in config.values:
                continue  # the environment's: reported when the settings are built
            name = str(err["loc"][0])
            key = config.keys.get(name, "kafka.librdkafka" if name == _LIBRDKAFKA else "plugins")
            # the message only: pydantic's text around it would quote the value, maybe a secret
            problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
        if problems:
            raise ConfigError(f"{config.path}: " + "; ".join(problems)) from None


def config_path(flag: Path | None, from_env: Path | None) -> Path | None:
    """The file to read: ``--config``, else ``DEXNODE_CONFIG``, else ``./dexnode.toml`` if present."""
    if flag is not None:
        return flag
    if from_env is not None:
        return from_env
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(
    config: Path | None = None, *, exchanges: Iterable[str] | None = None, **flags: Any
) -> Settings:
    """The one ``Settings``: ``flags`` (None = not given) over the environment over the configuration
    file over the defaults. ``config`` is ``--config``; unset, ``DEXNODE_CONFIG`` or ``./dexnode.toml``."""
    given = {k: v for k, v in flags.items() if v is not None}
    plain = build_settings(**given)  # the environment and flags alone: where is the file?
    path = config_path(config, plain.config)
    if path is None:
        return plain
    file = read_config_file(path, exchanges=exchanges)
    return build_settings(file_values=file.values, **{**given, "config": path})
