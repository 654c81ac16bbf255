"""History for a replay: archived records (and, past the archive, stored ones) as steps in event-time
order across venues, for ``dexnode replay`` (``api.stream.history.play`` hands them to the live hub).

A step is one block with its records (event time: the block's timestamp) or the exchange records that
arrived at one moment (``atom_timestamp``: arrival order keeps every book's deltas in sequence).
Minute by minute, every stream's bucket of that minute is read and merged by time, so the whole replay is
ordered without holding more than a minute. Minutes the archive does not have yet come from Postgres:
confirmed blocks after the last archived block, exchange rows after the last archived minute.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from archive.layout import Stream, Target
from archive.reader import StoredBucket, bucket_records, buckets
from archive.resyncs import BookResync
from archive.source import CexSource
from records import Block, Record, kinds
from sinks.postgres_read import StoredChain

log = logging.getLogger("dexnode.archive")

CHAIN_TYPES = frozenset(k.type for k in kinds.BATCH_KINDS)
CEX_TYPES = frozenset(k.type for k in kinds.CEX)
BOOK_TYPES = frozenset({"book_delta", "book_snapshot"})
US_PER_MINUTE = 60_000_000


@dataclass(frozen=True)
class Step:
    time_us: int
    block: Block | None = None
    records: dict[type[Record], list[Record]] = field(default_factory=dict)
    cex: list[Any] = field(default_factory=list)  # records, and resyncs (``StoredResync``)


def chain_steps(by_type: dict[str, list[Record]]) -> list[Step]:
    """One step per block, with the records inside it (those with its ``block_hash``)."""
    inside: dict[str, dict[type[Record], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for type_name, records in by_type.items():
        if type_name == "block":
            continue
        for r in records:
            block_hash = getattr(r, "block_hash", None)
            if block_hash is not None:
                inside[block_hash][type(r)].append(r)
    blocks: list[Any] = by_type.get("block", [])
    return [Step(b.timestamp * 1_000_000, b, dict(inside.get(b.hash, {}))) for b in blocks]


def _arrival(record: Any) -> int:
    return int(record.atom_timestamp)


def _book_times(snapshots: list[Any], deltas: list[Any]) -> dict[int, int]:
    """Deltas a REST snapshot's buffer released after it (received before it, sequence after it): their
    time is the snapshot's, so they replay after it, as they were published (``archive.books``)."""
    by_book: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for s in snapshots:
        if s.sequence is not None:
            by_book[(s.exchange, s.symbol)].append(s)
    moved: dict[int, int] = {}
    if not by_book:
        return moved
    for d in deltas:
        if d.sequence is None:
            continue
        for s in by_book.get((d.exchange, d.symbol), ()):
            if s.atom_timestamp > d.atom_timestamp and d.sequence > s.sequence:
                moved[id(d)] = s.atom_timestamp
                break
    return moved


def cex_steps(by_type: dict[str, list[Any]]) -> list[Step]:
    """Exchange records (and resyncs, ``book_resync``, as the live ``resync``) grouped by arrival moment,
    in arrival order (each kind's stored order kept; at one moment a snapshot first, a resync last)."""
    if BookResync.TYPE in by_type:
        by_type = dict(by_type)
        by_type["resync"] = [r.stored() for r in by_type.pop(BookResync.TYPE)]
    snapshots = by_type.get("book_snapshot", [])
    moved = _book_times(snapshots, by_type.get("book_delta", []))

    def moment(record: Any) -> int:
        return moved.get(id(record), record.atom_timestamp)

    order = sorted(by_type, key=lambda t: (t != "book_snapshot", t == "resync"))
    lists = [sorted(by_type[t], key=moment) if t == "book_delta" and moved else by_type[t] for t in order]
    steps: list[Step] = []
    for r in heapq.merge(*lists, key=moment):
        at = moment(r)
        if steps and steps[-1].time_us == at:
            steps[-1].cex.append(r)
        else:
            steps.append(Step(at, cex=[r]))
    return steps


def _in_range(steps: Iterable[Step], first_us: int, end_us: int) -> list[Step]:
    return [s for s in steps if first_us <= s.time_us < end_us]


def _merge(minute_steps: list[list[Step]]) -> list[Step]:
    return list(heapq.merge(*minute_steps, key=lambda s: s.time_us))


async def history(
    target: Target,
    pool: asyncpg.Pool | None,
    *,
    first_us: int,
    end_us: int,
    confirmations: int,
    types: frozenset[str] | None = None,
    chain: str | None = None,
) -> AsyncIterator[Step]:
    """Steps with event times in ``[first_us, end_us)`` (µs since the epoch): archived buckets, then (with
    a pool) stored rows past the archive, in time order."""
    first, end = first_us // US_PER_MINUTE, (end_us - 1) // US_PER_MINUTE + 1  # minutes [first, end)
    wanted = (CHAIN_TYPES | CEX_TYPES) if types is None else types
    archived = _archived(target, first, end, wanted)
    stored = _stored(target, pool, first, end, confirmations, wanted, chain) if pool is not None else None
    # the two sources minute by minute, merged: the archive of one venue may end long before another's
    a = await anext(archived, None)
    b = None if stored is None else await anext(stored, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            steps, a = a[1], await anext(archived, None)
        elif a is None or b[0] < a[0]:
            steps, b = b[1], await anext(stored, None)  # type: ignore[arg-type]
        else:
            steps = _merge([a[1], b[1]])
            a, b = await anext(archived, None), await anext(stored, None)  # type: ignore[arg-type]
        for step in _in_range(steps, first_us, end_us):
            yield step


Minute = tuple[int, list[Step]]


async def _archived(target: Target, first: int, end: int, wanted: frozenset[str]) -> AsyncIterator[Minute]:
    """The archive's buckets of the minutes ``[first, end)``, minute by minute, every stream's steps merged
    by time."""
    read_types = set(wanted) | ({"block"} if wanted & CHAIN_TYPES else set())
    read_types |= {BookResync.TYPE} if wanted & BOOK_TYPES else set()
    by_minute: dict[int, list[StoredBucket]] = defaultdict(list)
    for b in buckets(target, target.streams(), first, end - 1):
        by_minute[b.entry.minute].append(b)
    for minute in sorted(by_minute):
        parts = []
        for b in by_minute[minute]:
            records = bucket_records(target, b, read_types)
            parts.append(chain_steps(records) if b.stream.venue == "chain" else cex_steps(records))
        yield minute, _merge(parts)


async def _stored(
    target: Target,
    pool: asyncpg.Pool,
    first: int,
    end: int,
    confirmations: int,
    wanted: frozenset[str],
    chain: str | None,
) -> AsyncIterator[Minute]:
    """Past the archive: confirmed blocks after the last archived one, exchange rows after each
    exchange's last archived minute, minute by minute, in the minutes ``[first, end)``."""
    stored = StoredChain(pool)
    cex = CexSource(pool, 0)
    streams = target.streams()
    after_block: int | None = None
    if wanted & CHAIN_TYPES:
        name = chain or next((s.name for s in streams if s.venue == "chain"), None)
        last = target.last_bucket(Stream("chain", name)) if name else None
        others = sorted(s.name for s in streams if s.venue == "chain" and s.name != name)
        if last is None and others:
            log.warning("replay: no chain %r in the archive (it has %s): blocks read from Postgres",
                        name, ", ".join(others))  # fmt: skip
        after_block = last.last_block if last is not None and last.last_block is not None else -1
        before = await pool.fetchval("SELECT max(number) FROM blocks WHERE timestamp < $1", first * 60)
        after_block = max(after_block, -1 if before is None else int(before))  # not from the chain's start
    exchanges: dict[str, int] = {}
    if wanted & CEX_TYPES:
        for exchange in await cex.exchanges():
            last = target.last_bucket(Stream("cex", exchange))
            exchanges[exchange] = last.minute if last is not None else first - 1
    head = await pool.fetchval("SELECT max(number) FROM blocks")
    watermark = -1 if head is None else int(head) - confirmations
    last_minute = end - 1
    while True:
        # the next minute any stream has rows in (empty minutes are skipped, not visited)
        nexts: list[int] = []
        if after_block is not None and after_block < watermark:
            ts = await pool.fetchval(
                "SELECT timestamp FROM blocks WHERE number > $1 AND number <= $2 ORDER BY number LIMIT 1",
                after_block,
                watermark,
            )
            if ts is not None:
                nexts.append(int(ts) // 60)
        for exchange, archived_minute in exchanges.items():
            m = await cex.next_minute(exchange, max(archived_minute, first - 1))
            if m is not None:
                nexts.append(m)
        if not nexts or min(nexts) > last_minute:
            return
        minute = min(nexts)
        parts: list[list[Step]] = []
        if after_block is not None:
            row = await pool.fetchrow(
                "SELECT min(number) AS lo, max(number) AS hi FROM blocks"
                " WHERE number > $1 AND number <= $2 AND timestamp >= $3 AND timestamp < $4",
                after_block,
                watermark,
                minute * 60,
                minute * 60 + 60,
            )
            if row is not None and row["lo"] is not None:
                batch = await stored.batch_between(int(row["lo"]), int(row["hi"]))
                by_type: dict[str, list[Record]] = {"block": list(batch.blocks)}
                for cls, records in batch.records.items():
                    if cls.TYPE in wanted:
                        by_type[cls.TYPE] = list(records)
                parts.append(chain_steps(by_type))
                after_block = int(row["hi"])
        for exchange, archived_minute in exchanges.items():
            if minute > archived_minute:
                bucket = await cex.bucket(exchange, minute)
                resyncs = {BookResync.TYPE} if wanted & BOOK_TYPES else set()
                by_cex: dict[str, list[Any]] = {
                    c.TYPE: rs for c, rs in bucket.records.items() if c.TYPE in wanted | resyncs
                }
                parts.append(cex_steps(by_cex))
                exchanges[exchange] = minute
        yield minute, _merge(parts)
