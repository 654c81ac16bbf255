"""``dexnode cex --exchange kraken --symbols BTC-USD``: an exchange's feeds into Postgres (and/or stdout).

Endpoints come from the exchange module unless the settings override them:
``DEXNODE_CEX_<EXCHANGE>_WS_URL`` and ``DEXNODE_CEX_<EXCHANGE>_REST_URL`` (read by ``core.settings`` like
every ``DEXNODE_*`` variable, as plugin settings), so tests and users point it at local servers or
another CDN.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated

import typer

from cex.exchange import FEEDS, Exchange, Feed
from cex.exchanges import EXCHANGES
from cex.feed import FeedHandler
from cex.kafka import CexKafka
from cex.pipeline import CexSink, run_cex_pipeline
from cex.store import CexStore
from cli.common import (
    DatabaseUrlOpt,
    DataDirOpt,
    KafkaBootstrapOpt,
    KafkaOptionOpt,
    KafkaTopicPrefixOpt,
    run_async,
    settings_of,
)
from core.database import open_database
from core.errors import ConfigError
from core.settings import Settings
from migrations import runner
from sinks.kafka import KafkaOptions
from sinks.kafka_producer import KafkaProducer

log = logging.getLogger("dexnode.cex")


def exchange_from(settings: Settings, name: str) -> Exchange:
    cls = EXCHANGES.get(name)
    if cls is None:
        raise ConfigError(f"--exchange {name!r}: not one of {', '.join(sorted(EXCHANGES))}")
    key = name.replace("-", "_")
    return cls(
        ws_url=settings.plugin_setting(f"cex_{key}_ws_url"),
        rest_url=settings.plugin_setting(f"cex_{key}_rest_url"),
    )


def parse_feeds(text: str) -> list[Feed]:
    feeds = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in feeds if f not in FEEDS]
    if unknown or not feeds:
        raise ConfigError(f"--feeds: {', '.join(unknown) or 'none given'}; choose from {', '.join(FEEDS)}")
    return feeds  # type: ignore[return-value]


# `dexnode cex --raw` and `dexnode run` with DEXNODE_CEX_RAW but no Kafka: the setting feeds the Kafka topics
# only, while the websocket's cex_raw channel (dexnode run) needs none; a user reaching for raw frames on the
# websocket must not be told to set up Kafka
RAW_NEEDS_KAFKA = (
    "DEXNODE_CEX_RAW (dexnode cex --raw) publishes raw exchange frames on the Kafka topics"
    " cex.<exchange>.raw and needs DEXNODE_KAFKA_BOOTSTRAP_SERVERS: set it, or unset DEXNODE_CEX_RAW / drop"
    " --raw. Raw frames on the websocket need no setting: subscribe to the cex_raw channel of dexnode run"
)


async def run_cex(
    settings: Settings,
    exchange: Exchange,
    symbols: list[str],
    feeds: list[Feed],
    *,
    connections: int,
    store: bool,
    echo: bool,
    duration: float | None,
    stale_after: float,
    snapshot_every: float,
) -> None:
    if settings.cex_raw and KafkaOptions.from_settings(settings) is None:
        raise ConfigError(RAW_NEEDS_KAFKA)
    feed = FeedHandler(
        exchange,
        symbols,
        feeds,
        connections=connections,
        stale_after=stale_after,
        snapshot_every=snapshot_every if "book" in feeds else None,
        raw=settings.cex_raw,
    )
    async with contextlib.AsyncExitStack() as stack:
        sinks = await open_cex_sinks(stack, settings, store=store)
        await run_cex_pipeline(feed, sinks, echo=echo, duration=duration)


async def open_cex_sinks(
    stack: contextlib.AsyncExitStack, settings: Settings, *, store: bool
) -> list[CexSink]:
    """Kafka (when configured) then Postgres (when ``store``): a batch is acknowledged by the broker
    before it is stored. Both are closed by ``stack``."""
    sinks: list[CexSink] = []
    options = KafkaOptions.from_settings(settings)
    if options is not None:
        # CEX topics are not a chain's: no chain prefix unless one is set (DEXNODE_KAFKA_TOPIC_PREFIX)
        kafka = CexKafka(KafkaProducer(options.producer_config()), settings.kafka_topic_prefix or "")
        stack.push_async_callback(kafka.close)
        sinks.append(kafka)
    if store:
        db = await stack.enter_async_context(open_database(settings))
        await runner.upgrade(db.sqlalchemy_url)
        writer = await CexStore.connect(db.dsn)
        stack.push_async_callback(writer.close)
        sinks.append(writer)
    return sinks


def cex_command(
    ctx: typer.Context,
    exchange: Annotated[str, typer.Option("--exchange", help=f"one of: {', '.join(sorted(EXCHANGES))}")],
    symbols: Annotated[str, typer.Option("--symbols", help="BASE-QUOTE[,...]; perpetuals BASE-QUOTE-PERP")],
    feeds: Annotated[
        str, typer.Option("--feeds", help=f"comma-separated: {', '.join(FEEDS)}")
    ] = "trades,book",
    connections: Annotated[int, typer.Option("--connections", min=1, help="redundant connections")] = 1,
    store: Annotated[bool, typer.Option("--store/--no-store", help="write to Postgres")] = True,
    echo: Annotated[bool, typer.Option("--print", help="print every record as a JSON line")] = False,
    duration: Annotated[float | None, typer.Option("--duration", help="stop after N seconds")] = None,
    stale_after: Annotated[
        float, typer.Option("--stale-after", help="silent seconds before reconnect")
    ] = 30.0,
    snapshot_every: Annotated[
        float, typer.Option("--snapshot-every", help="seconds between stored book snapshots")
    ] = 60.0,
    raw: Annotated[
        bool | None,
        typer.Option("--raw/--no-raw", help="every frame as received to Kafka cex.<exchange>.raw"),
    ] = None,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
    bootstrap_servers: KafkaBootstrapOpt = None,
    topic_prefix: KafkaTopicPrefixOpt = None,
    kafka_option: KafkaOptionOpt = None,
) -> None:
    """Stream an exchange's trades, books (checked, resynced), tickers, funding and open interest."""
    settings = settings_of(
        ctx,
        kafka_option=kafka_option,
        database_url=database_url,
        data_dir=data_dir,
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        cex_raw=raw,
    )
    venue = exchange_from(settings, exchange)
    symbol_list = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not symbol_list:
        raise ConfigError("--symbols: none given")
    run_async(
        run_cex(
            settings,
            venue,
            symbol_list,
            parse_feeds(feeds),
            connections=connections,
            store=store,
            echo=echo,
            duration=duration,
            stale_after=stale_after,
            snapshot_every=snapshot_every,
        )
    )
