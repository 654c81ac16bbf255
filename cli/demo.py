"""``dexnode demo``: the whole node running live on this machine, until Ctrl-C.

1. the database: embedded PostgreSQL in ``<data_dir>/demo`` (apart from a real node's data), or the
   ``--database-url`` one, at the schema's head and emptied of chain and exchange data (each demo starts
   a new chain);
2. a devnet: anvil with the official Uniswap v2, a v2 fork (sushiswap) and v3 contracts and ``blocks``
   blocks of seeded history, kept live by ``devnet.live.LiveDevnet``: a block of swaps, liquidity
   changes and transfers every ~1.5 s and a reorg of depth 1-3 every 30-60 s;
3. local exchange servers (``devnet.exchanges.live``) with generated live markets for ETH-USDT and
   BTC-USDT on Binance, OKX and Kraken, each speaking its exchange's protocol;
4. ``cli.node.run_node`` (what ``dexnode run`` runs) against all of them: backfill of the devnet's
   history, the follower, the CEX feeds, the API with the dashboard at ``/``.

SIGINT/SIGTERM (or ``--duration`` seconds) stops it in order: the node (block in flight, websockets
closed, feeds), the live devnet, the exchange servers, anvil, then the embedded PostgreSQL. A second
signal cancels what still runs (the same clean-ups run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
import typer

from cli.common import ApiPortOpt, DatabaseUrlOpt, DataDirOpt, run_loop, settings_of
from cli.node import listen_socket, run_node
from core.database import DatabaseInfo, open_database
from core.settings import Settings
from devnet import Devnet
from devnet.exchanges.live import DEFAULT_SYMBOLS, LIVE_SERVERS, LiveServer, live_server
from devnet.live import LiveDevnet, LiveOptions, Singletons
from migrations import runner
from records import kinds

log = logging.getLogger("dexnode.demo")

# what a demo empties: every chain and exchange kind's table, and where streams stand
_KIND_TABLES = tuple(dict.fromkeys(k.table for k in (*kinds.CHAIN, *kinds.CEX)))
_PROGRESS_TABLES = ("cursors", "backfill_chunks")
DEFAULT_EXCHANGES = ("binance", "okx", "kraken")


def venue_settings(manifest: dict[str, Any]) -> tuple[str, str]:
    """The devnet's factories as the indexer's venue configuration (DEXNODE_UNISWAP_V2/V3_FACTORIES)."""
    v2 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 2)
    v3 = ",".join(f"{e['factory']}={e['label']}" for e in manifest["exchanges"] if e["version"] == 3)
    return v2, v3


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None = None  # seconds; None: until a signal
    blocks: int = 120  # seeded history before the chain goes live
    exchanges: Sequence[str] = DEFAULT_EXCHANGES
    symbols: Sequence[str] = DEFAULT_SYMBOLS
    seed: int = 1
    live: LiveOptions = field(default_factory=LiveOptions)
    market_interval: float = 0.1  # seconds between two steps of an exchange's markets


def demo_settings(settings: Settings) -> Settings:
    """The demo's own embedded database (``<data_dir>/demo``) unless a database URL is given."""
    return settings if settings.database_url else settings.with_overrides(data_dir=settings.data_dir / "demo")


def node_settings(
    settings: Settings,
    devnet: Devnet,
    servers: dict[str, LiveServer],
    options: DemoOptions,
    plugins: dict[str, str] | None = None,
) -> Settings:
    """``dexnode run``'s settings pointing at the devnet (and its singleton venues, ``plugins``) and the
    local exchange servers."""
    v2, v3 = venue_settings(devnet.manifest)
    endpoints = {**settings.plugin_settings, **(plugins or {})}
    for name, server in servers.items():
        # Binance's combined streams live under /stream; the others at the root
        endpoints[f"cex_{name}_ws_url"] = server.url + ("/stream" if name == "binance" else "")
        endpoints[f"cex_{name}_rest_url"] = server.rest_url
    return settings.with_overrides(
        rpc_http=devnet.rpc_http,
        rpc_ws=devnet.rpc_ws,
        uniswap_v2_factories=v2,
        uniswap_v3_factories=v3,
        backfill_from=0,
        cex_exchanges=",".join(servers) or None,
        cex_symbols=",".join(options.symbols),
        cex_feeds="trades,book",
        plugin_settings=endpoints,
    )


async def _empty(db: DatabaseInfo) -> None:
    await runner.upgrade(db.sqlalchemy_url)
    conn = await asyncpg.connect(db.dsn)
    try:
        await conn.execute("TRUNCATE " + ", ".join((*_KIND_TABLES, *_PROGRESS_TABLES)))
    finally:
        await conn.close()


def _signals(stop: asyncio.Event) -> list[signal.Signals]:
    """First SIGINT/SIGTERM: stop in order. Second: cancel what still runs (clean-ups still run)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    received = [0]

    def on_signal(sig: signal.Signals) -> None:
        received[0] += 1
        if received[0] == 1:
            typer.echo(f"\n{sig.name}: stopping the demo (send it again to force)", err=True)
            stop.set()
        elif main is not None:
            main.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no signals
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    return installed


async def run_demo(settings: Settings, options: DemoOptions | None = None) -> None:
    options = options or DemoOptions()
    unknown = [e for e in options.exchanges if e not in LIVE_SERVERS]
    if unknown:
        raise typer.BadParameter(
            f"no live market for {', '.join(unknown)}; choose from {', '.join(LIVE_SERVERS)}"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = _signals(stop)
    if options.duration is not None:
        loop.call_later(options.duration, stop.set)
    settings = demo_settings(settings)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await _run(settings, options, stack, stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    typer.echo("demo stopped: node, exchange servers, anvil and the database are down.")


async def _run(
    settings: Settings, options: DemoOptions, stack: contextlib.AsyncExitStack, stop: asyncio.Event
) -> None:
    # the API's port first: a taken port is one clear error before anything starts, not after the devnet
    listen_socket(settings.api_host, settings.api_port).close()
    # one database handle for the whole demo: the embedded server stays up between emptying and the node
    db = await stack.enter_async_context(open_database(settings))
    where = f"embedded PostgreSQL in {settings.data_dir / 'postgres'}" if db.embedded else db.display
    typer.echo(f"demo: database {where} (emptied: each demo indexes a new chain)")
    await _empty(db)
    devnet_dir = settings.data_dir / "devnet"
    shutil.rmtree(devnet_dir, ignore_errors=True)
    typer.echo(
        f"demo: devnet: anvil + Uniswap v2, sushiswap, v3, v4 and Balancer v2, {options.blocks} blocks"
        " of history ..."
    )
    # the compiled test token is kept between demos (solc-js takes ~4 s); the chain itself is new each time
    cache = settings.data_dir / "devnet-cache"
    devnet = await asyncio.to_thread(
        Devnet.start, devnet_dir, seed=options.seed, blocks=options.blocks, cache_dir=cache
    )
    stack.callback(devnet.stop)  # anvil: stopped after everything that uses it
    singletons = await asyncio.to_thread(Singletons, devnet)  # Uniswap v4 and Balancer v2 beside them
    servers: dict[str, LiveServer] = {}
    for name in options.exchanges:
        server = live_server(name, options.symbols, seed=options.seed, interval=options.market_interval)
        await server.start()
        stack.push_async_callback(server.stop)
        servers[name] = server
    live = LiveDevnet(devnet, options.live, singletons=singletons)
    await asyncio.to_thread(live.start)
    stack.push_async_callback(asyncio.to_thread, live.stop)  # first to stop once the node has
    if stop.is_set():
        return
    opts = options.live
    reorgs = (
        f"a reorg of depth {opts.reorg_depth[0]}-{opts.reorg_depth[1]} every"
        f" {opts.reorg_every[0]:.0f}-{opts.reorg_every[1]:.0f} s"
        if opts.reorgs
        else "no reorgs"
    )
    markets = ", ".join(f"{name} {server.url}" for name, server in servers.items())

    def ready(banner: str) -> None:
        typer.echo(banner)
        typer.echo(f"  devnet     {devnet.rpc_http}: a block every {opts.block_interval:g} s, {reorgs}")
        typer.echo(f"  exchanges  {markets or 'none'} ({', '.join(options.symbols)}, generated live)")
        until = f"for {options.duration:g} s" if options.duration is not None else "until Ctrl-C"
        typer.echo(f"demo: running {until}; open the dashboard URL above.")

    node = node_settings(settings, devnet, servers, options, singletons.plugin_settings())
    await run_node(node, stop=stop, quiet=True, on_ready=ready)
    log.info("live devnet: %d blocks, %d reorgs, %d errors", live.stats.blocks, len(live.stats.reorgs),
             live.stats.errors)  # fmt: skip


def parse_range(text: str, what: str) -> tuple[float, float]:
    """``30-60`` or ``45`` -> (30.0, 60.0) / (45.0, 45.0)."""
    low, _, high = text.partition("-")
    try:
        values = (float(low), float(high or low))
    except ValueError:
        raise typer.BadParameter(f"{what}: expected N or LOW-HIGH, got {text!r}") from None
    return values


def demo_command(
    ctx: typer.Context,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="stop after this many seconds (default: run until Ctrl-C)"),
    ] = None,
    api_port: ApiPortOpt = None,
    blocks: Annotated[int, typer.Option("--blocks", help="blocks of seeded history before going live")] = 120,
    exchanges: Annotated[
        str, typer.Option("--exchanges", help=f"live exchange servers to run, of {','.join(LIVE_SERVERS)}")
    ] = ",".join(DEFAULT_EXCHANGES),
    symbols: Annotated[str, typer.Option("--symbols", help="symbols each exchange trades")] = ",".join(
        DEFAULT_SYMBOLS
    ),
    block_interval: Annotated[float, typer.Option("--block-interval", help="seconds between blocks")] = 1.5,
    reorg_every: Annotated[
        str, typer.Option("--reorg-every", help="seconds between reorgs, LOW-HIGH (0: no reorgs)")
    ] = "30-60",
    reorg_depth: Annotated[str, typer.Option("--reorg-depth", help="reorg depth, LOW-HIGH")] = "1-3",
    seed: Annotated[int, typer.Option("--seed", help="seed of the chain's activity and the markets")] = 1,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The node live on this machine: a devnet with ongoing trades and reorgs, local exchanges with live
    markets, and `dexnode run` against them, with the dashboard; Ctrl-C stops all of it. Its embedded
    database is <data-dir>/demo; with --database-url, dexnode's tables there are emptied first."""
    settings = settings_of(ctx, database_url=database_url, data_dir=data_dir, api_port=api_port)
    low, high = parse_range(reorg_depth, "--reorg-depth")
    live = LiveOptions(
        block_interval=block_interval,
        reorg_every=parse_range(reorg_every, "--reorg-every"),
        reorg_depth=(int(low), int(high)),
        seed=seed,
    )
    options = DemoOptions(
        duration=duration,
        blocks=blocks,
        exchanges=tuple(e.strip() for e in exchanges.split(",") if e.strip()),
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip()),
        seed=seed,
        live=live,
    )
    try:
        run_loop(run_demo(settings, options))
    except asyncio.CancelledError:  # a second Ctrl-C: what still ran was cancelled, clean-ups done
        typer.echo("dexnode demo: forced to stop", err=True)
        raise SystemExit(130) from None
