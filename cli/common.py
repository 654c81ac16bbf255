"""What every command shares: the settings with the command's flags applied, the runner that turns
SIGTERM into a clean cancel, and the options for the settings (one definition each, so a setting is
spelled the same on every command that uses it)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from core.settings import LogLevel, Settings, build_settings, librdkafka_from_flags
from indexer.pipeline.dex_settings import plugin_flags

T = TypeVar("T")

# No range checks here (min=...): Settings validates every value, flag or variable, with one
# `dexnode:` line naming both; click's checks would print a usage box instead.
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="postgresql:// URL (env DEXNODE_DATABASE_URL); unset = embedded"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory (env DEXNODE_DATA_DIR, default ./.dexnode)"),
]
RpcHttpOpt = Annotated[
    str | None, typer.Option("--rpc-http", help="node JSON-RPC over HTTP (env DEXNODE_RPC_HTTP)")
]
RpcWsOpt = Annotated[
    str | None, typer.Option("--rpc-ws", help="node websocket for newHeads (env DEXNODE_RPC_WS)")
]
ApiHostOpt = Annotated[
    str | None, typer.Option("--host", help="address the API listens on (env DEXNODE_API_HOST, 127.0.0.1)")
]
ApiPortOpt = Annotated[
    int | None, typer.Option("--port", help="port the API listens on (env DEXNODE_API_PORT, 8000)")
]
RpcBatchSizeOpt = Annotated[
    int | None,
    typer.Option("--rpc-batch-size", help="most calls per JSON-RPC batch (env DEXNODE_RPC_BATCH_SIZE, 100)"),
]
ConfirmationsOpt = Annotated[
    int | None,
    typer.Option(
        "--confirmations",
        help="blocks below the head before a block counts as confirmed (env DEXNODE_CONFIRMATIONS, 12)",
    ),
]
MaxReorgDepthOpt = Annotated[
    int | None,
    typer.Option(
        "--max-reorg-depth",
        help="a deeper reorg stops the follower with an error (env DEXNODE_MAX_REORG_DEPTH, 64)",
    ),
]
ChainOpt = Annotated[
    str | None, typer.Option("--chain", help="chain name, the default topic prefix (env DEXNODE_CHAIN)")
]
KafkaBootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--kafka-bootstrap-servers",
        "--bootstrap-servers",
        help="Kafka brokers; enables the Kafka sink (env DEXNODE_KAFKA_BOOTSTRAP_SERVERS)",
    ),
]
KafkaTopicPrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--kafka-topic-prefix", help="Kafka topic prefix (env DEXNODE_KAFKA_TOPIC_PREFIX, '<chain>.')"
    ),
]
KafkaOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--kafka-option",
        help="a librdkafka setting NAME=VALUE, repeatable (env DEXNODE_KAFKA_<NAME>, e.g."
        " DEXNODE_KAFKA_SASL_MECHANISM)",
    ),
]
V2FactoriesOpt = Annotated[
    str | None,
    typer.Option(
        "--uniswap-v2-factories",
        help="v2 venues 0xFACTORY=label[:fee],... (env DEXNODE_UNISWAP_V2_FACTORIES)",
    ),
]
V3FactoriesOpt = Annotated[
    str | None,
    typer.Option(
        "--uniswap-v3-factories", help="v3 venues 0xFACTORY=label,... (env DEXNODE_UNISWAP_V3_FACTORIES)"
    ),
]

# API access control and websocket caps (api/auth.py, docs/api-websocket.md): for serve and run
ApiAccessOpt = Annotated[
    str | None,
    typer.Option(
        "--api-access",
        help="auto, on or off; auto: limits unless the client is local and no key is set"
        " (env DEXNODE_API_ACCESS, auto)",
    ),
]
ApiKeysOpt = Annotated[
    str | None,
    typer.Option(
        "--api-keys",
        help="API keys 'key1,key2=REQ_PER_MIN' for the X-API-Key header (env DEXNODE_API_KEYS; prefer the"
        " variable: a flag shows in ps)",
    ),
]
ApiRateLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--api-rate-limit", help="requests per minute per API key (env DEXNODE_API_RATE_LIMIT, 600)"
    ),
]
ApiAnonRateLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--api-anon-rate-limit",
        help="requests per minute per IP without a key, 0: a key is required"
        " (env DEXNODE_API_ANON_RATE_LIMIT, 120)",
    ),
]
WsMaxConnectionsOpt = Annotated[
    int | None,
    typer.Option(
        "--ws-max-connections",
        help="websocket connections per process (env DEXNODE_WS_MAX_CONNECTIONS, 1000)",
    ),
]
WsConnectionsPerClientOpt = Annotated[
    int | None,
    typer.Option(
        "--ws-connections-per-client",
        help="websocket connections per key or IP (env DEXNODE_WS_CONNECTIONS_PER_CLIENT, 10)",
    ),
]
WsMaxSubscriptionsOpt = Annotated[
    int | None,
    typer.Option(
        "--ws-max-subscriptions",
        help="subscriptions per websocket connection (env DEXNODE_WS_MAX_SUBSCRIPTIONS, 20)",
    ),
]
ApiSqlEnabledOpt = Annotated[
    bool | None,
    typer.Option(
        "--api-sql/--no-api-sql",
        help="enable POST /v1/sql, one read-only SELECT (env DEXNODE_API_SQL_ENABLED, off)",
        show_default=False,
    ),
]


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="configuration file, TOML (env DEXNODE_CONFIG; default ./dexnode.toml when present);"
        " flags and DEXNODE_* variables win over it",
    ),
]


def settings_of(ctx: typer.Context, *, kafka_option: list[str] | None = None, **overrides: Any) -> Settings:
    """The settings built in ``main()`` with this command's flags applied (a flag wins over its
    variable; ``--kafka-option`` wins per librdkafka name, the other ``DEXNODE_KAFKA_*`` stay)."""
    base = ctx.obj if isinstance(ctx.obj, Settings) else build_settings()
    flags = librdkafka_from_flags(kafka_option)
    if flags is not None:
        overrides["librdkafka"] = {**base.librdkafka, **flags}
    plugins = ctx.meta.get(_PLUGIN_FLAGS)  # with_plugin_flags: a plugin's flag wins over its variable
    if plugins:
        overrides["plugin_settings"] = {**base.plugin_settings, **plugins}
    return base.with_overrides(**overrides)


_PLUGIN_FLAGS = "dexnode.plugin_flags"
C = TypeVar("C", bound=Callable[..., Any])


def with_plugin_flags(command: C) -> C:
    """``command`` with a flag per protocol plugin setting that is no ``Settings`` field
    (``indexer.pipeline.dex_settings.plugin_flags``: ``--uniswap-v4-pool-managers``,
    ``--balancer-v2-vaults``, and whatever a new plugin declares), handed to ``settings_of``."""
    flags = plugin_flags()
    signature = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(
            f.setting,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[str | None, typer.Option(f.flag, help=f.help)],
        )
        for f in flags
        if f.setting not in signature.parameters
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {f.setting: kwargs.pop(f.setting, None) for f in flags}
        ctx = kwargs["ctx"] if "ctx" in kwargs else args[0]
        ctx.meta[_PLUGIN_FLAGS] = {name: value for name, value in given.items() if value is not None}
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]  # what typer reads
        parameters=[*signature.parameters.values(), *extra]
    )
    return wrapper  # type: ignore[return-value]


def run_loop(main: Coroutine[Any, Any, T], *, loop: str = "uvloop") -> T:
    """``asyncio.run(main)`` on uvloop's event loop when ``loop`` is "uvloop" (its loop, sockets and
    transports are in C: less CPU per followed block, ``bench/live_latency.py``), else on asyncio's. Both
    go through ``asyncio.Runner``: Ctrl-C cancels the main task the same way, and
    ``loop.add_signal_handler`` works on both."""
    if loop == "uvloop":
        import uvloop  # imported here: the short commands (backfill, migrate) do not pay for it

        return uvloop.run(main)
    return asyncio.run(main)


def run_async(coro: Coroutine[Any, Any, T], *, realtime: bool = False) -> T:
    """Run a command; SIGTERM cancels it like Ctrl-C, so every ``async with`` cleans up
    (the embedded Postgres is stopped, the database transaction rolled back). ``realtime`` commands
    (``follow``, ``serve``, the long-running ones) run on uvloop (``run_loop``)."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return run_loop(main(), loop="uvloop" if realtime else "asyncio")
    except asyncio.CancelledError:
        typer.echo("dexnode: terminated", err=True)
        raise SystemExit(143) from None


def configure_logging(level: LogLevel) -> None:
    """Log lines on stderr at ``level``; chatty libraries only from WARNING. Every dexnode process calls it
    (``main()``, and each ``serve --workers`` child)."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger().setLevel(level)  # not basicConfig's: it is a no-op once a handler exists
    for noisy in ("httpx", "httpcore", "websockets", "asyncio", "alembic", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
