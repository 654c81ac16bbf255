"""The ``dexnode`` command line. ``main()`` builds the one ``Settings`` and passes it down as ``ctx.obj``.

Every command accepts the settings it uses as flags (``--database-url``, ``--data-dir``, ...;
``--log-level`` before the command, for all of them); a flag overrides the matching ``DEXNODE_*``
variable. Errors dexnode understands end the command with one line on stderr and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from cli.common import (
    ApiAccessOpt,
    ApiAnonRateLimitOpt,
    ApiHostOpt,
    ApiKeysOpt,
    ApiPortOpt,
    ApiRateLimitOpt,
    ApiSqlEnabledOpt,
    ChainOpt,
    ConfigOpt,
    ConfirmationsOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    KafkaBootstrapOpt,
    KafkaOptionOpt,
    KafkaTopicPrefixOpt,
    MaxReorgDepthOpt,
    RpcBatchSizeOpt,
    RpcHttpOpt,
    RpcWsOpt,
    V2FactoriesOpt,
    V3FactoriesOpt,
    WsConnectionsPerClientOpt,
    WsMaxConnectionsOpt,
    WsMaxSubscriptionsOpt,
    configure_logging,
    run_async,
    settings_of,
    with_plugin_flags,
)
from core.config_file import load_settings
from core.errors import ConfigError, DexnodeError
from core.redact import mask_urls_in
from core.settings import build_settings


class _ExchangeNames:
    """The exchange names a configuration file's ``[cex]`` may use, for ``load_settings``: read (and
    ``cex.exchanges`` imported with its exchange modules) only when there is a file to check, so that
    ``backfill``, ``follow`` and the others do not import the CEX module at start-up."""

    def __iter__(self) -> Iterator[str]:
        from cex.exchanges import EXCHANGES

        return iter(EXCHANGES)


EXCHANGE_NAMES = _ExchangeNames()

_app = typer.Typer(
    name="dexnode",
    help="dexnode: exact, reorg-safe on-chain and CEX market data in one schema.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@_app.callback()
def root(
    ctx: typer.Context,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (env DEXNODE_LOG_LEVEL, INFO)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Options for every command; the command's own settings follow its name."""
    if config is not None:  # main() read DEXNODE_CONFIG or ./dexnode.toml; --config replaces it
        ctx.obj = load_settings(config, exchanges=EXCHANGE_NAMES)
    settings = settings_of(ctx, log_level=log_level)
    ctx.obj = settings  # the commands start from these
    configure_logging(settings.log_level)


db_app = typer.Typer(help="Database schema: apply migrations, show status.", no_args_is_help=True)
_app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Apply schema migrations (idempotent: a second run changes nothing)."""
    from cli.db import upgrade

    settings = settings_of(ctx, database_url=database_url, data_dir=data_dir)
    run_async(upgrade(settings, revision))


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision, e.g. base or -1")],
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revert schema migrations down to REVISION (``base`` drops every dexnode table)."""
    from cli.db import downgrade

    settings = settings_of(ctx, database_url=database_url, data_dir=data_dir)
    run_async(downgrade(settings, revision))


@db_app.command("status")
def db_status(ctx: typer.Context, database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None) -> None:
    """Show the database, its schema revision against the code's, and table sizes."""
    from cli.db import status

    settings = settings_of(ctx, database_url=database_url, data_dir=data_dir)
    run_async(status(settings))


@_app.command("follow")
@with_plugin_flags  # --uniswap-v4-pool-managers, --balancer-v2-vaults, ...: one per protocol plugin
def follow(
    ctx: typer.Context,
    rpc_ws: RpcWsOpt = None,
    rpc_http: RpcHttpOpt = None,
    from_block: Annotated[
        int | None, typer.Option("--from-block", help="first block on an empty database (default: head)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no per-block log line")] = False,
    silence_timeout: Annotated[
        float, typer.Option("--silence-timeout", help="seconds without a new head before reconnecting")
    ] = 60.0,
    rpc_batch_size: RpcBatchSizeOpt = None,
    max_reorg_depth: MaxReorgDepthOpt = None,
    confirmations: ConfirmationsOpt = None,
    chain: ChainOpt = None,
    kafka_bootstrap_servers: KafkaBootstrapOpt = None,
    kafka_topic_prefix: KafkaTopicPrefixOpt = None,
    kafka_option: KafkaOptionOpt = None,
    uniswap_v2_factories: V2FactoriesOpt = None,
    uniswap_v3_factories: V3FactoriesOpt = None,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Follow the chain head into Postgres, reorg-safe; resumes from the stored cursor."""
    from cli.follow import follow as run_follow

    settings = settings_of(
        ctx,
        rpc_ws=rpc_ws,
        rpc_http=rpc_http,
        rpc_batch_size=rpc_batch_size,
        max_reorg_depth=max_reorg_depth,
        confirmations=confirmations,
        chain=chain,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topic_prefix,
        kafka_option=kafka_option,
        uniswap_v2_factories=uniswap_v2_factories,
        uniswap_v3_factories=uniswap_v3_factories,
        database_url=database_url,
        data_dir=data_dir,
    )
    follow = run_follow(settings, from_block=from_block, quiet=quiet, silence_timeout=silence_timeout)
    run_async(follow, realtime=True)


@_app.command("serve")
def serve(
    ctx: typer.Context,
    host: ApiHostOpt = None,
    port: ApiPortOpt = None,
    rpc_http: RpcHttpOpt = None,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="worker processes on the port, each with its own pool and listener (one core each)",
        ),
    ] = 1,
    api_access: ApiAccessOpt = None,
    api_keys: ApiKeysOpt = None,
    api_rate_limit: ApiRateLimitOpt = None,
    api_anon_rate_limit: ApiAnonRateLimitOpt = None,
    ws_max_connections: WsMaxConnectionsOpt = None,
    ws_connections_per_client: WsConnectionsPerClientOpt = None,
    ws_max_subscriptions: WsMaxSubscriptionsOpt = None,
    api_sql_enabled: ApiSqlEnabledOpt = None,
    live_source: Annotated[
        str | None,
        typer.Option(
            "--live-source",
            help="notify|kafka: live events from Postgres LISTEN/NOTIFY or from the node's head.* topics"
            " (env DEXNODE_API_LIVE_SOURCE, notify)",
            show_default=False,
        ),
    ] = None,
    kafka_bootstrap_servers: KafkaBootstrapOpt = None,
    kafka_topic_prefix: KafkaTopicPrefixOpt = None,
    kafka_option: KafkaOptionOpt = None,
) -> None:
    """Serve the indexed data: REST under /v1, GraphQL at /graphql, websocket at /ws, /docs, /metrics."""
    from cli.serve import serve as run_serve

    settings = settings_of(
        ctx,
        api_host=host,
        api_port=port,
        rpc_http=rpc_http,
        database_url=database_url,
        data_dir=data_dir,
        api_access=api_access,
        api_keys=api_keys,
        api_rate_limit=api_rate_limit,
        api_anon_rate_limit=api_anon_rate_limit,
        ws_max_connections=ws_max_connections,
        ws_connections_per_client=ws_connections_per_client,
        ws_max_subscriptions=ws_max_subscriptions,
        api_sql_enabled=api_sql_enabled,
        api_live_source=live_source,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topic_prefix,
        kafka_option=kafka_option,
    )
    run_async(run_serve(settings, workers=workers), realtime=True)


# Commands defined in their own modules (name, module, function, takes the plugins' flags), imported
# only when run: the API, DuckDB, the devnet and the CEX feeds are half the start-up CPU of a command
# that needs none of them (`dexnode backfill`: 2.6 → 1.2 CPU-s here). ``app`` has all of them.
_COMMANDS = (
    ("backfill", "cli.backfill", "backfill_command", True),
    ("consume", "cli.consume", "consume_command", False),
    ("cex", "cli.cex", "cex_command", False),
    ("kafka-dev", "cli.consume", "kafka_dev_command", False),
    ("run", "cli.run", "run_command", True),
    ("archive", "cli.archive", "archive_command", False),
    ("query", "cli.archive", "query_command", False),
    ("export", "cli.archive", "export_command", False),
    ("replay", "cli.archive", "replay_command", False),
    ("demo", "cli.demo", "demo_command", False),
)
_ROOT_OPTIONS_WITH_VALUE = ("--log-level", "--config")


def _register(only: str | None = None) -> typer.Typer:
    """Add the commands of ``_COMMANDS`` (``only``: that one, when it is one of them; else every
    command and group) to the app, once each, in the order of the help."""
    names = [c[0] for c in _COMMANDS]
    if only not in names:
        only = None
        _mount_optional()
    present = {c.name for c in _app.registered_commands}
    for name, module, function, plugin_flags in _COMMANDS:
        if name in present or (only is not None and name != only):
            continue
        command = getattr(importlib.import_module(module), function)
        _app.command(name)(with_plugin_flags(command) if plugin_flags else command)
    return _app


def _command_in(args: list[str]) -> str | None:
    """The command named in ``args`` (after the root options), or None."""
    values = iter(args)
    for arg in values:
        if arg in _ROOT_OPTIONS_WITH_VALUE:
            next(values, None)
        elif not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str) -> typer.Typer:
    """``cli.main.app``: the app with every command (the docs generator and tests read it)."""
    if name == "app":
        return _register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _mount_optional() -> None:
    """Command groups that live in their own packages."""
    if any(group.name == "devnet" for group in _app.registered_groups):
        return
    from devnet.cli import app as devnet_app

    _app.add_typer(devnet_app, name="devnet")


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    app = _register(_command_in(given))
    try:
        # flags > DEXNODE_* > dexnode.toml > defaults; with --config, the command reads the file it names
        # (./dexnode.toml or DEXNODE_CONFIG must not be read, nor fail, first)
        named = any(arg == "--config" or arg.startswith("--config=") for arg in given)
        settings = build_settings() if named else load_settings(exchanges=EXCHANGE_NAMES)
        configure_logging(settings.log_level)
        app(args=argv, obj=settings, prog_name="dexnode")
    except ConfigError as exc:
        typer.echo(f"dexnode: {mask_urls_in(str(exc))}", err=True)
        raise SystemExit(2) from None
    except DexnodeError as exc:
        typer.echo(f"dexnode: {mask_urls_in(str(exc))}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        typer.echo("dexnode: interrupted", err=True)
        raise SystemExit(130) from None
