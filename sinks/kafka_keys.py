"""What a Kafka message is made of: topic kind, natural key, block coordinates, and the revert of a key.

A record's key is its natural key (``records.kinds``: the key fields' values joined by ``:``, the
same key Postgres uses, so a replay writes the same key): a block's number, a transaction's hash,
``block_hash:log_index`` for a log or a DEX event, a pool's or token's address; a reorg's is
``common_ancestor_hash:orphaned tip hash``. Topics are ``<prefix><head|confirmed>.<kind name>``.

Every message carries the hash of the block it belongs to in its ``block_hash`` header (a pool: its
creation block, or the block it was first indexed in; a token: the block it was first indexed in; a
reorg: the common ancestor), so a consumer can route or drop it without parsing the value. A
``Revert`` goes to the same topic with the same key as the record it undoes, so it lands in the same
partition, after that record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

from records import Record, Reorg, Revert, kinds, to_json
from records.batch import Batch
from records.chain import DexTrade
from records.codec import native_messages
from records.kinds import Kind
from sinks import merged_trades

Headers = list[tuple[str, str | bytes | None]]

# (topic, key, value, headers, partition): a plain tuple, the hot path builds hundreds of thousands;
# partition -1 lets the partitioner pick by key
OutMessage = tuple[str, bytes, bytes, Headers, int]


# a run of one send's messages: (OutMessage tuples, None), or (Encoded tuples, topic by kind): each record
# produced to its kind's topic, partitioned by key, with no message tuple made for it (a batch on one flavour)
Segment = tuple[list[Any], dict[str, str] | None]


def out_message(topic: str, key: bytes, value: bytes, headers: Headers, partition: int = -1) -> OutMessage:
    return (topic, key, value, headers, partition)


HEAD, CONFIRMED = "head", "confirmed"

# topic suffixes of what a batch carries, in the order a batch is produced (a block before what it contains)
KINDS: tuple[str, ...] = tuple(k.name for k in kinds.BATCH_KINDS)
REORGS = kinds.REORGS.name
ALL_KINDS: tuple[str, ...] = tuple(k.name for k in kinds.CHAIN)

RECORD_TYPE: dict[str, str] = {k.name: k.type for k in kinds.CHAIN}
KIND_OF_TYPE: dict[str, str] = {t: k for k, t in RECORD_TYPE.items()}

# kinds Postgres deletes when their block is orphaned; tokens (and pools no indexed block created)
# have no block: a reorg deletes them only when nothing else needs them (sinks.kafka_reverts)
REVERTIBLE: tuple[str, ...] = tuple(k.name for k in kinds.CHAIN if k.revertible)


def _key_function(kind: Kind[Any]) -> Callable[[Any], str]:
    """The natural key as text: the key fields' values joined by ``:`` (as ``sinks.postgres_read``'s SQL)."""
    if kind.message_key is not None:
        return kind.message_key
    if not all(f.isidentifier() for f in kind.key):
        raise TypeError(f"{kind.name}: key fields must be field names, not {kind.key}")
    # one compiled f-string, as fast as a hand-written one: joining an attrgetter's tuple took 2.4x as
    # long, on every record produced
    template = ":".join(f"{{r.{f}}}" for f in kind.key)
    key_of: Callable[[Any], str] = eval(f"lambda r: f{template!r}")  # field names only, checked above
    return key_of


def _hash_function(kind: Kind[Any]) -> Callable[[Any], str | None] | None:
    """The hash of the block a record belongs to (None: it belongs to none)."""
    return None if kind.block_hash is None else attrgetter(kind.block_hash)


_KEY_OF: dict[type[Record], Callable[[Any], str]] = {k.record: _key_function(k) for k in kinds.CHAIN}
_KEY_OF[Revert] = attrgetter("key")
_BLOCK_OF: dict[type[Record], tuple[str, str]] = {
    k.record: (k.block, k.block_hash) for k in kinds.CHAIN if k.block is not None and k.block_hash is not None
}
_BLOCK_OF[Revert] = ("block_number", "block_hash")


def message_key(record: Record) -> str:
    key_of = _KEY_OF.get(type(record))
    if key_of is None:
        raise TypeError(f"no Kafka key for {type(record).__name__}")
    return key_of(record)


def reorg_key(reorg: Reorg) -> str:
    return message_key(reorg)


def block_of(record: Record, default: tuple[int, str]) -> tuple[int, str]:
    """(block_number, block_hash) for the headers; ``default`` for records not tied to a block."""
    fields = _BLOCK_OF.get(type(record))
    if fields is None:
        return default
    number, block_hash = getattr(record, fields[0]), getattr(record, fields[1])
    if number is None or not block_hash:  # a pool no indexed block created
        return default
    return number, block_hash


@dataclass(slots=True)
class BlockKeys:
    """The keys one block contributed to each revertible kind: what a revert of that block must undo."""

    number: int
    hash: str
    keys: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, key: str) -> None:
        self.keys.setdefault(kind, []).append(key)

    def reverts(self) -> Iterator[tuple[str, Revert]]:
        """(kind, Revert) per key; the block itself last, after what it contained."""
        for kind in (*REVERTIBLE[1:], REVERTIBLE[0]):
            for key in self.keys.get(kind, ()):
                yield kind, Revert(self.number, self.hash, RECORD_TYPE[kind], key)

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "hash": self.hash, "keys": self.keys}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BlockKeys:
        return cls(int(doc["number"]), str(doc["hash"]), {str(k): list(v) for k, v in doc["keys"].items()})


def keys_of_batch(batch: Batch) -> list[BlockKeys]:
    """The revertible keys of a batch's records, per block, in block order."""
    by_hash: dict[str, BlockKeys] = {b.hash: BlockKeys(b.number, b.hash) for b in batch.blocks}
    for kind in kinds.BATCH_KINDS:
        if not kind.revertible:
            continue
        for record in batch.of(kind.record):
            number, block_hash = block_of(record, (-1, ""))
            if not block_hash:  # tied to no block (a pool no indexed block created): never reverted
                continue
            entry = by_hash.get(block_hash)
            if entry is None:
                entry = by_hash[block_hash] = BlockKeys(number, block_hash)
            entry.add(kind.name, message_key(record))
    return sorted(by_hash.values(), key=lambda b: b.number)


@dataclass(frozen=True)
class Topics:
    prefix: str
    # the merged ``trades`` topic's prefix, the one the CEX side uses (``cex.kafka``): unlike the chain
    # topics', no ``<chain>.`` by default (None: ``prefix``)
    merged_prefix: str | None = None

    def of(self, flavour: str, kind: str) -> str:
        return f"{self.prefix}{flavour}.{kind}"

    def merged_trades(self) -> str:
        return f"{self.prefix if self.merged_prefix is None else self.merged_prefix}trades"

    def journal(self, stream: str) -> str:
        return f"{self.prefix}_dexnode.inflight.{stream}"

    def all(self, streams: Iterable[str] = ("follow",)) -> dict[str, int]:
        """Every topic dexnode writes, with its partition count (-1: the broker's default)."""
        topics = {self.of(HEAD, kind): -1 for kind in ALL_KINDS}
        topics |= {self.of(CONFIRMED, kind): -1 for kind in KINDS}
        topics[self.merged_trades()] = -1
        return topics | {self.journal(s): 1 for s in streams}


# (kind, key, value, headers) of one record, before it is given a topic
Encoded = tuple[str, bytes, bytes, Headers]


def encode_record(kind: str, record: Record, default_block: tuple[int, str]) -> Encoded:
    block_hash = block_of(record, default_block)[1]
    headers: Headers = [("block_hash", block_hash.encode())]
    return kind, message_key(record).encode(), to_json(record), headers


# per kind, the hot path of ``message_key`` and of ``block_of``'s hash
_FAST: tuple[tuple[Kind[Any], Callable[[Any], str], Callable[[Any], str | None] | None], ...] = tuple(
    (k, _key_function(k), _hash_function(k)) for k in kinds.BATCH_KINDS
)
# per kind, the same loop in C (``records/_codec.c``'s ``encode_messages``: the key, the JSON value and
# the headers of each record without a Python statement per record; 174k records 0.20-0.22 -> 0.10-0.14 CPU-s,
# docs/kafka.md), or None where the C encoder is not built
_NATIVE: tuple[tuple[Callable[..., None] | None, tuple[str, ...] | None], ...] = tuple(
    (native_messages(k.record), k.key if k.message_key is None else None) for k in kinds.BATCH_KINDS
)


def encode_batch(batch: Batch) -> list[Encoded]:
    """``encode_record`` for every record of the batch, in ``KINDS`` order (one headers list per block)."""
    tip = batch.tip
    if tip is not None:
        default = (tip.number, tip.hash)
    elif batch.reorg is not None:
        default = (batch.reorg.common_ancestor_number, batch.reorg.common_ancestor_hash)
    else:
        default = (-1, "")
    headers: dict[str, Headers] = {}
    out: list[Encoded] = []
    append = out.append
    for (kind, key_of, hash_of), (native, key_fields) in zip(_FAST, _NATIVE, strict=True):
        rows: Sequence[Record] = batch.of(kind.record)
        if not rows:
            continue
        name = kind.name
        if native is not None:
            native(rows, name, key_fields, key_of, kind.block_hash, default[1], headers, out)
            continue
        for record in rows:
            block_hash = (hash_of(record) if hash_of else None) or default[1]
            h = headers.get(block_hash)
            if h is None:
                h = headers[block_hash] = [("block_hash", block_hash.encode())]
            append((name, key_of(record).encode(), to_json(record), h))
    return out


def merged_trade_messages(batch: Batch, topic: str) -> list[OutMessage]:
    """The batch's DEX trades on the merged ``trades`` topic, in ``sinks.merged_trades``' shape (the CEX
    trades' too), keyed by pool address (one pool's trades in order on one partition, as a CEX trade's
    key keeps its venue and symbol), with the ``block_hash`` header. Confirmed blocks only: nothing on
    that topic is ever reverted."""
    out: list[OutMessage] = []
    headers: dict[str, Headers] = {}
    dumps, shape = orjson.dumps, merged_trades.dex_trade
    for trade in batch.of(DexTrade):
        h = headers.get(trade.block_hash)
        if h is None:
            h = headers[trade.block_hash] = [("block_hash", trade.block_hash.encode())]
        out.append((topic, trade.pool_address.encode(), dumps(shape(trade)), h, -1))
    return out


def revert_messages(topics: Topics, blocks: Iterable[BlockKeys]) -> Iterator[OutMessage]:
    for block in blocks:
        for kind, revert in block.reverts():
            _, key, value, headers = encode_record(kind, revert, (block.number, block.hash))
            yield out_message(topics.of(HEAD, kind), key, value, headers)


def restore_messages(topics: Topics, stored: Batch, reverted: Iterable[BlockKeys]) -> list[OutMessage]:
    """``head.*`` messages that produce again the records ``reverted`` names, taken from ``stored``
    (what Postgres holds): only records of the same block (by hash) under the same key, so a
    block Postgres no longer holds is not brought back."""
    wanted = {
        (kind, key, block.hash) for block in reverted for kind, keys in block.keys.items() for key in keys
    }
    out: list[OutMessage] = []
    for kind, key, value, headers in encode_batch(stored):
        block_hash = headers[0][1]
        assert isinstance(block_hash, bytes)
        if (kind, key.decode(), block_hash.decode()) in wanted:
            out.append(out_message(topics.of(HEAD, kind), key, value, headers))
    return out


class EncodedCache:
    """The batches the head sink encoded last, so the confirmed publisher need not encode them again
    (a backfill writes several at once)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: dict[int, tuple[Batch, list[Encoded]]] = {}
        self._lock = threading.Lock()  # the producer's thread encodes big batches (sinks.kafka)

    def __contains__(self, batch: Batch) -> bool:
        entry = self._entries.get(id(batch))
        return entry is not None and entry[0] is batch

    def encode(self, batch: Batch) -> list[Encoded]:
        entry = self._entries.get(id(batch))
        if entry is not None and entry[0] is batch:
            return entry[1]
        encoded = encode_batch(batch)
        with self._lock:
            if len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[id(batch)] = (batch, encoded)
        return encoded
