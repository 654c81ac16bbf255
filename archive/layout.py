"""Where an archive's files live and the manifest that says which buckets are complete.

A target is any fsspec URL (a local directory, ``s3://bucket/prefix``, ...). Files are laid out
Hive-style, one per kind, source and minute::

    <type>/<chain or exchange>/date=YYYY-MM-DD/hour=HH/<MM>.parquet

``<type>`` is the record's JSON type (``block``, ``dex_trade``, ``trade``). A bucket is one source's
minute: every kind's file of that minute, then one manifest update. The manifest is the
``_manifest/`` folder, one JSON document per stream and day
(``_manifest/<chain|cex>/<name>/date=YYYY-MM-DD.json``), each rewritten atomically after each
bucket: per day so an update rewrites one day's entries, not the archive's whole history.
Readers (query, replay, export, retention) go through the manifest only, so a file being written, or
one a killed archiver left behind as ``*.tmp``, is never read.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import orjson

MANIFEST_DIR = "_manifest"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, order=True)
class Stream:
    """A source of buckets: ``chain``/<chain name> or ``cex``/<exchange>."""

    venue: str  # chain | cex
    name: str

    def __str__(self) -> str:
        return f"{self.venue}/{self.name}"


@dataclass(frozen=True)
class FileEntry:
    type: str  # the record type (the folder)
    path: str  # relative to the target's root
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class BucketEntry:
    """One complete bucket: a stream's minute (Unix seconds // 60) and its files."""

    minute: int
    files: tuple[FileEntry, ...]
    first_block: int | None = None  # chain buckets: the blocks they hold
    last_block: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"minute": self.minute, "files": [f.__dict__ for f in self.files]}
        if self.first_block is not None:
            doc["first_block"], doc["last_block"] = self.first_block, self.last_block
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BucketEntry:
        return cls(
            doc["minute"],
            tuple(FileEntry(**f) for f in doc["files"]),
            doc.get("first_block"),
            doc.get("last_block"),
        )

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def minute_time(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def day_of(minute: int) -> str:
    return minute_time(minute).strftime("%Y-%m-%d")


def file_path(type_name: str, source: str, minute: int) -> str:
    t = minute_time(minute)
    return f"{type_name}/{source}/date={t:%Y-%m-%d}/hour={t:%H}/{t:%M}.parquet"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Target:
    """An archive's root on some filesystem, and its manifest."""

    url: str
    fs: fsspec.AbstractFileSystem = field(init=False)
    root: str = field(init=False)
    _days: dict[tuple[Stream, str], list[BucketEntry]] = field(init=False, default_factory=dict)
    _encoded: dict[tuple[Stream, str], list[bytes]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    def full(self, path: str) -> str:
        return posixpath.join(self.root, path)

    def uri(self, path: str) -> str:
        """A path as a URL another reader (DuckDB, pyarrow) opens: ``s3://...`` or a local path."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        full = self.full(path)
        return full if self.local else f"{protocol}://{full}"

    @property
    def local(self) -> bool:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return protocol in ("file", "local")

    def put_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` whole or not at all. On a filesystem: a temp file, then a rename
        (a killed writer leaves the ``.tmp``, which nothing reads and the next attempt overwrites). On an
        object store a PUT is already all-or-nothing (an upload cut short never becomes an object), so
        the bytes go straight to their key: a temp key would cost a copy and a delete per file."""
        full = self.full(path)
        if not self.local:
            self.fs.pipe_file(full, data)
            return
        self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
        tmp = full + TMP_SUFFIX
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, full)

    def put_all_atomic(self, files: dict[str, bytes]) -> None:
        """``put_atomic`` for several files; on an object store the PUTs go concurrently."""
        if self.local or len(files) < 2:
            for path, data in files.items():
                self.put_atomic(path, data)
        else:
            self.fs.pipe({self.full(path): data for path, data in files.items()})

    def read_all(self, paths: list[str]) -> dict[str, bytes]:
        """Several files' bytes by path (fetched concurrently from an object store)."""
        if self.local or len(paths) < 2:
            return {path: self.read_bytes(path) for path in paths}
        got = self.fs.cat([self.full(p) for p in paths])
        return {path: got[self.full(path)] for path in paths}

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(self.full(path))
        return data

    # -- the manifest ------------------------------------------------------------------------------

    def _day_path(self, stream: Stream, day: str) -> str:
        return f"{MANIFEST_DIR}/{stream.venue}/{stream.name}/date={day}.json"

    def _load_day(self, stream: Stream, day: str) -> list[BucketEntry]:
        key = (stream, day)
        if key not in self._days:
            path = self.full(self._day_path(stream, day))
            entries: list[BucketEntry] = []
            if self.fs.exists(path):
                doc = orjson.loads(self.fs.cat_file(path))
                entries = [BucketEntry.from_json(b) for b in doc["buckets"]]
            self._days[key] = entries
        return self._days[key]

    def days(self, stream: Stream) -> list[str]:
        """The days the manifest has buckets of, oldest first."""
        folder = self.full(f"{MANIFEST_DIR}/{stream.venue}/{stream.name}")
        self.fs.invalidate_cache(folder)  # object stores cache listings; a new day must show
        if not self.fs.exists(folder):
            return []
        names = [posixpath.basename(p) for p in self.fs.ls(folder, detail=False)]
        return sorted(n[len("date=") : -len(".json")] for n in names if n.endswith(".json"))

    def streams(self) -> list[Stream]:
        found = []
        for venue in ("chain", "cex"):
            folder = self.full(f"{MANIFEST_DIR}/{venue}")
            self.fs.invalidate_cache(folder)
            if self.fs.exists(folder):
                found += [Stream(venue, posixpath.basename(p)) for p in self.fs.ls(folder, detail=False)]
        return sorted(found)

    def buckets(
        self, stream: Stream, first_day: str | None = None, last_day: str | None = None
    ) -> list[BucketEntry]:
        """The complete buckets of ``stream`` (optionally of days in a range), oldest first."""
        out: list[BucketEntry] = []
        for day in self.days(stream):
            if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
                out += self._load_day(stream, day)
        return out

    def last_bucket(self, stream: Stream) -> BucketEntry | None:
        days = self.days(stream)
        if not days:
            return None
        entries = self._load_day(stream, days[-1])
        return entries[-1] if entries else None

    def add_bucket(self, stream: Stream, entry: BucketEntry) -> None:
        """Record a bucket whose files are all written: the moment readers see it."""
        day = day_of(entry.minute)
        entries = self._load_day(stream, day)
        key = (stream, day)
        if not entries or entries[-1].minute < entry.minute:  # the archiver's case: appended in order
            entries = [*entries, entry]
            if key not in self._encoded:
                self._encoded[key] = [orjson.dumps(e.to_json()) for e in entries[:-1]]
            encoded = [*self._encoded[key], orjson.dumps(entry.to_json())]
        else:  # a bucket written again (never by the archiver, which resumes after the last)
            entries = sorted(
                [e for e in entries if e.minute != entry.minute] + [entry], key=lambda e: e.minute
            )
            encoded = [orjson.dumps(e.to_json()) for e in entries]
        head = orjson.dumps({"stream": str(stream), "date": day})[:-1]
        # entries already encoded are kept as bytes: a day's rewrite is a join, not 1,440 re-encodings
        self.put_atomic(self._day_path(stream, day), head + b',"buckets":[' + b",".join(encoded) + b"]}")
        self._days[key] = entries
        self._encoded[key] = encoded

    def forget_cache(self) -> None:
        """Drop manifest days read so far (another process may have added buckets since)."""
        self._days.clear()
        self._encoded.clear()
