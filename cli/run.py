"""``dexnode run``: the node in one process (``cli.node.run_node``) with signals handled, and its flags:
every flag of ``follow`` and ``serve``, the CEX venues, ``--from-block`` and ``--config``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Annotated, Any

import typer

from cex.exchanges import EXCHANGES
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
    run_loop,
    settings_of,
)
from core.config_file import load_settings
from core.settings import Settings

log = logging.getLogger("dexnode.run")
FORCE_SECONDS = 5.0  # after the second signal, the most time clean-up gets before the process exits


async def run_until_signalled(settings: Settings, **options: Any) -> None:
    """``run_node`` with SIGINT/SIGTERM handled: the first stops the node in order, the second cancels
    what still runs (and exits after ``FORCE_SECONDS`` whatever is left: a cancelled database call can
    itself wait on the server), a third exits at once."""
    from cli.node import run_node  # the API, uvicorn and the CEX stack: only for this command

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None
    received = [0]

    def on_signal(sig: signal.Signals) -> None:
        received[0] += 1
        if received[0] == 1:
            log.warning("%s: stopping (send it again to force)", sig.name)
            stop.set()
        elif received[0] == 2:
            log.warning("%s again: cancelling what still runs", sig.name)
            main.cancel()
            loop.call_later(FORCE_SECONDS, _exit_now)
        else:
            _exit_now()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await run_node(settings, stop=stop, **options)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def _exit_now() -> None:
    sys.stderr.write("dexnode: forced to stop\n")
    sys.stderr.flush()
    os._exit(130)  # no clean-up left to wait for: that is what the user asked for


def run_forever(settings: Settings, **options: Any) -> None:
    try:
        run_loop(run_until_signalled(settings, **options))
    except asyncio.CancelledError:
        typer.echo("dexnode: forced to stop", err=True)
        raise SystemExit(130) from None


ExchangesOpt = Annotated[
    str | None,
    typer.Option(
        "--exchanges",
        help="run these exchanges' feeds, e.g. binance,okx (env DEXNODE_CEX_EXCHANGES; unset: no CEX)",
    ),
]
SymbolsOpt = Annotated[
    str | None,
    typer.Option(
        "--symbols",
        help="symbols for every exchange, BASE-QUOTE[,...] (env DEXNODE_CEX_SYMBOLS; per exchange"
        " DEXNODE_CEX_<EXCHANGE>_SYMBOLS, or cex.<exchange>.symbols in the configuration file; unset:"
        " BTC and ETH against USDT, or USD on coinbase and kraken)",
    ),
]
FeedsOpt = Annotated[
    str | None,
    typer.Option("--feeds", help="CEX feeds, comma-separated (env DEXNODE_CEX_FEEDS, trades,book)"),
]
FromBlockOpt = Annotated[
    int | None,
    typer.Option(
        "--from-block",
        help="backfill from this block to the confirmed head, then follow (env DEXNODE_BACKFILL_FROM;"
        " unset: follow from the stored cursor, or from the head on an empty database)",
    ),
]


def run_command(
    ctx: typer.Context,
    config: ConfigOpt = None,
    rpc_ws: RpcWsOpt = None,
    rpc_http: RpcHttpOpt = None,
    from_block: FromBlockOpt = None,
    host: ApiHostOpt = None,
    port: ApiPortOpt = None,
    exchanges: ExchangesOpt = None,
    symbols: SymbolsOpt = None,
    feeds: FeedsOpt = None,
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
    api_access: ApiAccessOpt = None,
    api_keys: ApiKeysOpt = None,
    api_rate_limit: ApiRateLimitOpt = None,
    api_anon_rate_limit: ApiAnonRateLimitOpt = None,
    ws_max_connections: WsMaxConnectionsOpt = None,
    ws_connections_per_client: WsConnectionsPerClientOpt = None,
    ws_max_subscriptions: WsMaxSubscriptionsOpt = None,
    api_sql_enabled: ApiSqlEnabledOpt = None,
) -> None:
    """Run the whole node: backfill, follower, API (REST, GraphQL, websocket, dashboard), CEX feeds, Kafka.

    Ctrl-C or SIGTERM stops it in order: the block in flight is stored, websockets are closed with a reason.
    A second one forces it.
    """
    if config is not None:  # this command's --config replaces the file main() read (root flags kept)
        root = ctx.parent.params if ctx.parent is not None else {}
        ctx.obj = load_settings(config, exchanges=EXCHANGES, log_level=root.get("log_level"))
        logging.getLogger().setLevel(ctx.obj.log_level)
    settings = settings_of(
        ctx,
        kafka_option=kafka_option,
        rpc_ws=rpc_ws,
        rpc_http=rpc_http,
        backfill_from=from_block,
        api_host=host,
        api_port=port,
        cex_exchanges=exchanges,
        cex_symbols=symbols,
        cex_feeds=feeds,
        rpc_batch_size=rpc_batch_size,
        max_reorg_depth=max_reorg_depth,
        confirmations=confirmations,
        chain=chain,
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        kafka_topic_prefix=kafka_topic_prefix,
        uniswap_v2_factories=uniswap_v2_factories,
        uniswap_v3_factories=uniswap_v3_factories,
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
    )
    run_forever(settings, quiet=quiet, silence_timeout=silence_timeout)
