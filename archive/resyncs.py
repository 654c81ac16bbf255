"""Book resyncs in the archive: the ``book_resync`` type of an exchange's buckets.

``CexStore`` stores a resync (the book was found wrong and is being rebuilt from a snapshot) as a
``cex_book_events`` row of kind ``resync``, with its ``reason``, at the moment it was *written*: up to
``RESYNC_WRITE_SLACK_US`` after the book event it followed, and possibly after the snapshot that ended it
(both in one batch). The live stream sent it right after that book event, so its position is the
``atom_timestamp`` of the book's event stored before it (``atom_timestamp`` here; no earlier than the
slack before its write, so a resync's bucket is always found near its write); the write time is kept as
``written_timestamp``. A row is bucketed by its position and, like every CEX row, archived up to the
settled id watermark, later rows as late parts (``archive.archiver``).

A resync is not a record of the feed (no ``records.kinds`` entry, not in Kafka): ``BookResync`` is a record
class for the archive's rows only (``type``/``version``/``data`` as every row), not in the JSON registry, so
it is decoded here (``decode``). A replay turns it back into the live ``resync`` (``StoredResync``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from records import Record, RecordDecodeError, from_dict, kinds
from sinks.cex_read import StoredResync

US_PER_MINUTE = 60_000_000
RESYNC_WRITE_SLACK_US = 10 * US_PER_MINUTE  # a resync is stored at most this long after its book event
TABLE = "cex_book_events"


@dataclass(frozen=True, slots=True)
class BookResync(Record):
    """An archived resync: ``atom_timestamp`` where the live stream published it, ``written_timestamp``
    the row's own time (when ``CexStore`` wrote it)."""

    TYPE = "book_resync"

    exchange: str
    symbol: str
    reason: str | None  # gap | checksum | crossed | stale | reset | disconnected; null before migration 0008
    sequence: int | None
    atom_timestamp: int
    written_timestamp: int

    def stored(self) -> StoredResync:
        """The resync as the replay hands it to the hub (the live ``resync`` message)."""
        return StoredResync(self.exchange, self.symbol, self.reason, self.sequence, self.atom_timestamp)


def record_class(type_name: str) -> type[Record]:
    """The record class of an archived type (a kind's, or ``book_resync``)."""
    return BookResync if type_name == BookResync.TYPE else kinds.BY_TYPE[type_name].record


def decode(row: dict[str, Any]) -> Record:
    """One archived row (a record's JSON document) as its record."""
    if row.get("type") != BookResync.TYPE:
        return from_dict(row)
    if row.get("version") != BookResync.VERSION:
        raise RecordDecodeError(f"book_resync: unsupported version {row.get('version')!r}")
    return BookResync(**row["data"])


# the resync rows of one exchange with their position; $1 the exchange, then the condition's arguments
_SLACK = RESYNC_WRITE_SLACK_US
_POSITION = (
    f"GREATEST(r.atom_timestamp - {_SLACK}, COALESCE((SELECT p.atom_timestamp FROM cex_book_events p"
    " WHERE p.exchange = r.exchange AND p.symbol = r.symbol AND p.id < r.id AND p.kind <> 'resync'"
    " ORDER BY p.id DESC LIMIT 1), r.atom_timestamp))"
)
_SELECT = (
    "SELECT * FROM (SELECT r.id AS _id, r.exchange, r.symbol, r.reason, r.sequence, {position} AS"
    " atom_timestamp, r.atom_timestamp AS written_timestamp FROM cex_book_events r WHERE r.exchange = $1"
    " AND r.kind = 'resync' AND {where}) s WHERE {outer} ORDER BY atom_timestamp, _id"
)
# positions in [$2, $3), ids up to $4: a position is at most the slack before the write
_IN_RANGE = _SELECT.format(
    position=_POSITION,
    where=f"r.atom_timestamp >= $2 AND r.atom_timestamp < $3::bigint + {_SLACK} AND r.id <= $4",
    outer="atom_timestamp >= $2 AND atom_timestamp < $3",
)
# ids in ($2, $3], positions before $4
_LATE = _SELECT.format(position=_POSITION, where="r.id > $2 AND r.id <= $3", outer="atom_timestamp < $4")


def _record(row: asyncpg.Record) -> BookResync:
    data = dict(row.items())
    del data["_id"]
    return BookResync(**data)


async def resyncs_between(
    conn: asyncpg.Connection | asyncpg.Pool, exchange: str, start_us: int, end_us: int, upto: int | None
) -> list[BookResync]:
    """The exchange's resyncs with positions in ``[start_us, end_us)`` (ids up to ``upto``, None: all),
    in position order."""
    limit = upto if upto is not None else 2**63 - 1
    return [_record(r) for r in await conn.fetch(_IN_RANGE, exchange, start_us, end_us, limit)]


async def late_resyncs(
    conn: asyncpg.Connection | asyncpg.Pool, exchange: str, after: int, upto: int, end_us: int
) -> list[tuple[int, BookResync]]:
    """(id, resync) of the exchange's resyncs with ids in ``(after, upto]`` and positions before
    ``end_us``, in position order."""
    return [(int(r["_id"]), _record(r)) for r in await conn.fetch(_LATE, exchange, after, upto, end_us)]
