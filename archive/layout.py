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

Besides a minute's own files, an entry can name its late parts (``<MM>.late-<n>.parquet``: CEX rows stored
after the minute was archived) and, once its hour is compacted, slices of the hour's file
(``hour.parquet``; ``archive.compact``). A CEX stream's folder also holds ``ids.json``, the id watermark
its archived minutes are complete up to (``archive.archiver``).
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
    """A bucket's rows of one type: a whole file, or (``offset`` set) the rows ``[offset, offset + rows)``
    of a compacted file (``bytes`` and ``sha256`` are then the whole file's)."""

    type: str  # the record type (the folder)
    path: str  # relative to the target's root
    rows: int
    bytes: int
    sha256: str
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        if self.offset is None:
            del doc["offset"]
        return doc


@dataclass(frozen=True)
class BucketEntry:
    """One complete bucket: a stream's minute (Unix seconds // 60) and its files."""

    minute: int
    files: tuple[FileEntry, ...]  # in reading order: the minute's part, then its late parts
    first_block: int | None = None  # chain buckets: the blocks they hold
    last_block: int | None = None
    # CEX buckets: per table, the id watermark its parts were read up to (rows of the minute with an id
    # at or below it are in the bucket; archive.archiver); empty for chain buckets
    ids: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"minute": self.minute, "files": [f.to_json() for f in self.files]}
        if self.first_block is not None:
            doc["first_block"], doc["last_block"] = self.first_block, self.last_block
        if self.ids:
            doc["ids"] = dict(self.ids)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BucketEntry:
        return cls(
            doc["minute"],
            tuple(FileEntry(**f) for f in doc["files"]),
            doc.get("first_block"),
            doc.get("last_block"),
            tuple(sorted(doc.get("ids", {}).items())),
        )

    @property
    def late_parts(self) -> int:
        """How many late parts the bucket has (``late_path``)."""
        return max((late_part_of(f.path) for f in self.files), default=0)

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


def late_path(type_name: str, source: str, minute: int, part: int) -> str:
    """The ``part``-th late part of a minute (rows stored after the minute was archived)."""
    return file_path(type_name, source, minute).removesuffix(".parquet") + f".late-{part}.parquet"


def late_part_of(path: str) -> int:
    name = posixpath.basename(path)
    return int(name.split(".late-")[1].removesuffix(".parquet")) if ".late-" in name else 0


def hour_path(type_name: str, source: str, hour_minute: int, generation: int) -> str:
    """A compacted hour's file (``archive.compact``); a later compaction of the same hour (it got late
    parts since) writes the next generation, so no file a manifest names is ever overwritten."""
    folder = posixpath.dirname(file_path(type_name, source, hour_minute))
    return f"{folder}/hour.parquet" if generation == 1 else f"{folder}/hour.{generation}.parquet"


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
    _obsolete: dict[tuple[Stream, str], list[str]] = field(init=False, default_factory=dict)

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

    def remove(self, paths: list[str]) -> None:
        """Delete files (those already gone are fine: a killed process may have deleted them)."""
        for path in paths:
            if self.fs.exists(self.full(path)):
                self.fs.rm_file(self.full(path))

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
            obsolete: list[str] = []
            if self.fs.exists(path):
                doc = orjson.loads(self.fs.cat_file(path))
                entries = [BucketEntry.from_json(b) for b in doc["buckets"]]
                obsolete = doc.get("obsolete", [])
            self._days[key] = entries
            self._obsolete[key] = obsolete
        return self._days[key]

    def days(self, stream: Stream) -> list[str]:
        """The days the manifest has buckets of, oldest first."""
        folder = self.full(f"{MANIFEST_DIR}/{stream.venue}/{stream.name}")
        self.fs.invalidate_cache(folder)  # object stores cache listings; a new day must show
        if not self.fs.exists(folder):
            return []
        names = [posixpath.basename(p) for p in self.fs.ls(folder, detail=False)]
        return sorted(
            n[len("date=") : -len(".json")] for n in names if n.startswith("date=") and n.endswith(".json")
        )

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

    def day_buckets(self, stream: Stream, day: str) -> list[BucketEntry]:
        return list(self._load_day(stream, day))

    def bucket(self, stream: Stream, minute: int) -> BucketEntry | None:
        """The manifest's entry of one minute, if any."""
        return next((e for e in self._load_day(stream, day_of(minute)) if e.minute == minute), None)

    def last_bucket(self, stream: Stream) -> BucketEntry | None:
        days = self.days(stream)
        if not days:
            return None
        entries = self._load_day(stream, days[-1])
        return entries[-1] if entries else None

    def _put_day(self, stream: Stream, day: str, encoded: list[bytes], obsolete: list[str]) -> None:
        head = orjson.dumps({"stream": str(stream), "date": day})[:-1]
        tail = b"]" + (b',"obsolete":' + orjson.dumps(obsolete) if obsolete else b"") + b"}"
        self.put_atomic(self._day_path(stream, day), head + b',"buckets":[' + b",".join(encoded) + tail)

    def add_bucket(self, stream: Stream, entry: BucketEntry) -> None:
        """Record a bucket whose files are all written (or a bucket's new late part: the entry replaces
        the minute's): the moment readers see it."""
        day = day_of(entry.minute)
        entries = self._load_day(stream, day)
        key = (stream, day)
        if not entries or entries[-1].minute < entry.minute:  # the archiver's case: appended in order
            entries = [*entries, entry]
            if key not in self._encoded:
                self._encoded[key] = [orjson.dumps(e.to_json()) for e in entries[:-1]]
            encoded = [*self._encoded[key], orjson.dumps(entry.to_json())]
        else:  # a late part, or a bucket written again (never by the archiver, which resumes after the last)
            entries = sorted(
                [e for e in entries if e.minute != entry.minute] + [entry], key=lambda e: e.minute
            )
            encoded = [orjson.dumps(e.to_json()) for e in entries]
        # entries already encoded are kept as bytes: a day's rewrite is a join, not 1,440 re-encodings
        self._put_day(stream, day, encoded, self._obsolete.get(key, []))
        self._days[key] = entries
        self._encoded[key] = encoded

    def replace_day(self, stream: Stream, day: str, entries: list[BucketEntry], obsolete: list[str]) -> None:
        """Rewrite a day's entries in one manifest write (compaction), naming the files they no longer
        use (``obsolete``: deleted after this write; kept listed until they are, so a killed process's
        leftovers are deleted by the next one)."""
        encoded = [orjson.dumps(e.to_json()) for e in entries]
        self._put_day(stream, day, encoded, obsolete)
        key = (stream, day)
        self._days[key], self._encoded[key], self._obsolete[key] = list(entries), encoded, list(obsolete)

    def obsolete(self, stream: Stream, day: str) -> list[str]:
        self._load_day(stream, day)
        return list(self._obsolete.get((stream, day), []))

    # -- a CEX stream's id watermark (archive.archiver) ---------------------------------------------

    def _ids_path(self, stream: Stream) -> str:
        return f"{MANIFEST_DIR}/{stream.venue}/{stream.name}/ids.json"

    def stream_ids(self, stream: Stream) -> dict[str, int] | None:
        """Per table, the id up to which every archived minute of ``stream`` holds its rows (None: not
        kept yet, an archive written before late parts existed)."""
        path = self.full(self._ids_path(stream))
        if not self.fs.exists(path):
            return None
        ids: dict[str, int] = orjson.loads(self.fs.cat_file(path))["ids"]
        return ids

    def set_stream_ids(self, stream: Stream, ids: dict[str, int]) -> None:
        self.put_atomic(self._ids_path(stream), orjson.dumps({"stream": str(stream), "ids": ids}))

    def forget_cache(self) -> None:
        """Drop manifest days read so far (another process may have added buckets since)."""
        self._days.clear()
        self._encoded.clear()
        self._obsolete.clear()
