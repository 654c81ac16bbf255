"""A bucket into Parquet files on a target, then into the manifest.

Each kind with rows in the bucket becomes one zstd-compressed Parquet file, written whole (temp file,
rename: ``archive.layout.Target.put_atomic``); the manifest entry, with each file's row count and
SHA-256, is written last, so a bucket is complete for readers exactly when its entry exists. A writer
killed before that leaves files the manifest does not name: the next attempt writes the same bucket
again over them (same paths), so each bucket ends up in the manifest exactly once.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from archive.layout import BucketEntry, FileEntry, Stream, Target, file_path, sha256
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


def write_bucket(target: Target, stream: Stream, bucket: Bucket) -> BucketEntry:
    """Write ``bucket``'s files and then its manifest entry; returns the entry."""
    files = []
    contents: dict[str, bytes] = {}
    for cls, records in bucket.records.items():
        if not records:
            continue
        data = parquet_bytes(to_table(cls, records), stats_columns(cls))
        path = file_path(cls.TYPE, stream.name, bucket.minute)
        contents[path] = data
        files.append(FileEntry(cls.TYPE, path, len(records), len(data), sha256(data)))
    target.put_all_atomic(contents)
    entry = BucketEntry(bucket.minute, tuple(files), bucket.first_block, bucket.last_block)
    target.add_bucket(stream, entry)
    return entry
