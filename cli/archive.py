"""``dexnode archive``, ``dexnode query``, ``dexnode export``, ``dexnode replay``: the Parquet archive's
commands (docs/archive.md). Replay is composed here: the archive's history (``archive.history``) fed to
the API's hub (``api.stream.history``), neither package importing the other."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import duckdb
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from api.replay import replay_app
from api.stream.history import SETTLE_SECONDS, Playback, PlayStats, moment_us
from api.stream.protocol import ProtocolError
from api.ws_transport import uvicorn_options
from archive.archiver import run_archiver
from archive.books import StartBook, books_at
from archive.history import CEX_TYPES, CHAIN_TYPES, Step, history
from archive.layout import Target
from archive.query import archived_types, connect
from cli.common import ApiHostOpt, ApiPortOpt, DatabaseUrlOpt, DataDirOpt, run_async, settings_of
from core.database import asyncpg_dsn, open_database
from core.errors import ConfigError
from core.settings import Settings

log = logging.getLogger("dexnode.archive")

ArchiveOpt = Annotated[
    str | None,
    typer.Option(
        "--archive",
        help="the archive: a directory or fsspec URL (env DEXNODE_ARCHIVE_URL, <data-dir>/archive)",
    ),
]


def parse_time(text: str, flag: str) -> int:
    """Unix seconds from ``2026-01-02T03:04`` (UTC unless an offset is given), a date, or seconds."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: not a time (ISO 8601 such as 2026-01-02T03:04, or Unix seconds)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def archive_command(
    ctx: typer.Context,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="target directory or fsspec URL (env DEXNODE_ARCHIVE_URL, <data-dir>/archive)"
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="archive what is complete now, then exit")] = False,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write confirmed chain minutes and closed CEX minutes to Parquet (keeps running without --once)."""
    settings = settings_of(ctx, database_url=database_url, data_dir=data_dir, archive_url=to)
    stats = run_async(run_archiver(settings, once=once, stop=None))
    typer.echo(f"archived {stats.buckets} buckets, {stats.rows} records, {stats.bytes} bytes")


def _print(result: duckdb.DuckDBPyRelation | duckdb.DuckDBPyConnection) -> None:
    names = [d[0] for d in result.description or []]
    table = Table(*names, show_edge=False, pad_edge=False)
    for row in result.fetchall():
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(width=250).print(table)


def query_command(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="SQL over the archive's views (block, dex_trade, trade, ...)")],
    archive: ArchiveOpt = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="write the result to this CSV file")] = None,
    parquet: Annotated[
        Path | None, typer.Option("--parquet", help="write the result to this Parquet file")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run SQL over the archive with DuckDB (one view per record type; filter on date/hour to prune)."""
    settings = settings_of(ctx, data_dir=data_dir, archive_url=archive)
    con = connect(Target(settings.archive_target))
    if not archived_types(con):
        raise ConfigError(f"the archive at {settings.archive_target} has no complete buckets yet")
    try:
        if csv is not None or parquet is not None:
            for path, fmt in ((csv, "CSV, HEADER"), (parquet, "PARQUET, COMPRESSION zstd")):
                if path is not None:
                    con.execute(f"COPY ({sql}) TO '{_literal(path)}' (FORMAT {fmt})")
                    typer.echo(f"wrote {path}")
            return
        _print(con.execute(sql))
    except duckdb.Error as exc:
        raise ConfigError(f"query failed: {exc}") from None


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")


def export_command(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help="start (ISO 8601 UTC or Unix seconds), inclusive")],
    to: Annotated[str, typer.Option("--to", help="end (ISO 8601 UTC or Unix seconds), exclusive")],
    out: Annotated[Path, typer.Option("--out", help="folder to write one file per record type into")],
    kinds: Annotated[
        str | None, typer.Option("--kinds", help="record types, e.g. dex_trade,trade (all)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    archive: ArchiveOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export the archived buckets of a time range, one flat file per record type."""
    settings = settings_of(ctx, data_dir=data_dir, archive_url=archive)
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"--format {fmt!r}: parquet or csv")
    first, end = parse_time(from_, "--from"), parse_time(to, "--to")
    if end <= first:
        raise ConfigError("--to must be after --from")
    con = connect(Target(settings.archive_target), first_minute=first // 60, last_minute=(end - 1) // 60)
    present = archived_types(con)
    wanted = present if kinds is None else [k.strip() for k in kinds.split(",") if k.strip()]
    missing = [k for k in wanted if k not in present]
    if missing:
        typer.echo(f"no archived {', '.join(missing)} in that range", err=True)
    out.mkdir(parents=True, exist_ok=True)
    option = "CSV, HEADER" if fmt == "csv" else "PARQUET, COMPRESSION zstd"
    for type_name in wanted:
        if type_name in present:
            path = out / f"{type_name}.{fmt}"
            con.execute(f"COPY (SELECT * FROM \"{type_name}\") TO '{_literal(path)}' (FORMAT {option})")
            rows = con.execute(f'SELECT count(*) FROM "{type_name}"').fetchone()
            typer.echo(f"{path}: {rows[0] if rows else 0} rows")


@dataclass(frozen=True)
class ArchiveHistory:
    """``api.stream.history.Source`` over the archive, then Postgres past it."""

    target: Target
    pool: asyncpg.Pool
    confirmations: int
    chain: str | None

    def steps(self, first_us: int, end_us: int, types: frozenset[str] | None) -> AsyncIterator[Step]:
        return history(self.target, self.pool, first_us=first_us, end_us=end_us,
                       confirmations=self.confirmations, types=types, chain=self.chain)  # fmt: skip

    async def books(self, at_us: int, exchanges: frozenset[str] | None) -> list[StartBook]:
        return await books_at(self.target, self.pool, at_us, exchanges)


async def run_replay(
    settings: Settings,
    defaults: Playback,
    *,
    announce: Callable[[str], None] = typer.echo,
    stop: asyncio.Event | None = None,
) -> list[PlayStats]:
    """Serve the API with one playback of history per websocket connection (the archive, then Postgres
    past it) until ``stop`` is set (or the process is interrupted); the finished playbacks' figures."""
    async with open_database(settings) as db:
        pool = await asyncpg.create_pool(asyncpg_dsn(db.dsn), min_size=1, max_size=8)
        try:
            source = ArchiveHistory(
                Target(settings.archive_target), pool, settings.confirmations, settings.chain
            )
            app = replay_app(settings, pool, source, defaults, CHAIN_TYPES | CEX_TYPES)
            config = uvicorn.Config(
                app,
                host=settings.api_host,
                port=settings.api_port,
                log_level="warning",
                **uvicorn_options(compression=True),
            )
            server = uvicorn.Server(config)
            # before uvicorn's serve() sets its own handler (this one, set later, would replace it)
            terminated = _note_sigterm() if stop is None else []
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()
                    raise ConfigError(f"the API could not listen on {settings.api_host}:{settings.api_port}")
                await asyncio.sleep(0.02)
            try:
                announce(
                    f"replay on ws://{settings.api_host}:{settings.api_port}/ws"
                    " (?from=&to=&speed= per connection): one playback per connection"
                )
                if stop is None:
                    await serving  # until interrupted
                else:
                    await asyncio.wait((serving, asyncio.ensure_future(stop.wait())),
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                server.should_exit = True
                await serving
            if terminated:
                raise asyncio.CancelledError  # `run_async`: "dexnode: terminated", exit 143
            played: list[PlayStats] = app.state.replay.played
            return played
        finally:
            await pool.close()


def _note_sigterm() -> list[int]:
    """SIGTERM only noted (in the list returned) from now on, where it cancelled the command
    (``run_async``). uvicorn catches it too and stops gracefully: each websocket client is sent a close
    frame, its playback ends, then the lifespan. Cancelled as well, the server was cut off mid-way: a
    ``CancelledError`` traceback from uvicorn's lifespan and one per connection (as ``serve`` had)."""
    terminated: list[int] = []
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.append, signal.SIGTERM)
    return terminated


def replay_command(
    ctx: typer.Context,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", help="default start (ISO 8601 UTC or Unix seconds), inclusive; ?from= per connection"
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="default end (ISO 8601 UTC or Unix seconds), exclusive; ?to= per connection"
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="times real time (e.g. 10); unset: as fast as clients read; ?speed="),
    ] = None,
    kinds: Annotated[
        str | None, typer.Option("--kinds", help="record types to replay, e.g. block,dex_trade,trade (all)")
    ] = None,
    wait_subscriptions: Annotated[
        int | None,
        typer.Option(
            "--wait-subscriptions",
            help="a connection's playback starts once it has this many subscriptions (?subscriptions=);"
            " unset: --settle seconds after its last subscribe",
        ),
    ] = None,
    settle: Annotated[
        float, typer.Option("--settle", help="seconds without a new subscribe before playback starts")
    ] = SETTLE_SECONDS,
    archive: ArchiveOpt = None,
    host: ApiHostOpt = None,
    port: ApiPortOpt = None,
    database_url: DatabaseUrlOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve history through the websocket API (/ws), one playback per connection (its range and speed
    from --from/--to/--speed or the URL's ?from=&to=&speed=): live protocol and cursors, chain and CEX in
    event-time order, archived buckets then stored rows past the archive. Runs until interrupted."""
    settings = settings_of(
        ctx, database_url=database_url, data_dir=data_dir, archive_url=archive, api_host=host, api_port=port
    )
    first = None if from_ is None else parse_time_us(from_, "--from")
    end = None if to is None else parse_time_us(to, "--to")
    if first is not None and end is not None and end <= first:
        raise ConfigError("--to must be after --from")
    if speed is not None and speed <= 0:
        raise ConfigError("--speed must be above 0")
    if wait_subscriptions is not None and wait_subscriptions < 1:
        raise ConfigError("--wait-subscriptions must be at least 1")
    types = None if kinds is None else frozenset(k.strip() for k in kinds.split(",") if k.strip())
    unknown = sorted((types or frozenset()) - CHAIN_TYPES - CEX_TYPES)
    if unknown:
        raise ConfigError(
            f"--kinds: unknown {', '.join(unknown)}; one of {', '.join(sorted(CHAIN_TYPES | CEX_TYPES))}"
        )
    defaults = Playback(first, end, speed, types, wait_subscriptions, settle)
    played = run_async(run_replay(settings, defaults))
    for stats in played:
        rate = stats.messages / stats.seconds if stats.seconds else 0.0
        typer.echo(
            f"replayed {stats.blocks} blocks and {stats.cex_records} exchange records: {stats.messages}"
            f" messages in {stats.seconds:.2f}s ({rate:.0f} messages/s)"
        )


def parse_time_us(text: str, flag: str) -> int:
    try:
        return moment_us(text, flag)
    except ProtocolError as exc:
        raise ConfigError(exc.message) from None
