"""What the hub fans out: a block with its records (encoded once, shared by every subscriber), a reorg,
a finality watermark. Built the same way from a live batch and from rows replayed out of Postgres, so
a replayed message is byte for byte the live one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.stream.frames import Encoded, body
from api.stream.protocol import CHANNELS, Cursor
from records import Block, DexTrade, Log, Record, TokenTransfer, to_dict

# channel -> the record class it carries (besides blocks)
CHANNEL_RECORDS: dict[str, type[Record]] = {
    "dex_trades": DexTrade,
    "token_transfers": TokenTransfer,
    "logs": Log,
}


@dataclass(frozen=True, slots=True)
class Item:
    """One data message without its subscription id: ``body`` is the JSON object's text after ``{``,
    encoded once for every subscriber (``api.stream.frames``)."""

    cursor: Cursor
    fields: Mapping[str, Any]  # the record's JSON ``data``, for filters
    body: Encoded


def _item(channel: str, cursor: Cursor, record: Record) -> Item:
    doc = to_dict(record)
    text = orjson.dumps(
        {
            "channel": channel,
            "type": doc["type"],
            "version": doc["version"],
            "cursor": cursor.encode(),
            "data": doc["data"],
        }
    ).decode()
    return Item(cursor, doc["data"], body(text[1:]))


def _record_cursor(record: Any) -> Cursor:
    return Cursor(record.block_number, record.log_index, getattr(record, "batch_index", 0), record.block_hash)


@dataclass(slots=True)
class BlockEvent:
    number: int
    hash: str
    parent_hash: str
    block: Block
    records: Mapping[str, Sequence[Record]]  # channel -> this block's records, in chain order
    _items: dict[str, tuple[Item, ...]] = field(default_factory=dict)

    def items(self, channel: str) -> tuple[Item, ...]:
        """The channel's messages for this block, encoded on first use (channels nobody watches cost
        nothing)."""
        cached = self._items.get(channel)
        if cached is None:
            if channel == "blocks":
                cached = (_item("blocks", Cursor(self.number, -1, 0, self.hash), self.block),)
            else:
                cached = tuple(_item(channel, _record_cursor(r), r) for r in self.records.get(channel, ()))
            self._items[channel] = cached
        return cached


@dataclass(frozen=True, slots=True)
class Ref:
    number: int
    hash: str

    def json(self) -> dict[str, Any]:
        return {"number": self.number, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class ReorgEvent:
    ancestor: Ref
    orphaned: tuple[Ref, ...]  # ascending, from ancestor.number + 1
    new_head: Ref


@dataclass(frozen=True, slots=True)
class FinalizedEvent:
    number: int
    # channel -> the watermark message's body, encoded once for every subscriber of the channel
    _bodies: dict[str, Encoded] = field(default_factory=dict, compare=False, repr=False)

    def body(self, channel: str) -> Encoded:
        cached = self._bodies.get(channel)
        if cached is None:
            doc = {"channel": channel, "type": "finalized", "data": {"number": self.number}}
            cached = self._bodies[channel] = body(orjson.dumps(doc).decode()[1:])
        return cached


StreamEvent = BlockEvent | ReorgEvent | FinalizedEvent


def block_events(
    blocks: Sequence[Block], records: Mapping[type[Record], Sequence[Record]]
) -> list[BlockEvent]:
    """Blocks (ascending) with their channel records grouped by block hash."""
    by_block: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for channel, cls in CHANNEL_RECORDS.items():
        for record in records.get(cls, ()):
            by_block[record.block_hash][channel].append(record)  # type: ignore[attr-defined]
    return [BlockEvent(b.number, b.hash, b.parent_hash, b, by_block.get(b.hash, {})) for b in blocks]


def reorg_event(ancestor: Ref, orphaned_hashes: Sequence[str], new_head: Ref) -> ReorgEvent:
    orphaned = tuple(Ref(ancestor.number + 1 + i, h) for i, h in enumerate(orphaned_hashes))
    return ReorgEvent(ancestor, orphaned, new_head)


assert set(CHANNEL_RECORDS) | {"blocks"} == set(CHANNELS)
