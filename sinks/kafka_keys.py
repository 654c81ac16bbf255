"""What a Kafka message is made of: topic kind, natural key, block coordinates, and the revert of a key.

A record's key is its natural key (the same key Postgres uses, so a replay writes the same key):

| kind | record | key |
| --- | --- | --- |
| blocks | ``Block`` | block number (decimal) |
| transactions | ``Transaction`` | transaction hash |
| logs, dex_trades, dex_liquidity | ``Log``, ``DexTrade``, ``DexLiquidity`` | ``block_hash:log_index`` |
| token_transfers | ``TokenTransfer`` | ``block_hash:log_index:batch_index`` |
| pools | ``Pool`` | pool address |
| tokens | ``Token`` | token address |
| reorgs | ``Reorg`` | ``common_ancestor_hash:orphaned tip hash`` |

Every message carries the hash of the block it belongs to in its ``block_hash`` header (a pool: its
creation block, or the block it was first indexed in; a token: the block it was first indexed in; a
reorg: the common ancestor), so a consumer can route or drop it without parsing the value. A
``Revert`` goes to the same topic with the same key as the record it undoes, so it lands in the same
partition, after that record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from records import (
    Block,
    DexLiquidity,
    DexTrade,
    Log,
    Pool,
    Record,
    Reorg,
    Revert,
    Token,
    TokenTransfer,
    Transaction,
    to_json,
)
from records.batch import Batch

Headers = list[tuple[str, str | bytes | None]]

# (topic, key, value, headers, partition): a plain tuple, the hot path builds hundreds of thousands;
# partition -1 lets the partitioner pick by key
OutMessage = tuple[str, bytes, bytes, Headers, int]


def out_message(topic: str, key: bytes, value: bytes, headers: Headers, partition: int = -1) -> OutMessage:
    return (topic, key, value, headers, partition)


HEAD, CONFIRMED = "head", "confirmed"

# batch attribute / topic suffix, in the order a batch is produced (a block before what it contains)
KINDS: tuple[str, ...] = (
    "blocks",
    "transactions",
    "logs",
    "token_transfers",
    "tokens",
    "pools",
    "dex_trades",
    "dex_liquidity",
)
REORGS = "reorgs"
ALL_KINDS: tuple[str, ...] = (*KINDS, REORGS)

RECORD_TYPE: dict[str, str] = {
    "blocks": Block.TYPE,
    "transactions": Transaction.TYPE,
    "logs": Log.TYPE,
    "token_transfers": TokenTransfer.TYPE,
    "tokens": Token.TYPE,
    "pools": Pool.TYPE,
    "dex_trades": DexTrade.TYPE,
    "dex_liquidity": DexLiquidity.TYPE,
    REORGS: Reorg.TYPE,
}
KIND_OF_TYPE: dict[str, str] = {t: k for k, t in RECORD_TYPE.items()}

# kinds Postgres deletes when their block is orphaned; tokens (and pools no indexed block created)
# stay, so they are never reverted either
REVERTIBLE: tuple[str, ...] = ("blocks", "transactions", "logs", "token_transfers", "pools", "dex_trades",
                               "dex_liquidity")  # fmt: skip


def message_key(record: Record) -> str:
    if isinstance(record, (Log, DexTrade, DexLiquidity)):
        return f"{record.block_hash}:{record.log_index}"
    if isinstance(record, TokenTransfer):
        return f"{record.block_hash}:{record.log_index}:{record.batch_index}"
    if isinstance(record, Transaction):
        return record.hash
    if isinstance(record, Block):
        return str(record.number)
    if isinstance(record, (Pool, Token)):
        return record.address
    if isinstance(record, Reorg):
        return reorg_key(record)
    if isinstance(record, Revert):
        return record.key
    raise TypeError(f"no Kafka key for {type(record).__name__}")


def reorg_key(reorg: Reorg) -> str:
    orphaned_tip = reorg.orphaned_hashes[-1] if reorg.orphaned_hashes else ""
    return f"{reorg.common_ancestor_hash}:{orphaned_tip}"


def block_of(record: Record, default: tuple[int, str]) -> tuple[int, str]:
    """(block_number, block_hash) for the headers; ``default`` for records not tied to a block."""
    if isinstance(record, Block):
        return record.number, record.hash
    if isinstance(record, (Transaction, Log, TokenTransfer, DexTrade, DexLiquidity, Revert)):
        return record.block_number, record.block_hash
    if isinstance(record, Pool) and record.created_block_number is not None and record.created_block_hash:
        return record.created_block_number, record.created_block_hash
    if isinstance(record, Reorg):
        return record.common_ancestor_number, record.common_ancestor_hash
    return default


def pool_is_revertible(pool: Pool) -> bool:
    """Postgres deletes a pool with its creation block; a pool without one stays."""
    return pool.created_block_number is not None and bool(pool.created_block_hash)


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
    for kind in REVERTIBLE:
        rows: Iterable[Record] = getattr(batch, kind)
        for record in rows:
            if isinstance(record, Pool) and not pool_is_revertible(record):
                continue
            number, block_hash = block_of(record, (-1, ""))
            entry = by_hash.get(block_hash)
            if entry is None:
                entry = by_hash[block_hash] = BlockKeys(number, block_hash)
            entry.add(kind, message_key(record))
    return sorted(by_hash.values(), key=lambda b: b.number)


@dataclass(frozen=True)
class Topics:
    prefix: str

    def of(self, flavour: str, kind: str) -> str:
        return f"{self.prefix}{flavour}.{kind}"

    def journal(self, stream: str) -> str:
        return f"{self.prefix}_dexnode.inflight.{stream}"

    def all(self, streams: Iterable[str] = ("follow",)) -> dict[str, int]:
        """Every topic dexnode writes, with its partition count (-1: the broker's default)."""
        topics = {self.of(HEAD, kind): -1 for kind in ALL_KINDS}
        topics |= {self.of(CONFIRMED, kind): -1 for kind in KINDS}
        return topics | {self.journal(s): 1 for s in streams}


# (kind, key, value, headers) of one record, before it is given a topic
Encoded = tuple[str, bytes, bytes, Headers]


def encode_record(kind: str, record: Record, default_block: tuple[int, str]) -> Encoded:
    block_hash = block_of(record, default_block)[1]
    headers: Headers = [("block_hash", block_hash.encode())]
    return kind, message_key(record).encode(), to_json(record), headers


def _log_key(record: Any) -> str:
    return f"{record.block_hash}:{record.log_index}"


_BLOCK_HASH = attrgetter("block_hash")

# per kind, the hot path of ``message_key`` and of ``block_of``'s hash (None: the general one)
_FAST: dict[str, tuple[Callable[[Any], str], Callable[[Any], str] | None]] = {
    "blocks": (lambda r: str(r.number), attrgetter("hash")),
    "transactions": (attrgetter("hash"), _BLOCK_HASH),
    "logs": (_log_key, _BLOCK_HASH),
    "token_transfers": (lambda r: f"{r.block_hash}:{r.log_index}:{r.batch_index}", _BLOCK_HASH),
    "dex_trades": (_log_key, _BLOCK_HASH),
    "dex_liquidity": (_log_key, _BLOCK_HASH),
    "pools": (attrgetter("address"), None),
    "tokens": (attrgetter("address"), None),
}


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
    for kind in KINDS:
        rows: Sequence[Record] = getattr(batch, kind)
        if not rows:
            continue
        key_of, hash_of = _FAST[kind]
        for record in rows:
            block_hash = hash_of(record) if hash_of else block_of(record, default)[1]
            h = headers.get(block_hash)
            if h is None:
                h = headers[block_hash] = [("block_hash", block_hash.encode())]
            append((kind, key_of(record).encode(), to_json(record), h))
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

    def encode(self, batch: Batch) -> list[Encoded]:
        entry = self._entries.get(id(batch))
        if entry is not None and entry[0] is batch:
            return entry[1]
        encoded = encode_batch(batch)
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[id(batch)] = (batch, encoded)
        return encoded
