"""``dexnode archive``, ``dexnode query``, ``dexnode export`` (and ``dexnode replay``): the Parquet
archive's commands (docs/archive.md)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from archive.archiver import run_archiver
from archive.layout import Target
from archive.query import archived_types, connect
from cli.common import DatabaseUrlOpt, DataDirOpt, run_async, settings_of
from core.errors import ConfigError

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
