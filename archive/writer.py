"""A bucket into Parquet files on a target, then into the manifest.

Each kind with rows in the bucket becomes one zstd-compressed Parquet file, written whole (temp file,
rename: ``archive.layout.Target.put_atomic``); the manifest entry, with each file's row count and
SHA-256, is written last, so a bucket is complete for readers exactly when its entry exists. A writer
killed before that leaves files the manifest does not name: the next attempt writes the same bucket
again over them (same paths), so each bucket ends up in the manifest exactly once.

A late part (CEX rows stored after their minute was archived) is written the same way under a new name
(``<MM>.late-<n>.parquet``), and the minute's entry is replaced by one naming it too: the files already
named are never rewritten.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from archive.layout import BucketEntry, FileEntry, Stream, Target, file_path, late_path, sha256
from archive.schema import stats_columns, to_table
from archive.source import Bucket

COMPRESSION = "zstd"


def parquet_bytes(table: pa.Table, stats: list[str] | None = None) -> bytes:
    """A zstd Parquet file; ``stats``: the columns with min/max statistics (``schema.stats_columns``).
    The Arrow schema is not embedded (``store_schema``): the Parquet types say it all (uint64, strings,
    structs, lists) and a minute's file is small enough for that blob to matter."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=COMPRESSION, store_schema=False, write_statistics=stats or False)
    return sink.getvalue()


def _files(target: Target, bucket: Bucket, path_of: Callable[[str], str]) -> tuple[FileEntry, ...]:
    files = []
    contents: dict[str, bytes] = {}
    for cls, records in bucket.records.items():
        if not records:
            continue
        data = parquet_bytes(to_table(cls, records), stats_columns(cls))
        path = path_of(cls.TYPE)
        contents[path] = data
        files.append(FileEntry(cls.TYPE, path, len(records), len(data), sha256(data)))
    target.put_all_atomic(contents)
    return tuple(files)


def write_bucket(
    target: Target, stream: Stream, bucket: Bucket, ids: dict[str, int] | None = None
) -> BucketEntry:
    """Write ``bucket``'s files and then its manifest entry; returns the entry. ``ids``: the CEX id
    watermark its rows were read up to."""
    files = _files(target, bucket, lambda type_name: file_path(type_name, stream.name, bucket.minute))
    entry = BucketEntry(
        bucket.minute, files, bucket.first_block, bucket.last_block, tuple(sorted((ids or {}).items()))
    )
    target.add_bucket(stream, entry)
    return entry


def write_late_part(
    target: Target, stream: Stream, late: Bucket, entry: BucketEntry | None, part: int, ids: dict[str, int]
) -> BucketEntry:
    """Write a minute's late part ``part`` and the minute's entry with it (a new entry when the minute
    had none: every row of it came late); returns the part's own entry."""
    files = _files(target, late, lambda type_name: late_path(type_name, stream.name, late.minute, part))
    before = entry.files if entry is not None else ()
    target.add_bucket(stream, BucketEntry(late.minute, before + files, ids=tuple(sorted(ids.items()))))
    return BucketEntry(late.minute, files)
