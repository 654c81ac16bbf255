"""Reading an archive back: the manifest's buckets, their files (checksums verified) and records.

Only files the manifest names are read, so a bucket being written or a temp file a killed archiver
left is invisible here. This is the one place that turns a manifest entry into rows, for every layout:

- a minute's own file, then its late parts (CEX rows stored after the minute was archived), merged back
  into stored order (time, then id: a late row's id is above every id of the parts before it);
- a compacted hour (``archive.compact``): the minute's slice ``[offset, offset + rows)`` of the hour's
  file (the file is read once for consecutive minutes).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archive.layout import BucketEntry, FileEntry, Stream, Target, day_of, late_part_of, sha256
from archive.resyncs import BookResync, decode
from records import Candle, Record, kinds


class ArchiveCorrupt(Exception):
    """A file's bytes differ from the checksum the manifest recorded for it."""


# the last compacted files read, decoded: the 60 minutes of an hour read one after another share one
_HOURS: OrderedDict[tuple[str, str, str], pa.Table] = OrderedDict()
_HOURS_KEPT = 4


def _table(entry: FileEntry, data: bytes, verify: bool) -> pa.Table:
    if verify and sha256(data) != entry.sha256:
        raise ArchiveCorrupt(f"{entry.path}: SHA-256 differs from the manifest's")
    # ParquetFile.read, not read_table: no dataset machinery per file (a minute file reads ~3x faster)
    table = pq.ParquetFile(io.BytesIO(data)).read(use_threads=False)
    return table if entry.offset is None else table.slice(entry.offset, entry.rows)


def _cached(target: Target, entry: FileEntry) -> pa.Table | None:
    key = (target.url, entry.path, entry.sha256)
    if entry.offset is None or key not in _HOURS:
        return None
    _HOURS.move_to_end(key)
    return _HOURS[key].slice(entry.offset, entry.rows)


def _decode(target: Target, entry: FileEntry, data: bytes) -> pa.Table:
    if entry.offset is None:
        return _table(entry, data, True)
    whole = _table(FileEntry(entry.type, entry.path, 0, entry.bytes, entry.sha256), data, True)
    _HOURS[(target.url, entry.path, entry.sha256)] = whole
    while len(_HOURS) > _HOURS_KEPT:
        _HOURS.popitem(last=False)
    return whole.slice(entry.offset, entry.rows)


def read_file(target: Target, entry: FileEntry, *, verify: bool = True) -> pa.Table:
    return _table(entry, target.read_bytes(entry.path), verify)


def _stored_order(type_name: str, table: pa.Table) -> pa.Table:
    """CEX rows of several parts in stored order: by their bucketing time, stably (within a time, part by
    part). Chain buckets have one part per type, already in chain order."""
    kind = kinds.BY_TYPE.get(type_name)
    if type_name != BookResync.TYPE and (kind is None or kind not in kinds.CEX):
        return table
    candle = kind is not None and kind.record is Candle
    time = pc.struct_field(table.column("data"), "end" if candle else "atom_timestamp")
    return table.take(pc.sort_indices(time))  # Arrow's sort_indices is stable


def records_of(table: pa.Table) -> list[Record]:
    """A file's rows as records (each row is the record's JSON document)."""
    return [decode(row) for row in table.to_pylist()]


@dataclass(frozen=True)
class StoredBucket:
    stream: Stream
    entry: BucketEntry


def buckets(
    target: Target,
    streams: Sequence[Stream] | None = None,
    first_minute: int | None = None,
    last_minute: int | None = None,
) -> list[StoredBucket]:
    """The complete buckets of ``streams`` (default all) with minutes in the range, in minute order
    (streams interleaved)."""
    first_day = None if first_minute is None else day_of(first_minute)
    last_day = None if last_minute is None else day_of(last_minute)
    found = []
    for stream in streams if streams is not None else target.streams():
        for entry in target.buckets(stream, first_day, last_day):
            if (first_minute is None or entry.minute >= first_minute) and (
                last_minute is None or entry.minute <= last_minute
            ):
                found.append(StoredBucket(stream, entry))
    found.sort(key=lambda b: (b.entry.minute, b.stream))
    return found


def bucket_tables(target: Target, bucket: StoredBucket, types: set[str] | None = None) -> dict[str, pa.Table]:
    """One bucket's rows by type name (only ``types`` when given), every part of it, as Arrow tables."""
    files = [f for f in bucket.entry.files if types is None or f.type in types]
    tables = {i: t for i, f in enumerate(files) if (t := _cached(target, f)) is not None}
    contents = target.read_all(sorted({f.path for i, f in enumerate(files) if i not in tables}))
    parts: dict[str, list[pa.Table]] = {}
    for i, f in enumerate(files):
        parts.setdefault(f.type, []).append(
            tables[i] if i in tables else _decode(target, f, contents[f.path])
        )
    late = {f.type for f in files if late_part_of(f.path)}
    return {t: _stored_order(t, pa.concat_tables(ts)) if t in late else ts[0] for t, ts in parts.items()}


def bucket_records(
    target: Target, bucket: StoredBucket, types: set[str] | None = None
) -> dict[str, list[Record]]:
    """One bucket's records by type name (only ``types`` when given), every part of it."""
    return {t: records_of(table) for t, table in bucket_tables(target, bucket, types).items()}


def iter_records(
    target: Target, type_name: str, streams: Sequence[Stream] | None = None
) -> Iterator[tuple[StoredBucket, list[Record]]]:
    """Every archived record of one type, bucket by bucket."""
    for bucket in buckets(target, streams):
        if any(f.type == type_name for f in bucket.entry.files):
            yield bucket, bucket_records(target, bucket, {type_name})[type_name]


def file_selections(
    target: Target,
    streams: Sequence[Stream] | None = None,
    first_minute: int | None = None,
    last_minute: int | None = None,
) -> dict[str, dict[str, list[tuple[int, int]] | None]]:
    """For a reader of whole files (DuckDB): per type, each file holding rows of the minutes in the
    range, with None when all its rows are in range, else the row ranges ``[start, end)`` that are
    (a compacted hour at the range's edge)."""
    chosen: dict[str, dict[str, list[tuple[int, int]] | None]] = {}
    total: dict[str, int] = {}
    taken: dict[str, int] = {}
    first_day = None if first_minute is None else day_of(first_minute)
    last_day = None if last_minute is None else day_of(last_minute)
    for stream in streams if streams is not None else target.streams():
        for entry in target.buckets(stream, first_day, last_day):  # whole days: whole compacted hours
            inside = (first_minute is None or entry.minute >= first_minute) and (
                last_minute is None or entry.minute <= last_minute
            )
            for f in entry.files:
                if f.offset is None:
                    if inside:
                        chosen.setdefault(f.type, {})[f.path] = None
                    continue
                total[f.path] = total.get(f.path, 0) + f.rows
                if inside:
                    ranges = chosen.setdefault(f.type, {}).setdefault(f.path, [])
                    assert ranges is not None
                    if ranges and ranges[-1][1] == f.offset:
                        ranges[-1] = (ranges[-1][0], f.offset + f.rows)
                    else:
                        ranges.append((f.offset, f.offset + f.rows))
                    taken[f.path] = taken.get(f.path, 0) + f.rows
    for files in chosen.values():
        for path in files:
            if path in taken and taken[path] == total[path]:
                files[path] = None
    return chosen
