"""Reading an archive back: the manifest's buckets, their files (checksums verified) and records.

Only files the manifest names are read, so a bucket being written or a temp file a killed archiver
left is invisible here.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from archive.layout import BucketEntry, FileEntry, Stream, Target, day_of, sha256
from records import Record, from_dict


class ArchiveCorrupt(Exception):
    """A file's bytes differ from the checksum the manifest recorded for it."""


def _table(entry: FileEntry, data: bytes, verify: bool) -> pa.Table:
    if verify and sha256(data) != entry.sha256:
        raise ArchiveCorrupt(f"{entry.path}: SHA-256 differs from the manifest's")
    return pq.read_table(io.BytesIO(data))


def read_file(target: Target, entry: FileEntry, *, verify: bool = True) -> pa.Table:
    return _table(entry, target.read_bytes(entry.path), verify)


def records_of(table: pa.Table) -> list[Record]:
    """A file's rows as records (each row is the record's JSON document)."""
    return [from_dict(row) for row in table.to_pylist()]


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


def bucket_records(
    target: Target, bucket: StoredBucket, types: set[str] | None = None
) -> dict[str, list[Record]]:
    """One bucket's records by type name (only ``types`` when given)."""
    files = [f for f in bucket.entry.files if types is None or f.type in types]
    contents = target.read_all([f.path for f in files])
    return {f.type: records_of(_table(f, contents[f.path], True)) for f in files}


def iter_records(
    target: Target, type_name: str, streams: Sequence[Stream] | None = None
) -> Iterator[tuple[StoredBucket, list[Record]]]:
    """Every archived record of one type, bucket by bucket."""
    for bucket in buckets(target, streams):
        for f in bucket.entry.files:
            if f.type == type_name:
                yield bucket, records_of(read_file(target, f))
