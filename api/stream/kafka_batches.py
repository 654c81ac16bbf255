"""Whole batches out of the node's Kafka topics, for the live hub of a ``serve`` fed by Kafka.

Kafka gives no order across topics and partitions, and a block's logs, transfers and trades are spread
over four topics of several partitions each: a consumer cannot tell from ``head.*`` alone when it holds
all of a block. The in-flight journal (``<prefix>_dexnode.inflight.follow``, ``sinks.kafka_journal``)
can: the head sink appends an entry naming every revertible key of a batch, per block, and waits for its
delivery *before* it produces the batch. So a batch is complete here once every key its entry names for
the hub's kinds (the block, its logs, token transfers and DEX trades) has arrived on ``head.*``, and
for a reorg batch its ``reorg`` record on ``head.reorgs``. Entries are released in journal order, which
is the order the follower wrote the batches.

Values are kept as received and decoded only when their batch is released; ``revert`` messages are
counted, not applied (``record``). Records of blocks no entry names (a backfill's
history on ``head.*``, a batch begun before this consumer started) are held in a bounded buffer, oldest
dropped first. Pure: no I/O (``api.stream.kafka_source`` does the consuming).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from api.stream.events import CHANNEL_RECORDS
from records import Block, Record, RecordDecodeError, Reorg, from_json, kinds
from sinks.kafka_journal import InFlight, last_complete

log = logging.getLogger("dexnode.api.kafka")

# the kinds a hub event is made of, by topic suffix
HUB_KINDS: dict[str, kinds.Kind[Any]] = {
    k.name: k for k in kinds.BATCH_KINDS if k.record is Block or k.record in CHANNEL_RECORDS.values()
}
REORGS = kinds.REORGS.name
MAX_BUFFERED_BLOCKS = 4096  # block hashes with records waiting for their journal entry
MAX_BUFFERED_BYTES = 256 << 20
MAX_PARTIAL_ENTRIES = 256  # journal entries of several messages, waiting for their other parts
_REVERT_MARK = b'"type":"revert"'


@dataclass(frozen=True, slots=True)
class Released:
    """One batch, ready for the hub: its reorg (None if the entry has none or its record is not held)."""

    entry: InFlight
    reorg: Reorg | None
    blocks: list[Block]
    records: dict[type[Record], list[Record]]


def _is_revert(value: bytes) -> bool:
    return _REVERT_MARK in value[:40]


class BatchAssembler:
    """Journal entries and ``head.*`` messages in; whole batches out, in the order they were journaled."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.entries: deque[InFlight] = deque()
        self._parts: OrderedDict[str, list[bytes]] = OrderedDict()  # batch id -> parts so far
        # block hash -> kind -> key -> value
        self._held: OrderedDict[str, dict[str, dict[str, bytes]]] = OrderedDict()
        self._held_bytes = 0
        self._reorgs: OrderedDict[str, bytes] = OrderedDict()  # reorg key -> value
        self.skipped = 0  # unreadable messages (counted, logged)
        self.reverted = 0  # revert messages seen
        self.unreadable = False  # the first queued batch has a message that cannot be decoded

    # -- in ---------------------------------------------------------------------------------------

    def journal(self, value: bytes) -> None:
        """One journal message; an entry of this stream joins the queue once all its parts are in."""
        try:
            doc = orjson.loads(value)
            batch, parts = str(doc["batch"]), int(doc["parts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._skip("journal", "", exc, value)
            return
        got = self._parts.setdefault(batch, [])
        got.append(value)
        if len(got) < parts:
            while len(self._parts) > MAX_PARTIAL_ENTRIES:
                self._parts.popitem(last=False)
            return
        del self._parts[batch]
        got.sort(key=lambda v: int(orjson.loads(v).get("part", 0)))
        entry = last_complete(got)
        if entry is None:
            self._skip("journal", batch, ValueError("parts do not make an entry"), value)
        elif entry.stream == self.stream:
            self.entries.append(entry)

    def record(self, kind: str, key: str, block_hash: str, value: bytes) -> None:
        """A ``head.<kind>`` message (``kind`` a ``HUB_KINDS`` name or ``reorgs``)."""
        if kind == REORGS:
            if not _is_revert(value):
                self._reorgs[key] = value
                while len(self._reorgs) > MAX_PARTIAL_ENTRIES:
                    self._reorgs.popitem(last=False)
            return
        if _is_revert(value):
            # not applied to what is held: partitions are read in no common order, so the reverts of a
            # reorg can come before the journal entry of the block they undo, which was committed and
            # must still be sent before the reorg. A batch that never committed is mended later
            # (``api.stream.kafka_source``: the next branch replaces it)
            self.reverted += 1
            return
        by_kind = self._held.get(block_hash)
        if by_kind is None:
            by_kind = self._held[block_hash] = {}
        previous = by_kind.setdefault(kind, {}).get(key)
        by_kind[kind][key] = value
        self._held_bytes += len(value) - (len(previous) if previous is not None else 0)
        while len(self._held) > MAX_BUFFERED_BLOCKS or self._held_bytes > MAX_BUFFERED_BYTES:
            self._forget(next(iter(self._held)))

    # -- out --------------------------------------------------------------------------------------

    def missing(self, entry: InFlight) -> int:
        """How many of the entry's messages are not held yet (0: it can be released)."""
        return sum(self.missing_by_kind(entry).values())

    def missing_by_kind(self, entry: InFlight) -> dict[str, int]:
        """The entry's messages not held yet, per kind (for the log of a batch that does not complete)."""
        out: dict[str, int] = {}
        for block in entry.blocks:
            held = self._held.get(block.hash, {})
            for kind in HUB_KINDS:
                have = held.get(kind, {})
                count = sum(1 for key in block.keys.get(kind, ()) if key not in have)
                if count:
                    out[kind] = out.get(kind, 0) + count
        if entry.reorg is not None and entry.reorg[0] not in self._reorgs:
            out[REORGS] = 1
        return out

    def release(self) -> Released | None:
        """The first queued batch if it is complete, decoded (and dropped from the buffers). One with an
        unreadable message stays queued and ``unreadable`` is set: the caller takes it from Postgres."""
        if not self.entries or self.missing(self.entries[0]) > 0:
            return None
        entry = self.entries[0]
        reorg = None
        if entry.reorg is not None:
            decoded = self._decode(REORGS, entry.reorg[0], self._reorgs[entry.reorg[0]])
            if not isinstance(decoded, Reorg):
                self.unreadable = True
                return None
            reorg = decoded
        blocks: list[Block] = []
        records: dict[type[Record], list[Record]] = {}
        for block in entry.blocks:
            held = self._held.get(block.hash, {})
            for kind, spec in HUB_KINDS.items():
                for key in block.keys.get(kind, ()):
                    record = self._decode(kind, key, held[kind][key])
                    if not isinstance(record, spec.record):
                        self.unreadable = True
                        return None
                    if isinstance(record, Block):
                        blocks.append(record)
                    else:
                        records.setdefault(spec.record, []).append(record)
        self.drop_first()
        blocks.sort(key=lambda b: b.number)
        for cls, rows in records.items():
            order = kinds.BY_RECORD[cls].order
            rows.sort(key=lambda r: tuple(getattr(r, f) for f in order))
        return Released(entry, reorg, blocks, records)

    def drop_first(self) -> InFlight:
        """Give up on the first queued batch (it was never committed, or is taken from Postgres)."""
        entry = self.entries.popleft()
        self.unreadable = False
        for block in entry.blocks:
            self._forget(block.hash)
        if entry.reorg is not None:
            self._reorgs.pop(entry.reorg[0], None)
        return entry

    def reorg_of(self, key: str) -> Reorg | None:
        value = self._reorgs.get(key)
        decoded = None if value is None else self._decode(REORGS, key, value)
        return decoded if isinstance(decoded, Reorg) else None

    @property
    def buffered(self) -> Mapping[str, int]:
        return {"blocks": len(self._held), "bytes": self._held_bytes, "entries": len(self.entries)}

    # -- inside -----------------------------------------------------------------------------------

    def _forget(self, block_hash: str) -> None:
        held = self._held.pop(block_hash, None)
        if held is not None:
            self._held_bytes -= sum(len(v) for by_key in held.values() for v in by_key.values())

    def _decode(self, kind: str, key: str, value: bytes) -> Record | None:
        try:
            return from_json(value)
        except RecordDecodeError as exc:
            self._skip(kind, key, exc, value)
            return None

    def _skip(self, kind: str, key: str, exc: Exception, value: bytes) -> None:
        self.skipped += 1
        log.warning("skipped an unreadable head.%s message %s (%s): %.200r", kind, key, exc, value)
