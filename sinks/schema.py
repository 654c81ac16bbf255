"""The storage schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it.

Choices, and why:
- Addresses and hashes are lower-case ``0x`` text, the same form as the API, Kafka and the
  records, so nothing converts on the hot path and ad-hoc SQL reads naturally. ``bench/storage.py``
  measures text against bytea for the same rows (size and COPY rate); see its output in the README.
- Raw token amounts and wei values are ``NUMERIC(78,0)`` (2^256 has 78 digits); exact human
  amounts and prices are unconstrained ``NUMERIC``. Never floats.
- Primary keys are natural keys (block hash, tx hash, (block_hash, log_index), ...), so a replay
  is an idempotent upsert. ``blocks.number`` is unique: the table holds one canonical chain, so a
  second block at a height without a reorg is an error, not a silent fork.
- Every block-derived table is in ``BLOCK_TABLES`` (derived from ``records.kinds``) with its block
  column; a reorg deletes rows above the common ancestor from all of them in the writer's transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from records import kinds

metadata = sa.MetaData()

U256 = sa.Numeric(78, 0)
EXACT = sa.Numeric()


def _hash(name: str, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.Text, **kw)


blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("number", sa.BigInteger, nullable=False),
    _hash("hash", primary_key=True),
    _hash("parent_hash", nullable=False),
    sa.Column("nonce", sa.Text),
    sa.Column("sha3_uncles", sa.Text),
    sa.Column("logs_bloom", sa.Text),
    sa.Column("transactions_root", sa.Text),
    sa.Column("state_root", sa.Text),
    sa.Column("receipts_root", sa.Text),
    sa.Column("miner", sa.Text),
    sa.Column("difficulty", U256),
    sa.Column("total_difficulty", U256),
    sa.Column("extra_data", sa.Text),
    sa.Column("size", sa.BigInteger),
    sa.Column("gas_limit", sa.BigInteger, nullable=False),
    sa.Column("gas_used", sa.BigInteger, nullable=False),
    sa.Column("base_fee_per_gas", U256),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("transaction_count", sa.Integer, nullable=False),
    sa.Column("withdrawals_root", sa.Text),
    sa.Column("withdrawals", JSONB),
    sa.Column("blob_gas_used", sa.BigInteger),
    sa.Column("excess_blob_gas", sa.BigInteger),
    sa.Column("parent_beacon_block_root", sa.Text),
    sa.Column("requests_hash", sa.Text),  # EIP-7685 (Prague)
    sa.Index("ix_blocks_number", "number", unique=True),
    sa.Index("ix_blocks_timestamp", "timestamp"),
)

transactions = sa.Table(
    "transactions",
    metadata,
    _hash("hash", primary_key=True),
    sa.Column("block_number", sa.BigInteger, nullable=False),
    _hash("block_hash", nullable=False),
    sa.Column("block_timestamp", sa.BigInteger, nullable=False),
    sa.Column("transaction_index", sa.Integer, nullable=False),
    sa.Column("nonce", sa.Numeric(20, 0), nullable=False),
    sa.Column("from_address", sa.Text, nullable=False),
    sa.Column("to_address", sa.Text),
    sa.Column("value", U256, nullable=False),
    sa.Column("gas", sa.BigInteger, nullable=False),
    sa.Column("gas_price", U256),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("max_fee_per_gas", U256),
    sa.Column("max_priority_fee_per_gas", U256),
    sa.Column("max_fee_per_blob_gas", U256),
    sa.Column("blob_versioned_hashes", ARRAY(sa.Text)),
    sa.Column("type", sa.Integer),
    sa.Column("status", sa.SmallInteger),
    sa.Column("root", sa.Text),
    sa.Column("gas_used", sa.BigInteger),
    sa.Column("cumulative_gas_used", sa.BigInteger),
    sa.Column("effective_gas_price", U256),
    sa.Column("contract_address", sa.Text),
    sa.Column("blob_gas_used", sa.BigInteger),
    sa.Column("blob_gas_price", U256),
    # EIP-7702 (type 4): [{chain_id, address, nonce, y_parity, r, s}, ...], the records' JSON form
    # (chain_id a decimal string, r and s 32-byte hex); null for other types
    sa.Column("authorization_list", JSONB),
    sa.Index("ix_transactions_block", "block_number", "transaction_index"),
    sa.Index("ix_transactions_from", "from_address", "block_number"),
    sa.Index("ix_transactions_to", "to_address", "block_number"),
)

logs = sa.Table(
    "logs",
    metadata,
    _hash("block_hash", primary_key=True),
    sa.Column("log_index", sa.Integer, primary_key=True),
    sa.Column("block_number", sa.BigInteger, nullable=False),
    _hash("transaction_hash", nullable=False),
    sa.Column("transaction_index", sa.Integer, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("topic0", sa.Text),
    sa.Column("topic1", sa.Text),
    sa.Column("topic2", sa.Text),
    sa.Column("topic3", sa.Text),
    sa.Index("ix_logs_block_number", "block_number", "log_index"),
    sa.Index("ix_logs_address", "address", "block_number"),
    sa.Index("ix_logs_topic0", "topic0", "block_number"),
    # Equality only (a transaction's logs): a hash index keeps a 4-byte hash code per entry instead of
    # the 66-byte text a B-tree compares at every level (migration 0010; bench/index_cost.py).
    sa.Index("ix_logs_transaction", "transaction_hash", postgresql_using="hash"),
)

token_transfers = sa.Table(
    "token_transfers",
    metadata,
    _hash("block_hash", primary_key=True),
    sa.Column("log_index", sa.Integer, primary_key=True),
    sa.Column("batch_index", sa.Integer, primary_key=True),
    sa.Column("block_number", sa.BigInteger, nullable=False),
    _hash("transaction_hash", nullable=False),
    sa.Column("transaction_index", sa.Integer, nullable=False),
    sa.Column("token_address", sa.Text, nullable=False),
    sa.Column("from_address", sa.Text, nullable=False),
    sa.Column("to_address", sa.Text, nullable=False),
    sa.Column("value", U256, nullable=False),
    sa.Column("token_id", U256),
    sa.Column("standard", sa.Text, nullable=False),
    sa.Column("operator", sa.Text),
    sa.Index("ix_token_transfers_block_number", "block_number", "log_index"),
    sa.Index("ix_token_transfers_token", "token_address", "block_number"),
    sa.Index("ix_token_transfers_from", "from_address", "block_number"),
    sa.Index("ix_token_transfers_to", "to_address", "block_number"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("address", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("decimals", sa.Integer),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_tokens_symbol", "symbol"),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("address", sa.Text, primary_key=True),
    sa.Column("protocol", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("factory", sa.Text),
    sa.Column("token0", sa.Text, nullable=False),
    sa.Column("token1", sa.Text, nullable=False),
    sa.Column("fee", sa.Integer),
    sa.Column("tick_spacing", sa.Integer),
    sa.Column("created_block_number", sa.BigInteger),
    sa.Column("created_block_hash", sa.Text),
    sa.Column("created_transaction_hash", sa.Text),
    sa.Column("created_log_index", sa.Integer),
    sa.Column("contract", sa.Text),  # emits the pool's events: the pool (v2/v3), PoolManager, Vault
    sa.Column("tokens", ARRAY(sa.Text)),  # every token, in the protocol's order (token0/1: the first two)
    sa.Column("hooks", sa.Text),  # Uniswap v4 hooks contract
    sa.Index("ix_pools_token0", "token0"),
    sa.Index("ix_pools_token1", "token1"),
    sa.Index("ix_pools_created_block", "created_block_number"),
    sa.Index("ix_pools_contract", "contract"),
)


def _trade_keys() -> list[sa.Column[Any]]:
    return [
        _hash("block_hash", primary_key=True),
        sa.Column("log_index", sa.Integer, primary_key=True),
        sa.Column("block_number", sa.BigInteger, nullable=False),
        sa.Column("block_time", sa.BigInteger, nullable=False),
        _hash("transaction_hash", nullable=False),
        sa.Column("transaction_index", sa.Integer, nullable=False),
        sa.Column("protocol", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("pool_address", sa.Text, nullable=False),
    ]


dex_trades = sa.Table(
    "dex_trades",
    metadata,
    *_trade_keys(),
    sa.Column("taker", sa.Text, nullable=False),
    sa.Column("maker", sa.Text),  # null for v3, as in Dune's dex.trades
    sa.Column("token_bought_address", sa.Text, nullable=False),
    sa.Column("token_sold_address", sa.Text, nullable=False),
    sa.Column("token_bought_symbol", sa.Text),
    sa.Column("token_sold_symbol", sa.Text),
    sa.Column("amount_bought_raw", U256, nullable=False),
    sa.Column("amount_sold_raw", U256, nullable=False),
    sa.Column("amount_bought", EXACT),
    sa.Column("amount_sold", EXACT),
    sa.Column("price", EXACT),
    sa.Column("tx_from", sa.Text, nullable=False),
    sa.Column("tx_to", sa.Text),
    sa.Index("ix_dex_trades_block_number", "block_number", "log_index"),
    sa.Index("ix_dex_trades_block_time", "block_time"),
    sa.Index("ix_dex_trades_pool", "pool_address", "block_number", "log_index"),  # migration 0009
    sa.Index("ix_dex_trades_pool_time", "pool_address", "block_time"),  # candles (migration 0006)
    sa.Index("ix_dex_trades_token_bought", "token_bought_address", "block_number"),
    sa.Index("ix_dex_trades_token_sold", "token_sold_address", "block_number"),
    sa.Index("ix_dex_trades_taker", "taker", "block_number", "log_index"),  # migration 0009
)

dex_liquidity = sa.Table(
    "dex_liquidity",
    metadata,
    *_trade_keys(),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("token0", sa.Text, nullable=False),
    sa.Column("token1", sa.Text, nullable=False),
    sa.Column("amount0_raw", U256, nullable=False),
    sa.Column("amount1_raw", U256, nullable=False),
    sa.Column("amount0", EXACT),
    sa.Column("amount1", EXACT),
    sa.Column("owner", sa.Text),
    sa.Column("sender", sa.Text),
    sa.Column("liquidity", U256),
    sa.Column("tick_lower", sa.Integer),
    sa.Column("tick_upper", sa.Integer),
    sa.Column("amounts", JSONB),  # [{token, amount_raw, amount}] of every token (pools with N tokens)
    sa.Index("ix_dex_liquidity_block_number", "block_number", "log_index"),
    sa.Index("ix_dex_liquidity_pool", "pool_address", "block_number"),
)


def _cex_keys() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
    ]


def _cex_times() -> list[sa.Column[Any]]:
    return [
        sa.Column("event_timestamp", sa.BigInteger),  # ms, as the exchange gives it
        sa.Column("atom_timestamp", sa.BigInteger, nullable=False),  # µs, when dexnode received it
    ]


cex_trades = sa.Table(
    "cex_trades",
    metadata,
    *_cex_keys(),
    sa.Column("price", EXACT, nullable=False),
    sa.Column("size", EXACT, nullable=False),
    sa.Column("taker_side", sa.Text, nullable=False),
    sa.Column("trade_id", sa.Text),
    sa.Column("maker_order_id", sa.Text),
    sa.Column("taker_order_id", sa.Text),
    *_cex_times(),
    # Exchanges give trade ids; where one does not, rows are kept as received (NULLs never conflict).
    sa.Index("ux_cex_trades_natural", "exchange", "symbol", "trade_id", unique=True),
    sa.Index("ix_cex_trades_time", "exchange", "symbol", "atom_timestamp"),
)

cex_book_events = sa.Table(
    "cex_book_events",
    metadata,
    *_cex_keys(),
    sa.Column("kind", sa.Text, nullable=False),  # delta | snapshot | resync
    sa.Column("side", sa.Text),
    sa.Column("price", EXACT),
    sa.Column("size", EXACT),
    sa.Column("order_id", sa.Text),
    sa.Column("sequence", sa.BigInteger),
    sa.Column("bids", JSONB),  # snapshots: [[price, size], ...] as decimal strings
    sa.Column("asks", JSONB),
    *_cex_times(),
    sa.Column("engine_sequence", sa.BigInteger),  # Bybit seq (migration 0007)
    sa.Column("engine_timestamp", sa.BigInteger),  # Bybit cts, ms
    sa.Column("reason", sa.Text),  # resync rows: why the book was found wrong (migration 0008)
    sa.Index("ix_cex_book_events_time", "exchange", "symbol", "atom_timestamp"),
)

cex_tickers = sa.Table(
    "cex_tickers",
    metadata,
    *_cex_keys(),
    sa.Column("bid_price", EXACT),
    sa.Column("bid_size", EXACT),
    sa.Column("ask_price", EXACT),
    sa.Column("ask_size", EXACT),
    *_cex_times(),
    sa.Index("ix_cex_tickers_time", "exchange", "symbol", "atom_timestamp"),
)

candles = sa.Table(
    "candles",
    metadata,
    sa.Column("exchange", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("interval", sa.Text, primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True),
    sa.Column("end", sa.BigInteger, nullable=False),
    sa.Column("open", EXACT, nullable=False),
    sa.Column("high", EXACT, nullable=False),
    sa.Column("low", EXACT, nullable=False),
    sa.Column("close", EXACT, nullable=False),
    sa.Column("volume", EXACT, nullable=False),
    sa.Column("trades", sa.BigInteger),
    sa.Column("closed", sa.Boolean),
    *_cex_times(),
)

funding_rates = sa.Table(
    "funding_rates",
    metadata,
    *_cex_keys(),
    sa.Column("rate", EXACT, nullable=False),
    sa.Column("predicted_rate", EXACT),
    sa.Column("mark_price", EXACT),
    sa.Column("next_funding_time", sa.BigInteger),
    *_cex_times(),
    sa.Index("ix_funding_rates_time", "exchange", "symbol", "atom_timestamp"),
)

open_interest = sa.Table(
    "open_interest",
    metadata,
    *_cex_keys(),
    sa.Column("open_interest", EXACT, nullable=False),
    *_cex_times(),
    sa.Index("ix_open_interest_time", "exchange", "symbol", "atom_timestamp"),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("block_number", sa.BigInteger, nullable=False),
    sa.Column("block_hash", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

reorgs = sa.Table(
    "reorgs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("common_ancestor_number", sa.BigInteger, nullable=False),
    sa.Column("common_ancestor_hash", sa.Text, nullable=False),
    sa.Column("depth", sa.Integer, nullable=False),
    sa.Column("orphaned_hashes", ARRAY(sa.Text), nullable=False),
    sa.Column("new_hashes", ARRAY(sa.Text), nullable=False),
    sa.Index("ix_reorgs_ancestor", "common_ancestor_number"),
)

# Tables whose every row belongs to one block (``records.kinds``: a revertible kind whose block column
# is never null); a reorg deletes from each of them. Pools are block-derived only when created by a
# factory event in an indexed block, so they are not among them.
BLOCK_TABLES: tuple[sa.Table, ...] = tuple(
    metadata.tables[k.table]
    for k in kinds.CHAIN
    if k.revertible and k.block is not None and not metadata.tables[k.table].c[k.block].nullable
)

# Completed backfill chunks, each written in the same transaction as its blocks: the backfill's
# resume point (done ranges, gaps) and the follower's hand-off point (end of the contiguous range).
backfill_chunks = sa.Table(
    "backfill_chunks",
    metadata,
    sa.Column("first_block", sa.BigInteger, primary_key=True),
    sa.Column("last_block", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.Text, nullable=False),
    sa.Column("transaction_count", sa.Integer, nullable=False),
    sa.Column("log_count", sa.Integer, nullable=False),
    sa.Column("run_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
