"""The order books at a replay's start: what a ``cex_book`` subscriber of ``dexnode replay`` gets first, as
a live subscriber gets the books the hub holds (``api.stream.cex.CexFanOut.add``).

A book at a moment is its last snapshot before the moment and the deltas after that snapshot, up to the
moment. Within the archive both come from the exchange's buckets: the snapshot files of the
``LOOKBACK_MINUTES`` before the moment (``dexnode cex`` stores a snapshot of every active book each minute),
then the delta files from the oldest of those snapshots on; a book with an archived resync
(``book_resync``) at or after its last snapshot starts invalid. Past the archive, Postgres rebuilds it
(``sinks.cex_read.rebuild_book``, invalid the same way).

"After the snapshot" is the feed's order: a REST snapshot's buffered deltas were received (``atom_timestamp``)
before the snapshot but come after it. The archive keeps no arrival id across files, so the exchange's
sequence decides where it has one (a delta after the snapshot has a greater sequence), the time otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from archive.layout import Stream, Target
from archive.reader import bucket_records, buckets
from archive.resyncs import BookResync, resyncs_between
from archive.source import CexSource
from records.cex import BookDelta, BookSnapshot
from sinks.cex_read import rebuild_book

US_PER_MINUTE = 60_000_000
LOOKBACK_MINUTES = 60  # how far back a book's last snapshot is looked for


@dataclass(frozen=True)
class InvalidBook:
    """A book known wrong at the moment (a resync after its last snapshot): sent as the live hub sends a
    book it holds invalid (``type: resync``, no reason)."""

    exchange: str
    symbol: str
    reason: str | None = None
    sequence: int | None = None


StartBook = BookSnapshot | InvalidBook


def after_snapshot(snapshot: BookSnapshot, delta: BookDelta) -> bool:
    """Whether ``delta`` came after ``snapshot`` in the feed's order (see the module's note)."""
    if snapshot.sequence is not None and delta.sequence is not None:
        return delta.sequence > snapshot.sequence
    return delta.atom_timestamp >= snapshot.atom_timestamp


def fold(snapshot: BookSnapshot, deltas: Iterable[BookDelta], before_us: int) -> BookSnapshot:
    """The book of ``snapshot`` with the deltas after it and received before ``before_us`` applied, in
    their order; sequence and times those of the last event applied (as the live hub's copy keeps them)."""
    bids: dict[Decimal, Decimal] = dict(snapshot.bids)
    asks: dict[Decimal, Decimal] = dict(snapshot.asks)
    sequence, event_ts, atom_ts = snapshot.sequence, snapshot.event_timestamp, snapshot.atom_timestamp
    for d in deltas:
        if d.atom_timestamp >= before_us or not after_snapshot(snapshot, d):
            continue
        side = bids if d.side == "bid" else asks
        if d.size:
            side[d.price] = d.size
        else:
            side.pop(d.price, None)
        sequence = d.sequence if d.sequence is not None else sequence
        event_ts, atom_ts = d.event_timestamp, d.atom_timestamp
    return BookSnapshot(
        snapshot.exchange,
        snapshot.symbol,
        tuple(sorted(bids.items(), reverse=True)),
        tuple(sorted(asks.items())),
        sequence,
        event_ts,
        atom_ts,
    )


def _with(found: Sequence[Any], type_name: str) -> list[Any]:
    return [b for b in found if any(f.type == type_name for f in b.entry.files)]


def _last_resyncs(resyncs: Iterable[BookResync]) -> dict[str, int]:
    """Each symbol's last resync position (``atom_timestamp``)."""
    last: dict[str, int] = {}
    for r in resyncs:
        last[r.symbol] = max(last.get(r.symbol, r.atom_timestamp), r.atom_timestamp)
    return last


def archived_books(target: Target, exchange: str, at_us: int) -> list[StartBook]:
    """The books of ``exchange`` with a snapshot archived in the lookback before ``at_us``, at ``at_us``
    (invalid where a resync was published at or after the last snapshot)."""
    stream = Stream("cex", exchange)
    at_minute = at_us // US_PER_MINUTE
    found = buckets(target, [stream], at_minute - LOOKBACK_MINUTES, at_minute)
    snapshots: dict[str, BookSnapshot] = {}
    minute_of: dict[str, int] = {}
    for bucket in reversed(_with(found, "book_snapshot")):
        latest: dict[str, BookSnapshot] = {}
        for s in bucket_records(target, bucket, {"book_snapshot"}).get("book_snapshot", []):
            assert isinstance(s, BookSnapshot)
            if s.atom_timestamp < at_us:
                latest[s.symbol] = s
        for symbol, s in latest.items():
            if symbol not in snapshots:
                snapshots[symbol], minute_of[symbol] = s, bucket.entry.minute
    if not snapshots:
        return []
    first = min(minute_of.values())
    deltas: dict[str, list[BookDelta]] = defaultdict(list)
    for bucket in _with([b for b in found if b.entry.minute >= first], "book_delta"):
        for d in bucket_records(target, bucket, {"book_delta"}).get("book_delta", []):
            assert isinstance(d, BookDelta)
            if d.symbol in snapshots:
                deltas[d.symbol].append(d)
    resyncs = [
        r
        for bucket in _with([b for b in found if b.entry.minute >= first], BookResync.TYPE)
        for r in bucket_records(target, bucket, {BookResync.TYPE}).get(BookResync.TYPE, [])
        if isinstance(r, BookResync) and r.atom_timestamp < at_us
    ]
    resynced = _last_resyncs(resyncs)
    return [
        InvalidBook(exchange, s)
        if resynced.get(s, -1) >= snapshots[s].atom_timestamp
        else fold(snapshots[s], deltas[s], at_us)
        for s in sorted(snapshots)
    ]


async def stored_books(pool: asyncpg.Pool, exchange: str, at_us: int) -> list[StartBook]:
    """The books of ``exchange`` with a snapshot stored in the lookback before ``at_us``, at ``at_us``,
    rebuilt by Postgres (invalid where a resync came after the last snapshot: by the resync's position, as
    in the archive, not by its later write time alone)."""
    since = at_us - LOOKBACK_MINUTES * US_PER_MINUTE
    rows = await pool.fetch(
        "SELECT symbol, max(atom_timestamp) AS snapshot FROM cex_book_events WHERE exchange = $1"
        " AND kind = 'snapshot' AND atom_timestamp >= $2 AND atom_timestamp < $3"
        " GROUP BY symbol ORDER BY symbol",
        exchange,
        since,
        at_us,
    )
    resynced = _last_resyncs(await resyncs_between(pool, exchange, since, at_us, None))
    out: list[StartBook] = []
    for row in rows:
        symbol = row["symbol"]
        book = await rebuild_book(pool, exchange, symbol, at_us - 1)
        invalid = resynced.get(symbol, -1) >= row["snapshot"]
        if invalid or not book.valid or book.last_id is None or book.timestamp is None:
            out.append(InvalidBook(exchange, symbol))
            continue
        event_ts = await pool.fetchval(
            "SELECT event_timestamp FROM cex_book_events WHERE id = $1", book.last_id
        )
        bids, asks = tuple(book.bids), tuple(book.asks)
        out.append(BookSnapshot(exchange, symbol, bids, asks, book.sequence, event_ts, book.timestamp))
    return out


async def books_at(
    target: Target, pool: asyncpg.Pool | None, at_us: int, exchanges: frozenset[str] | None = None
) -> list[StartBook]:
    """Every book (of ``exchanges``, default all) at ``at_us``: from the archive where the exchange's
    archive reaches that minute, else (with a pool) from Postgres."""
    names = {s.name for s in target.streams() if s.venue == "cex"}
    if pool is not None:
        names |= set(await CexSource(pool, 0).exchanges())
    out: list[StartBook] = []
    for exchange in sorted(names):
        if exchanges is not None and exchange not in exchanges:
            continue
        last = target.last_bucket(Stream("cex", exchange))
        if pool is None or (last is not None and last.minute >= at_us // US_PER_MINUTE):
            out.extend(archived_books(target, exchange, at_us))
        else:
            out.extend(await stored_books(pool, exchange, at_us))
    return out
