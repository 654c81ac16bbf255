"""``dexnode cex --exchange kraken --symbols BTC-USD``: an exchange's feeds into Postgres (and/or stdout).

Endpoints come from the exchange module unless the settings override them:
``DEXNODE_CEX_<EXCHANGE>_WS_URL`` and ``DEXNODE_CEX_<EXCHANGE>_REST_URL`` (read by ``core.settings`` like
every ``DEXNODE_*`` variable, as plugin settings), so tests and users point it at local servers or
another CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Annotated

import orjson
import typer

from cex.candles import CandleBuilder
from cex.exchange import FEEDS, Exchange, Feed
from cex.exchanges import EXCHANGES
from cex.feed import FeedHandler
from cex.kafka import CexKafka
from cex.store import CexStore
from cex.sync import Resync
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
from records.cex import Trade
from records.codec import Record, to_json
from sinks.kafka import KafkaOptions
from sinks.kafka_producer import KafkaProducer

log = logging.getLogger("dexnode.cex")
_BATCH = 2_000
_FLUSH_SECONDS = 0.25


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
    feed = FeedHandler(
        exchange,
        symbols,
        feeds,
        connections=connections,
        stale_after=stale_after,
        snapshot_every=snapshot_every if "book" in feeds else None,
    )
    async with contextlib.AsyncExitStack() as stack:
        writer: CexStore | None = None
        if store:
            db = await stack.enter_async_context(open_database(settings))
            await runner.upgrade(db.sqlalchemy_url)
            writer = await CexStore.connect(db.dsn)
            stack.push_async_callback(writer.close)
        kafka: CexKafka | None = None
        options = KafkaOptions.from_settings(settings)
        if options is not None:
            # CEX topics are not a chain's: no chain prefix unless one is set (DEXNODE_KAFKA_TOPIC_PREFIX)
            kafka = CexKafka(KafkaProducer(options.producer_config()), settings.kafka_topic_prefix or "")
            stack.push_async_callback(kafka.close)
        task = asyncio.ensure_future(feed.run())
        try:
            await _drain(feed, task, writer, kafka, echo, duration)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for i, counters in enumerate(feed.counters()["connections"]):
                log.info("%s connection %d: %s", exchange.name, i, counters)


async def _drain(
    feed: FeedHandler,
    task: asyncio.Future[None],
    writer: CexStore | None,
    kafka: CexKafka | None,
    echo: bool,
    duration: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    candles = CandleBuilder()
    pending: list[Record | Resync] = []
    last_flush = loop.time()
    while end is None or loop.time() < end:
        if task.done():
            task.result()  # a feed that stopped raises its error here
        try:
            item = await asyncio.wait_for(feed.queue.get(), _FLUSH_SECONDS)
        except TimeoutError:
            item = None
        if item is not None:
            pending.append(item)
            if isinstance(item, Trade):
                pending.extend(candles.add(item))
            if echo:
                sys.stdout.buffer.write(_line(item))
        if pending and (len(pending) >= _BATCH or loop.time() - last_flush >= _FLUSH_SECONDS):
            if kafka is not None:
                await kafka.publish(pending)  # acknowledged before it is stored
            if writer is not None:
                await writer.write(pending)
            if echo:
                sys.stdout.flush()
            pending, last_flush = [], loop.time()
    if pending and kafka is not None:
        await kafka.publish(pending)
    if pending and writer is not None:
        await writer.write(pending)


def _line(item: Record | Resync) -> bytes:
    if isinstance(item, Resync):
        data = {
            "exchange": item.exchange,
            "symbol": item.symbol,
            "reason": item.reason,
            "sequence": item.sequence,
        }
        doc = {"type": "resync", "data": data}
        return orjson.dumps(doc) + b"\n"
    return to_json(item) + b"\n"


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
