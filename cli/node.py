"""The whole node in one asyncio process: ``run_node(settings, stop=...)``, behind ``dexnode run``
(``cli/run.py``) and the demo.

One database (embedded PostgreSQL unless a URL is set), upgraded once; then, as tasks of one event loop:

- the API (``api.app.create_app``) on uvicorn, with the live hub handed in, so websocket clients get
  live events in process (no ``NOTIFY`` round trip);
- the indexer: backfill from ``backfill_from`` to the confirmed head (``indexer.backfill.job``), then the
  follower from where it ended (``cli.follow.follow_into``), writing ``[Kafka head, Postgres, Kafka
  confirmed]`` and then the hub, which therefore only sees committed batches;
- the CEX feeds when exchanges are configured (``cex.pipeline.run_cex_pipeline``: Kafka, Postgres,
  then the hub's CEX adapter; raw frames straight to the hub's ``cex_raw`` while a client subscribes);
- optional tasks (``OPTIONAL_TASKS``: the one place to add e.g. the archiver).

Stopping (``stop`` set: ``dexnode run`` sets it on SIGINT/SIGTERM, the demo when it is done): the
follower takes no new head and finishes the block in flight; Kafka is flushed; websocket clients are
closed with 1001 "server shutting down"; feeds stop; uvicorn stops; the pool closes; the embedded
Postgres stops. A task that fails (the node unreachable past the retry policy, the database gone) is
logged and stops the node the same way, then its error is raised (a non-zero exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import typer
import uvicorn
from fastapi import FastAPI

from api.app import POOL_SIZE, create_app
from api.routes.status import register_status_source
from api.stream.cex import HubCexSink
from api.stream.hub import Hub
from api.stream.replay import PostgresStore
from api.ws import limits_of
from api.ws_transport import uvicorn_options
from cex.exchange import Exchange, Feed
from cex.exchanges import EXCHANGES
from cex.feed import FeedHandler
from cex.pipeline import FeedBooks, run_cex_pipeline
from cex.store import CexStore
from cli.cex import RAW_NEEDS_KAFKA, exchange_from, open_cex_sinks, parse_feeds
from cli.follow import follow_into
from core.database import DatabaseInfo, open_database
from core.errors import ConfigError, DexnodeError, FatalError
from core.redact import mask_url, mask_urls_in
from core.settings import Settings
from indexer.backfill.job import backfill
from indexer.chain.rpc import RpcClient
from indexer.pipeline.pipeline import Finalizing
from migrations import runner
from records.batch import Batch
from sinks.base import Sink
from sinks.kafka import KafkaOptions, with_kafka
from sinks.postgres import BlockRef, PostgresSink

log = logging.getLogger("dexnode.run")

FOLLOW_FINISH_SECONDS = 60.0  # the block in flight gets this long to be written once stopping
WS_CLOSE_SECONDS = 5.0  # websocket clients get this long to receive their close frame
# markets an exchange runs when none are configured (--exchanges binance,coinbase works as it is)
DEFAULT_SYMBOLS = {
    "": "BTC-USDT,ETH-USDT",
    "coinbase": "BTC-USD,ETH-USD",
    "kraken": "BTC-USD,ETH-USD",
    "binance_futures": "BTC-USDT-PERP,ETH-USDT-PERP",
}
SNAPSHOT_EVERY = 60.0  # seconds between stored book snapshots (as `dexnode cex`)


@dataclass
class Node:
    """What the node's tasks share (an optional task gets it)."""

    settings: Settings
    db: DatabaseInfo
    pool: asyncpg.Pool
    hub: Hub
    stop: asyncio.Event
    app: FastAPI  # the API: its metrics and /v1/status take this process's figures


NodeTask = Callable[[Node], Coroutine[Any, Any, None]]


async def _archive(node: Node) -> None:
    """Confirmed chain minutes and closed CEX minutes to Parquet (``dexnode archive``), until stopped."""
    from archive.archiver import run_archiver  # pyarrow and DuckDB: imported only when archiving

    await run_archiver(node.settings, None, once=False, stop=node.stop)


# The node's optional tasks, composed here and nowhere else: name -> (enabled by these settings?, task).
OPTIONAL_TASKS: dict[str, tuple[Callable[[Settings], bool], NodeTask]] = {
    "the archiver": (lambda settings: settings.archive_url is not None, _archive),
}


@dataclass(frozen=True)
class Venue:
    exchange: Exchange
    symbols: list[str]
    feeds: list[Feed]


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def cex_venues(settings: Settings) -> list[Venue]:
    """The exchanges to run, checked before anything starts: known names, symbols for each."""
    venues = []
    for name in _names(settings.cex_exchanges):
        if name not in EXCHANGES:
            raise ConfigError(
                f"DEXNODE_CEX_EXCHANGES / --exchanges: unknown exchange {name!r};"
                f" known: {', '.join(sorted(EXCHANGES))}"
            )
        key = name.replace("-", "_")
        given = settings.plugin_setting(f"cex_{key}_symbols") or settings.cex_symbols
        symbols = [s.upper() for s in _names(given or DEFAULT_SYMBOLS.get(name, DEFAULT_SYMBOLS[""]))]
        if not given:
            log.info("%s: no symbols configured, running %s", name, ",".join(symbols))
        venues.append(Venue(exchange_from(settings, name), symbols, parse_feeds(settings.cex_feeds)))
    return venues


class LiveSink:
    """The chain writer (Postgres, with Kafka around it when configured), then the live hub: the hub
    is written after the commit, so websocket clients never see a block Postgres does not have."""

    def __init__(self, writer: Sink, hub: Hub) -> None:
        self.writer = writer
        self.hub = hub

    async def write(self, batch: Batch) -> None:
        await self.writer.write(batch)
        await self.hub.write(batch)

    async def finalize(self, block: BlockRef) -> None:
        if isinstance(self.writer, Finalizing):  # Kafka's confirmed.* topics
            await self.writer.finalize(block)

    async def close(self) -> None:
        await self.writer.close()  # the hub is closed by the node, after the follower stopped


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the node handles signals and stops every part in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the API's port before anything starts: a busy port is one clear error, not a half-started node."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


async def _serve_api(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn exits the process when its start-up fails: here it is a failed task
        raise FatalError("the API server did not start (see the log above)") from None


async def _index(node: Node, following: asyncio.Event, *, quiet: bool, silence_timeout: float) -> None:
    """Backfill to the confirmed head (when ``backfill_from`` is set), then follow from where it ended."""
    settings = node.settings
    first = settings.backfill_from
    if first is not None and settings.confirmations == 0:
        log.warning("backfill skipped: 0 confirmations; the follower indexes from block %d itself", first)
    elif first is not None:
        await backfill(settings, from_block=first, to="confirmed", progress_tty=False)
    if node.stop.is_set():
        return
    sink = await PostgresSink.connect(node.db.dsn)
    writer = with_kafka(settings, sink)
    try:
        async with RpcClient(
            settings.rpc_http,
            max_batch_size=settings.rpc_batch_size,
            max_response_bytes=settings.rpc_max_response_bytes,
        ) as rpc:
            # the follower's RPC errors: on /metrics by kind, and in /v1/status's rpc_errors
            node.app.state.metrics.watch_rpc("follow", rpc.stats)
            register_status_source(
                node.app, "follower", lambda: {"rpc_errors": sum(rpc.stats.errors.values())}
            )
            stored = await sink.pool.fetchval("SELECT max(number) FROM blocks")
            await node.hub.start()  # the stored tip: where confirmed subscribers' watermark starts
            await follow_into(
                settings,
                rpc,
                sink,
                LiveSink(writer, node.hub),
                from_block=first if stored is None else None,
                quiet=quiet,
                silence_timeout=silence_timeout,
                stop=node.stop,
                on_start=following.set,  # from here on, stopping waits for the block in flight
            )
    finally:
        await writer.close()  # flushes Kafka; closes the Postgres sink


async def _feed(node: Node, handler: FeedHandler) -> None:
    """One exchange's feed into Kafka (when configured), then Postgres (the node's database, opened and
    upgraded once), then the hub: websocket clients see what was stored."""
    async with contextlib.AsyncExitStack() as stack:
        sinks = await open_cex_sinks(stack, node.settings, store=False)  # Kafka, when configured
        store = await CexStore.connect(node.db.dsn)
        stack.push_async_callback(store.close)
        sinks += [store, HubCexSink(node.hub)]
        await run_cex_pipeline(handler, sinks)


def banner(
    settings: Settings, db: DatabaseInfo, port: int, venues: Sequence[Venue], tasks: Sequence[str]
) -> str:
    """What the node serves and what runs, with every URL's secrets masked."""
    host = settings.api_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    web = f"http://{shown}:{port}"
    where = f"embedded PostgreSQL in {settings.data_dir / 'postgres'}" if db.embedded else mask_url(db.dsn)
    heads = settings.heads_ws_url
    cex = "; ".join(f"{v.exchange.name} {','.join(v.symbols)} ({','.join(v.feeds)})" for v in venues)
    kafka = settings.kafka_bootstrap_servers
    backfill_line = (
        f"from block {settings.backfill_from} to head - {settings.confirmations}"
        if settings.backfill_from is not None
        else "off (set --from-block to index history)"
    )
    lines = [
        f"dexnode run: the node is up{' (listening on all interfaces)' if host in ('0.0.0.0', '::') else ''}",
        f"  dashboard  {web}/",
        f"  REST docs  {web}/docs",
        f"  GraphQL    {web}/graphql",
        f"  websocket  ws://{shown}:{port}/ws",
        f"  metrics    {web}/metrics",
        f"  database   {where}",
        f"  node       {mask_url(settings.rpc_http)}, heads {mask_url(heads) if heads else 'polled'}",
        f"  backfill   {backfill_line}",
        f"  follower   on ({settings.confirmations} confirmations, reorgs up to {settings.max_reorg_depth})",
        f"  CEX        {cex or 'off'}",
    ]
    if tasks:
        lines.append(f"  also       {', '.join(tasks)}")
    if settings.config is not None:
        lines.append(f"  config     {settings.config}")
    lines.append(f"  Kafka      {mask_urls_in(kafka) if kafka else 'off'}")  # last: scripts wait for it
    return "\n".join(lines)


async def run_node(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    quiet: bool = False,
    silence_timeout: float = 60.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the node until ``stop`` is set (or a task fails: raised after the orderly stop).

    ``on_ready(banner)`` is called once the API listens (default: the banner on stdout)."""
    stop = stop or asyncio.Event()
    venues = cex_venues(settings)
    if venues and settings.cex_raw and KafkaOptions.from_settings(settings) is None:
        raise ConfigError(RAW_NEEDS_KAFKA)
    extra = {name: task for name, (enabled, task) in OPTIONAL_TASKS.items() if enabled(settings)}
    sock = listen_socket(settings.api_host, settings.api_port)
    with contextlib.closing(sock):
        async with contextlib.AsyncExitStack() as stack:
            db = await stack.enter_async_context(open_database(settings))
            await runner.upgrade(db.sqlalchemy_url)
            pool = await asyncpg.create_pool(db.dsn, min_size=1, max_size=POOL_SIZE)
            stack.push_async_callback(pool.close)
            hub = Hub(PostgresStore(pool), confirmations=settings.confirmations, limits=limits_of(settings))
            handlers = [
                FeedHandler(
                    v.exchange,
                    v.symbols,
                    v.feeds,
                    snapshot_every=SNAPSHOT_EVERY if "book" in v.feeds else None,
                    raw=settings.cex_raw,  # to cex.<exchange>.raw through the pipeline's Kafka sink
                )
                for v in venues
            ]
            for handler in handlers:  # the websocket's cex_raw: frames as received, while a client wants them
                handler.raw_listener = hub.cex.raw.attach()
            app = create_app(settings, pool=pool, hub=hub, books=FeedBooks(handlers))  # live /v1/cex/books
            node = Node(settings, db, pool, hub, stop, app)
            config = uvicorn.Config(
                app,
                log_level=settings.log_level.lower(),
                log_config=None,  # keep dexnode's logging
                access_log=False,
                proxy_headers=True,
                lifespan="on",
                timeout_graceful_shutdown=10,
                **uvicorn_options(compression=True),  # /ws: one shared frame per message (docs/api.md)
            )
            server = _Server(config)
            # uvicorn's per-connection lines ("connection open", "Started server process"): the banner
            # says what matters; they come back with --log-level DEBUG
            if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
                logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
            await _run_tasks(node, server, sock, venues, handlers, extra, quiet, silence_timeout, on_ready)


async def _run_tasks(
    node: Node,
    server: uvicorn.Server,
    sock: socket.socket,
    venues: list[Venue],
    handlers: list[FeedHandler],
    extra: dict[str, NodeTask],
    quiet: bool,
    silence_timeout: float,
    on_ready: Callable[[str], None] | None,
) -> None:
    api = asyncio.create_task(_serve_api(server, sock), name="api")
    # uvicorn has no start-up event to await, only a flag
    while not server.started and not api.done() and not node.stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    tasks: dict[asyncio.Task[None], str] = {api: "the API server"}
    following = asyncio.Event()
    indexer: asyncio.Task[None] | None = None
    others: list[asyncio.Task[None]] = []
    if server.started and not api.done():
        port = sock.getsockname()[1]
        (on_ready or typer.echo)(banner(node.settings, node.db, port, venues, list(extra)))
        indexer = asyncio.create_task(_index(node, following, quiet=quiet, silence_timeout=silence_timeout))
        tasks[indexer] = "the indexer"
        for venue, handler in zip(venues, handlers, strict=True):
            others.append(asyncio.create_task(_feed(node, handler)))
            tasks[others[-1]] = f"the {venue.exchange.name} feed"
        for name, make in extra.items():
            others.append(asyncio.create_task(make(node)))
            tasks[others[-1]] = name
    failure = await _first_failure(tasks, node.stop)
    node.stop.set()
    if indexer is not None:
        await _stop_indexer(indexer, following)
    await node.hub.close()  # websocket clients: 1001 "server shutting down"
    await _clients_gone(node.hub)
    for other in others:
        other.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    server.should_exit = True
    await asyncio.gather(api, return_exceptions=True)
    if failure is not None:
        name, exc = failure
        if isinstance(exc, DexnodeError):
            raise exc
        raise FatalError(f"{name} stopped: {exc!r}") from exc


async def _first_failure(
    tasks: dict[asyncio.Task[None], str], stop: asyncio.Event
) -> tuple[str, BaseException] | None:
    """Wait for ``stop`` or the first task to end; a task that ends before ``stop`` is a failure."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        exc = task.exception()
        name = tasks[task]
        if exc is None:
            exc = FatalError(f"{name} ended on its own")
        trace = None if isinstance(exc, DexnodeError) else exc  # ours are one clear line
        log.error("%s failed: %s; stopping the node", name, mask_urls_in(str(exc)), exc_info=trace)
        return name, exc
    return None


async def _stop_indexer(indexer: asyncio.Task[None], following: asyncio.Event) -> None:
    """Once following, the follower ends after the block in flight (it watches ``stop``). Before, the
    indexer is cancelled: a backfill chunk is one transaction (an unfinished one is rolled back and redone
    on the next start), and the follower's start-up checks write nothing."""
    if indexer.done():
        return
    if not following.is_set():
        indexer.cancel()
    done, _ = await asyncio.wait({indexer}, timeout=FOLLOW_FINISH_SECONDS)
    if not done:
        log.warning("the block in flight took over %.0fs; cancelling it", FOLLOW_FINISH_SECONDS)
        indexer.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await indexer


async def _clients_gone(hub: Hub) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WS_CLOSE_SECONDS
    # a client leaves the hub when its endpoint has sent the close frame; there is no event per client
    while hub.clients and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
