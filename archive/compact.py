"""Compaction: an old hour's minute files (and late parts) merged into one file per type and hour.

A query over a day of minute buckets opens 1,440 files per type; over compacted hours, 24. The manifest
keeps one entry per minute either way: after compaction a minute's entry names its slice of the hour's
file (``FileEntry.offset``: rows ``[offset, offset + rows)``), so every reader that goes minute by
minute (``archive.reader``: replay, export, retention) works unchanged, and DuckDB reads each hour's
file once (``archive.reader.file_selections``).

An hour is compacted once it ended more than the configured age ago and the stream's last archived
minute is past it (no minute of it is still to come; a CEX late part can still come, and then the hour
is compacted again into the next generation, ``hour.<n>.parquet``, so a file a manifest names is never
overwritten). Per day:

1. the hour files are written whole (``Target.put_all_atomic``); nothing names them yet;
2. the day's manifest is rewritten once, atomically: the hour's minutes now name the hour files, and the
   files they named before are listed as ``obsolete``;
3. the obsolete files are deleted, and the manifest is written again without the list.

A process killed in 1 leaves files nothing names (the next compaction writes them again); killed in 2 or
3, the manifest names either the old files or the new ones, never both, and the next run deletes what
``obsolete`` still lists. Rows are written minute by minute in the reader's order, so a compacted hour
reads back exactly as its minutes did.
"""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from dataclasses import replace

import pyarrow as pa

from archive.layout import BucketEntry, FileEntry, Stream, Target, hour_path, sha256
from archive.reader import StoredBucket, bucket_tables
from archive.resyncs import record_class
from archive.schema import kind_schema, stats_columns
from archive.writer import parquet_bytes

log = logging.getLogger("dexnode.archive")


def _generation(path: str) -> int:
    name = posixpath.basename(path)
    if name == "hour.parquet":
        return 1
    if name.startswith("hour.") and name.count(".") == 2:
        return int(name.split(".")[1])
    return 0


def _compact_hour(target: Target, stream: Stream, entries: list[BucketEntry]) -> list[BucketEntry]:
    """Write one file per type holding ``entries``' rows, minute by minute; returns the entries naming
    their slices of those files."""
    hour_minute = entries[0].minute - entries[0].minute % 60
    generation = 1 + max((_generation(f.path) for e in entries for f in e.files), default=0)
    tables: dict[str, list[pa.Table]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    slices: list[dict[str, tuple[int, int]]] = []
    for entry in entries:
        at: dict[str, tuple[int, int]] = {}
        for type_name, table in bucket_tables(target, StoredBucket(stream, entry)).items():
            at[type_name] = (count[type_name], table.num_rows)
            count[type_name] += table.num_rows
            tables[type_name].append(table)
        slices.append(at)
    contents: dict[str, bytes] = {}
    files: dict[str, FileEntry] = {}
    for type_name, parts in tables.items():
        cls = record_class(type_name)
        # the files' own rows as read (checksums verified), cast to the kind's schema as the writer's
        table = pa.concat_tables(parts).cast(kind_schema(cls))
        data = parquet_bytes(table, stats_columns(cls))
        path = hour_path(type_name, stream.name, hour_minute, generation)
        contents[path] = data
        files[type_name] = FileEntry(type_name, path, table.num_rows, len(data), sha256(data))
    target.put_all_atomic(contents)
    order = {f.type: i for i, f in enumerate(entries[0].files)}
    return [
        replace(
            entry,
            files=tuple(
                replace(files[t], rows=n, offset=offset)
                for t, (offset, n) in sorted(at.items(), key=lambda item: order.get(item[0], len(order)))
            ),
        )
        for entry, at in zip(entries, slices, strict=True)
    ]


def _drop_obsolete(target: Target, stream: Stream, day: str) -> None:
    obsolete = target.obsolete(stream, day)
    if obsolete:
        target.remove(obsolete)
        target.replace_day(stream, day, target.day_buckets(stream, day), [])


def compact_stream(target: Target, stream: Stream, *, before: float) -> int:
    """Compact every hour of ``stream`` that ended at or before ``before`` (Unix seconds), is complete
    (the stream's last bucket is later) and still has files of single minutes; returns how many."""
    last = target.last_bucket(stream)
    if last is None:
        return 0
    compacted = 0
    for day in target.days(stream):
        _drop_obsolete(target, stream, day)
        hours: dict[int, list[int]] = defaultdict(list)  # hour -> indexes of its entries in the day
        for i, entry in enumerate(target.day_buckets(stream, day)):
            hours[entry.minute // 60].append(i)
        for hour, indexes in sorted(hours.items()):
            entries = target.day_buckets(stream, day)
            old = [entries[i] for i in indexes]
            ended = (hour + 1) * 3600 <= before and last.minute >= (hour + 1) * 60
            if not ended or all(f.offset is not None for e in old for f in e.files):
                continue
            for i, entry in zip(indexes, _compact_hour(target, stream, old), strict=True):
                entries[i] = entry
            obsolete = {f.path for e in old for f in e.files} - {f.path for e in entries for f in e.files}
            target.replace_day(stream, day, entries, sorted(obsolete))
            _drop_obsolete(target, stream, day)
            compacted += 1
            log.info("compacted %s hour %d: %d minutes", stream, hour, len(indexes))
    return compacted
