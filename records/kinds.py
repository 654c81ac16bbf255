"""The registry of record kinds: each kind declared once, everything else derived from it.

A ``Kind`` says what a record kind is outside Python: the table it is stored in, its natural key
(the Postgres primary key, and the Kafka message key: the key fields' values joined by ``:``), the
block it belongs to (``None`` for kinds not tied to a block), the Kafka topic suffix
(``<prefix>head.<name>``) and whether a reorg undoes it. ``records.batch.Batch`` holds records per
kind; the Postgres writer and reader (``sinks.postgres``, ``sinks.postgres_read``), the revert keys
and the Kafka encoding (``sinks.kafka_keys``) and the demo's reset are derived from ``CHAIN``.

Adding a kind: the record class, its table and migration, and one entry here.

Columns are named by string because ``records`` imports nothing of ours: a unit test checks every
name against the record's fields and ``sinks.schema``'s tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from records.cex import BookDelta, BookSnapshot, Candle, FundingRate, OpenInterest, Ticker, Trade
from records.chain import Block, DexLiquidity, DexTrade, Log, Pool, Reorg, Token, TokenTransfer, Transaction
from records.codec import Record

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Kind(Generic[R]):
    name: str  # the topic suffix, and the name a batch's records of this kind go by
    record: type[R]
    table: str
    key: tuple[str, ...]  # natural key: record fields = primary-key columns, in message-key order
    order: tuple[str, ...]  # the order a reader returns rows in (chain order for block kinds)
    block: str | None = None  # the field holding the number of the block a record belongs to
    block_hash: str | None = None  # ... and that block's hash; a record with it null belongs to none
    revertible: bool = False  # a reorg deletes it with its block (Postgres) and reverts its key (Kafka)
    # fields naming a record of another kind (by kind name): what a reader of a block range brings along
    refers: Mapping[str, str] = field(default_factory=dict)
    message_key: Callable[[R], str] | None = None  # only where the key is not the key fields joined

    @property
    def type(self) -> str:
        """The records' JSON ``type``."""
        return self.record.TYPE


def _reorg_key(reorg: Reorg) -> str:
    # a reorg has no natural key in Postgres (an identity): on Kafka, the ancestor and the orphaned tip
    orphaned_tip = reorg.orphaned_hashes[-1] if reorg.orphaned_hashes else ""
    return f"{reorg.common_ancestor_hash}:{orphaned_tip}"


_IN_BLOCK = ("block_number", "block_hash", True)  # block, block_hash, revertible: a record inside a block
_LOG_KEY = ("block_hash", "log_index")
_TOKENS = "tokens"

# in the order a batch is written and produced: a block before what it contains, a token and a pool
# before the trades that name them
BLOCKS: Kind[Block] = Kind(
    "blocks", Block, "blocks", ("number",), ("number",), "number", "hash", revertible=True
)
TRANSACTIONS: Kind[Transaction] = Kind(
    "transactions", Transaction, "transactions", ("hash",), ("block_number", "transaction_index"), *_IN_BLOCK
)
LOGS: Kind[Log] = Kind("logs", Log, "logs", _LOG_KEY, ("block_number", "log_index"), *_IN_BLOCK)
TOKEN_TRANSFERS: Kind[TokenTransfer] = Kind(
    "token_transfers",
    TokenTransfer,
    "token_transfers",
    ("block_hash", "log_index", "batch_index"),
    ("block_number", "log_index", "batch_index"),
    *_IN_BLOCK,
    refers={"token_address": _TOKENS},
)
TOKENS: Kind[Token] = Kind(_TOKENS, Token, "tokens", ("address",), ("address",))
# a pool belongs to the block whose factory event created it; one learned otherwise belongs to none
POOLS: Kind[Pool] = Kind(
    "pools",
    Pool,
    "pools",
    ("address",),
    ("address",),
    "created_block_number",
    "created_block_hash",
    revertible=True,
    refers={"token0": _TOKENS, "token1": _TOKENS},
)
DEX_TRADES: Kind[DexTrade] = Kind(
    "dex_trades",
    DexTrade,
    "dex_trades",
    _LOG_KEY,
    ("block_number", "log_index"),
    *_IN_BLOCK,
    refers={"pool_address": "pools", "token_bought_address": _TOKENS, "token_sold_address": _TOKENS},
)
DEX_LIQUIDITY: Kind[DexLiquidity] = Kind(
    "dex_liquidity",
    DexLiquidity,
    "dex_liquidity",
    _LOG_KEY,
    ("block_number", "log_index"),
    *_IN_BLOCK,
    refers={"pool_address": "pools", "token0": _TOKENS, "token1": _TOKENS},
)
# not in a batch's records (``Batch.reorg``): stored by the writer, produced on ``head.reorgs`` only
REORGS: Kind[Reorg] = Kind(
    "reorgs",
    Reorg,
    "reorgs",
    (),
    ("common_ancestor_number",),
    "common_ancestor_number",
    "common_ancestor_hash",
    message_key=_reorg_key,
)

# what a chain batch carries, in writing order
BATCH_KINDS: tuple[Kind[Any], ...] = (
    BLOCKS,
    TRANSACTIONS,
    LOGS,
    TOKEN_TRANSFERS,
    TOKENS,
    POOLS,
    DEX_TRADES,
    DEX_LIQUIDITY,
)
CHAIN: tuple[Kind[Any], ...] = (*BATCH_KINDS, REORGS)

# CEX kinds: keyed by exchange, symbol and time, tied to no block, never reverted. Declared for the
# CEX module's sinks; nothing derives from them yet.
_CEX_TIME = ("exchange", "symbol", "atom_timestamp")
CEX: tuple[Kind[Any], ...] = (
    Kind("cex_trades", Trade, "cex_trades", ("exchange", "symbol", "trade_id"), _CEX_TIME),
    Kind("book_deltas", BookDelta, "cex_book_events", _CEX_TIME, _CEX_TIME),
    Kind("book_snapshots", BookSnapshot, "cex_book_events", _CEX_TIME, _CEX_TIME),
    Kind("tickers", Ticker, "cex_tickers", _CEX_TIME, _CEX_TIME),
    Kind("candles", Candle, "candles", ("exchange", "symbol", "interval", "start"), _CEX_TIME),
    Kind("funding_rates", FundingRate, "funding_rates", _CEX_TIME, _CEX_TIME),
    Kind("open_interest", OpenInterest, "open_interest", _CEX_TIME, _CEX_TIME),
)

BY_NAME: dict[str, Kind[Any]] = {k.name: k for k in (*CHAIN, *CEX)}
BY_RECORD: dict[type[Record], Kind[Any]] = {k.record: k for k in (*CHAIN, *CEX)}
BY_TYPE: dict[str, Kind[Any]] = {k.type: k for k in (*CHAIN, *CEX)}


def kind_of(cls: type[R]) -> Kind[R]:
    kind = BY_RECORD.get(cls)
    if kind is None:
        raise TypeError(f"{cls.__name__} is not a record kind (records.kinds)")
    return kind
