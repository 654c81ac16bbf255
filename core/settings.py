"""One ``Settings`` for the whole node, built in ``main()`` from ``DEXNODE_*`` variables and flags.

This module is the only one that reads the environment (through pydantic-settings, and the
librdkafka pass-through below); everything else gets the ``Settings`` it is handed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.embedded_postgres import parse_shared_buffers
from core.errors import ConfigError
from core.redact import mask_url, mask_urls_in

_PG_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
DEFAULT_LOCAL_HTTP = "http://127.0.0.1:8545"
DEFAULT_LOCAL_WS = "ws://127.0.0.1:8545"
_KAFKA_ENV_PREFIX = "DEXNODE_KAFKA_"
_NOT_LIBRDKAFKA = {"BOOTSTRAP_SERVERS", "TOPIC_PREFIX"}  # dexnode's own DEXNODE_KAFKA_* settings
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


def librdkafka_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings from ``DEXNODE_KAFKA_*``: the rest of the name, lower case, ``_`` → ``.``
    (``__`` → a literal ``_``). ``DEXNODE_KAFKA_SASL_MECHANISM=PLAIN`` → ``{"sasl.mechanism": "PLAIN"}``.
    ``DEXNODE_KAFKA_BOOTSTRAP_SERVERS`` and ``DEXNODE_KAFKA_TOPIC_PREFIX`` are dexnode settings."""
    config = {}
    for name, value in environ.items():
        if not name.startswith(_KAFKA_ENV_PREFIX):
            continue
        rest = name[len(_KAFKA_ENV_PREFIX) :]
        if not rest or rest in _NOT_LIBRDKAFKA:
            continue
        config[rest.lower().replace("__", "\0").replace("_", ".").replace("\0", "_")] = value
    return config


def librdkafka_from_flags(options: list[str] | None) -> dict[str, str] | None:
    """``--kafka-option NAME=VALUE`` flags as librdkafka settings (None: none given)."""
    if not options:
        return None
    config = {}
    for option in options:
        name, eq, value = option.partition("=")
        if not eq or not name.strip():
            # the text is not echoed: it may be a password with a typo for '='
            raise ConfigError("--kafka-option must be NAME=VALUE, e.g. client.id=indexer (one has no '=')")
        config[name.strip()] = value
    return config


class _LibrdkafkaPassThrough(PydanticBaseSettingsSource):
    """Every other ``DEXNODE_KAFKA_*`` variable, as the ``librdkafka`` setting (no field to declare)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        config = librdkafka_from_env(os.environ)
        return {"librdkafka": config} if config else {}


class _PluginSettingsPassThrough(PydanticBaseSettingsSource):
    """Every ``DEXNODE_*`` variable that is no field (and no librdkafka setting), as ``plugin_settings``
    (lower-case name without the prefix → text): protocol plugins declare their own setting names
    (``protocols.plugins``), so this module needs none of them."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = set(self.settings_cls.model_fields)
        found = {
            name[len("DEXNODE_") :].lower(): value
            for name, value in os.environ.items()
            if name.startswith("DEXNODE_") and not name.startswith(_KAFKA_ENV_PREFIX)
        }
        extra = {name: value for name, value in found.items() if name not in fields}
        return {"plugin_settings": extra} if extra else {}


# The configuration file's values while ``build_settings(file_values=...)`` runs (core/config_file.py reads
# and checks the file); a context variable, so building settings stays free of shared state.
_FILE_VALUES: ContextVar[Mapping[str, Any] | None] = ContextVar("dexnode_config_file_values", default=None)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The configuration file (``dexnode.toml``): below flags and the environment, above the defaults."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEXNODE_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL; unset: an embedded PostgreSQL 16 in <data_dir>/postgres, started on"
        " demand (create your own database with LC_COLLATE 'C', as dexnode does for the embedded one)",
    )
    rpc_http: str = Field(
        default=DEFAULT_LOCAL_HTTP,
        description="node JSON-RPC over HTTP (batch requests; an Infura/Alchemy URL with its key)",
    )
    rpc_ws: str | None = Field(
        default=None,
        description="node websocket (newHeads); unset: ws://127.0.0.1:8545 beside the default local HTTP URL,"
        " else none (the head is polled at the block time)",
    )
    kafka_bootstrap_servers: str | None = Field(default=None, description="enables the Kafka sink")
    kafka_topic_prefix: str | None = Field(
        default=None, description="Kafka topic prefix (default '<chain>.')"
    )
    confirmations: int = Field(
        default=12,
        ge=0,
        le=10_000,
        description="blocks below the head before a block counts as confirmed (backfill writes only those;"
        " Kafka confirmed.* topics)",
    )
    data_dir: Path = Field(default=Path(".dexnode"), description="embedded Postgres, devnet and state")
    embedded_shared_buffers: str = Field(
        default="auto",
        description="shared_buffers of the embedded PostgreSQL (no database URL): auto (25% of memory, at"
        " most 2GB), a size such as 512MB, or off (Postgres's 128MB); applies at the server's next start",
    )
    max_reorg_depth: int = Field(
        default=64,
        ge=1,
        description="a deeper reorg stops the follower with an error rather than forking the data",
    )
    rpc_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="most calls per JSON-RPC batch (halved on its own when the node refuses a batch as too"
        " large)",
    )
    rpc_max_response_mb: int = Field(
        default=1024,
        ge=1,
        le=1_048_576,
        description="largest JSON-RPC answer read from the node, in MiB (decoded); a bigger one is dropped as"
        " it arrives, its connection closed, and retried (an endless or lying answer, not data)",
    )
    chain: str = Field(default="ethereum", description="chain name, the default Kafka topic prefix")
    uniswap_v2_factories: str | None = Field(
        default=None,
        description="v2 venues '0xFACTORY=label[:fee],...' (unset: mainnet Uniswap, Sushiswap, ...)",
    )
    uniswap_v3_factories: str | None = Field(
        default=None, description="v3 venues '0xFACTORY=label,...' (unset: mainnet Uniswap v3, ...)"
    )
    librdkafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka settings passed through: DEXNODE_KAFKA_<NAME> or --kafka-option name=value",
    )
    log_level: LogLevel = Field(default="INFO", description="logging level")
    api_host: str = Field(default="127.0.0.1", min_length=1, description="address `dexnode serve` listens on")
    api_port: int = Field(default=8000, ge=1, le=65535, description="port `dexnode serve` listens on")
    # API access control (api/auth.py, docs/api-websocket.md) and the websocket stream's limits
    api_access: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto: limits apply unless the client is local and no key is set"
    )
    api_keys: SecretStr | None = Field(
        default=None, description="API keys 'key1,key2=REQ_PER_MIN,...' (header X-API-Key)"
    )
    api_rate_limit: int = Field(default=600, ge=1, description="requests per minute per API key")
    api_anon_rate_limit: int = Field(
        default=120, ge=0, description="requests per minute per IP without a key (0: key required)"
    )
    ws_max_connections: int = Field(default=1000, ge=1, description="websocket connections per process")
    ws_connections_per_client: int = Field(default=10, ge=1, description="websocket connections per key/IP")
    ws_max_subscriptions: int = Field(default=20, ge=1, le=1000, description="subscriptions per connection")
    ws_queue_messages: int = Field(
        default=10_000, ge=10, description="unsent messages before a slow websocket client is disconnected"
    )
    ws_heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600, description="idle websocket heartbeat")
    api_live_source: Literal["notify", "kafka"] = Field(
        default="notify",
        description="where a separate `serve` hears of new blocks: Postgres NOTIFY, or Kafka head.* topics",
    )
    # POST /v1/sql (api/routes/sql.py): one parsed SELECT in a READ ONLY transaction
    api_sql_enabled: bool = Field(default=False, description="enable POST /v1/sql (read-only SELECT)")
    api_sql_timeout_ms: int = Field(
        default=5000, ge=1, le=600_000, description="statement timeout of a POST /v1/sql query (ms)"
    )
    api_sql_max_rows: int = Field(
        default=10_000, ge=1, le=1_000_000, description="rows a POST /v1/sql answer holds at most"
    )
    # the Parquet archive (archive/, docs/archive.md)
    archive_url: str | None = Field(
        default=None,
        description="where `dexnode archive` writes: a directory or fsspec URL (s3://bucket/prefix);"
        " unset: <data_dir>/archive",
    )
    archive_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="how often a running archiver looks for complete buckets"
    )
    archive_cex_grace_seconds: float = Field(
        default=10.0, ge=0, le=3600, description="a CEX minute is archived this long after it ends"
    )
    archive_compact_after_hours: float | None = Field(
        default=None,
        ge=0,
        description="merge the minute files of hours older than this into one file per hour"
        " (unset: keep minute files)",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="delete archived rows older than N days from Postgres (unset: keep everything)",
    )
    plugin_settings: dict[str, str] = Field(
        default_factory=dict,
        description="protocol plugins' settings by name, from DEXNODE_<NAME> (see protocols/plugins.py)",
    )
    # dexnode run (cli/run.py) and its configuration file (core/config_file.py)
    config: Path | None = Field(
        default=None, description="configuration file (TOML); unset: ./dexnode.toml when present"
    )
    backfill_from: int | None = Field(
        default=None,
        ge=0,
        description="`dexnode run`: backfill from this block to the confirmed head before following;"
        " unset: no backfill (the follower resumes from the stored cursor, or starts at the head)",
    )
    cex_exchanges: str | None = Field(
        default=None, description="`dexnode run`: exchanges whose feeds run, e.g. 'binance,okx' (unset: none)"
    )
    cex_symbols: str | None = Field(
        default=None,
        description="`dexnode run`: symbols for every exchange, 'BTC-USDT,...' (per exchange:"
        " DEXNODE_CEX_<EXCHANGE>_SYMBOLS)",
    )
    cex_feeds: str = Field(
        default="trades,book", min_length=1, description="`dexnode run`: CEX feeds, e.g. 'trades,book,ticker'"
    )
    cex_raw: bool = Field(
        default=False,
        description="CEX feeds also publish every websocket frame as received (with its receipt time and"
        " connection) on the Kafka topic cex.<exchange>.raw; `dexnode cex --raw`. Needs Kafka. The"
        " websocket's cex_raw channel (`dexnode run`) needs no setting",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) first, then the environment, then the configuration file; no .env or secrets files
        return (
            init_settings,
            env_settings,
            _LibrdkafkaPassThrough(settings_cls),
            _PluginSettingsPassThrough(settings_cls),
            _ConfigFileSource(settings_cls),
        )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("backfill_from", mode="before")
    @classmethod
    def _unset_backfill_from(cls, value: Any) -> Any:
        return None if value == "" else value  # DEXNODE_BACKFILL_FROM= (e.g. compose's ${X:-}) is unset

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in _PG_SCHEMES:
            raise ValueError(f"database URL must start with postgresql:// (got scheme {scheme or 'none'!r})")
        return value

    @field_validator("embedded_shared_buffers")
    @classmethod
    def _check_embedded_shared_buffers(cls, value: str) -> str:
        parse_shared_buffers(value)  # refuses a size Postgres would not take, before anything starts
        return value.strip()

    @field_validator("rpc_http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        if _scheme(value) not in {"http", "https"}:
            raise ValueError(f"RPC HTTP URL must be http:// or https:// (got {mask_url(value)!r})")
        return value

    @field_validator("rpc_ws")
    @classmethod
    def _check_ws(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if _scheme(value) not in {"ws", "wss"}:
            raise ValueError(f"RPC websocket URL must be ws:// or wss:// (got {mask_url(value)!r})")
        return value

    @property
    def heads_ws_url(self) -> str | None:
        """The websocket for newHeads: the one set, else the local node's beside the default HTTP URL
        (anvil serves both on one port), else none: a user who gives only an HTTP URL gets polling."""
        if self.rpc_ws is not None:
            return self.rpc_ws
        return DEFAULT_LOCAL_WS if self.rpc_http == DEFAULT_LOCAL_HTTP else None

    @property
    def rpc_max_response_bytes(self) -> int:
        return self.rpc_max_response_mb * 1024 * 1024

    @property
    def archive_target(self) -> str:
        """The archive's URL: ``archive_url``, else ``<data_dir>/archive``."""
        return self.archive_url or str(self.data_dir / "archive")

    def plugin_setting(self, name: str) -> str | None:
        """A protocol plugin's setting: the field of that name if there is one, else ``plugin_settings``."""
        if name in type(self).model_fields:
            value = getattr(self, name)
            return value if isinstance(value, str) else None
        return self.plugin_settings.get(name)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given (non-None) values, validated like the environment's."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        return build_settings(**{**self.model_dump(), **given})


def build_settings(*, file_values: Mapping[str, Any] | None = None, **values: Any) -> Settings:
    """Settings from the environment plus ``values``; invalid input becomes one clear ``ConfigError``.
    ``file_values``: the configuration file's, below the environment (``core.config_file.load_settings``)."""
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = mask_urls_in(err["msg"].removeprefix("Value error, "))
            if not err["loc"]:
                problems.append(msg)
                continue
            field = str(err["loc"][0])
            # the variable and the flag: the value may have come from either
            flag = "--kafka-option" if field == "librdkafka" else "--" + field.replace("_", "-")
            problems.append(f"DEXNODE_{field.upper()} / {flag}: {msg}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    finally:
        _FILE_VALUES.reset(token)
