"""SQL over an archive with DuckDB, reading the Parquet files directly (no database server).

``connect`` opens an in-memory DuckDB with one view per record type (``block``, ``transaction``,
``dex_trade``, ``trade``, ``book_delta``, ...) over exactly the files the manifest names (a file
being written is never read): minute files, their late parts, compacted hours
(``archive.reader.file_selections``). A view has the record's fields as columns (the ``data`` struct
flattened), plus ``source`` (the chain or exchange folder), ``date`` and ``hour`` from the Hive-style
path: a filter on ``date``/``hour`` prunes whole files before DuckDB opens them. Big integers and exact
decimals are strings, as in the files: cast them (``amount_sold::DECIMAL(38, 18)``,
``amount_bought_raw::HUGEINT``) where a query computes with them.

Object-store targets are read through the same fsspec filesystem the archiver writes with
(``DuckDBPyConnection.register_filesystem``), so DuckDB needs no extension download for ``s3://``.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from archive.layout import Stream, Target
from archive.reader import file_selections


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(
    target: Target,
    *,
    first_minute: int | None = None,
    last_minute: int | None = None,
    streams: Sequence[Stream] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per archived record type (buckets in the minute range only)."""
    con = duckdb.connect()
    if not target.local:
        con.register_filesystem(target.fs)
    for type_name, files in sorted(file_selections(target, streams, first_minute, last_minute).items()):
        listing = ", ".join(_quote(target.uri(p)) for p in files)
        # a compacted hour at the range's edge: only its rows of minutes in the range
        partial = [
            f"(filename = {_quote(target.uri(p))} AND ("
            + " OR ".join(f"file_row_number BETWEEN {a} AND {b - 1}" for a, b in ranges)
            + "))"
            for p, ranges in files.items()
            if ranges is not None
        ]
        where = ""
        if partial:
            whole = ", ".join(_quote(target.uri(p)) for p, r in files.items() if r is None) or "NULL"
            where = f" WHERE filename IN ({whole}) OR " + " OR ".join(partial)
        con.execute(
            f'CREATE VIEW "{type_name}" AS SELECT'
            " regexp_extract(filename, '/([^/]+)/date=[^/]+/hour=[^/]+/[^/]+$', 1) AS source,"
            " date, hour, data.*"
            f" FROM read_parquet([{listing}], hive_partitioning = true, filename = true,"
            " file_row_number = true, hive_types = {'date': DATE, 'hour': INTEGER})" + where
        )
    return con


def archived_types(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
    return [r[0] for r in rows]
