"""SQL over an archive with DuckDB, reading the Parquet files directly (no database server).

``connect`` opens an in-memory DuckDB with one view per record type (``block``, ``transaction``,
``dex_trade``, ``trade``, ``book_delta``, ...) over exactly the files the manifest names (a file
being written is never read). A view has the record's fields as columns (the ``data`` struct
flattened), plus ``source`` (the chain or exchange folder), ``date`` and ``hour`` from the Hive-style
path: a filter on ``date``/``hour`` prunes whole files before DuckDB opens them. Big integers and exact
decimals are strings, as in the files: cast them (``amount_sold::DECIMAL(38, 18)``,
``amount_bought_raw::HUGEINT``) where a query computes with them.

Object-store targets are read through the same fsspec filesystem the archiver writes with
(``DuckDBPyConnection.register_filesystem``), so DuckDB needs no extension download for ``s3://``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import duckdb

from archive.layout import Stream, Target
from archive.reader import buckets


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
    files: dict[str, list[str]] = defaultdict(list)
    for bucket in buckets(target, streams, first_minute, last_minute):
        for f in bucket.entry.files:
            files[f.type].append(target.uri(f.path))
    for type_name, paths in sorted(files.items()):
        listing = ", ".join(_quote(p) for p in paths)
        con.execute(
            f'CREATE VIEW "{type_name}" AS SELECT'
            " regexp_extract(filename, '/([^/]+)/date=[^/]+/hour=[^/]+/[^/]+$', 1) AS source,"
            " date, hour, data.*"
            f" FROM read_parquet([{listing}], hive_partitioning = true, filename = true,"
            " hive_types = {'date': DATE, 'hour': INTEGER})"
        )
    return con


def archived_types(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
    return [r[0] for r in rows]
