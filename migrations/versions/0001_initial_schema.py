"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-20 23:51:25.156927
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("parent_hash", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("sha3_uncles", sa.Text(), nullable=True),
        sa.Column("logs_bloom", sa.Text(), nullable=True),
        sa.Column("transactions_root", sa.Text(), nullable=True),
        sa.Column("state_root", sa.Text(), nullable=True),
        sa.Column("receipts_root", sa.Text(), nullable=True),
        sa.Column("miner", sa.Text(), nullable=True),
        sa.Column("difficulty", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("total_difficulty", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("extra_data", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("gas_limit", sa.BigInteger(), nullable=False),
        sa.Column("gas_used", sa.BigInteger(), nullable=False),
        sa.Column("base_fee_per_gas", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("transaction_count", sa.Integer(), nullable=False),
        sa.Column("withdrawals_root", sa.Text(), nullable=True),
        sa.Column("withdrawals", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("blob_gas_used", sa.BigInteger(), nullable=True),
        sa.Column("excess_blob_gas", sa.BigInteger(), nullable=True),
        sa.Column("parent_beacon_block_root", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index("ix_blocks_number", "blocks", ["number"], unique=True)
    op.create_index("ix_blocks_timestamp", "blocks", ["timestamp"], unique=False)
    op.create_table(
        "candles",
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("interval", sa.Text(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Numeric(), nullable=False),
        sa.Column("high", sa.Numeric(), nullable=False),
        sa.Column("low", sa.Numeric(), nullable=False),
        sa.Column("close", sa.Numeric(), nullable=False),
        sa.Column("volume", sa.Numeric(), nullable=False),
        sa.Column("trades", sa.BigInteger(), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=True),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "interval", "start"),
    )
    op.create_table(
        "cex_book_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=True),
        sa.Column("price", sa.Numeric(), nullable=True),
        sa.Column("size", sa.Numeric(), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("bids", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("asks", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_cex_book_events_time", "cex_book_events", ["exchange", "symbol", "atom_timestamp"], unique=False
    )
    op.create_table(
        "cex_tickers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("bid_price", sa.Numeric(), nullable=True),
        sa.Column("bid_size", sa.Numeric(), nullable=True),
        sa.Column("ask_price", sa.Numeric(), nullable=True),
        sa.Column("ask_size", sa.Numeric(), nullable=True),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_cex_tickers_time", "cex_tickers", ["exchange", "symbol", "atom_timestamp"], unique=False
    )
    op.create_table(
        "cex_trades",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("price", sa.Numeric(), nullable=False),
        sa.Column("size", sa.Numeric(), nullable=False),
        sa.Column("taker_side", sa.Text(), nullable=False),
        sa.Column("trade_id", sa.Text(), nullable=True),
        sa.Column("maker_order_id", sa.Text(), nullable=True),
        sa.Column("taker_order_id", sa.Text(), nullable=True),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_cex_trades_time", "cex_trades", ["exchange", "symbol", "atom_timestamp"], unique=False
    )
    op.create_index("ux_cex_trades_natural", "cex_trades", ["exchange", "symbol", "trade_id"], unique=True)
    op.create_table(
        "cursors",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("stream"),
    )
    op.create_table(
        "dex_liquidity",
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_time", sa.BigInteger(), nullable=False),
        sa.Column("transaction_hash", sa.Text(), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("pool_address", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("token0", sa.Text(), nullable=False),
        sa.Column("token1", sa.Text(), nullable=False),
        sa.Column("amount0_raw", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("amount1_raw", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("amount0", sa.Numeric(), nullable=True),
        sa.Column("amount1", sa.Numeric(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("liquidity", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("tick_lower", sa.Integer(), nullable=True),
        sa.Column("tick_upper", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("block_hash", "log_index"),
    )
    op.create_index(
        "ix_dex_liquidity_block_number", "dex_liquidity", ["block_number", "log_index"], unique=False
    )
    op.create_index("ix_dex_liquidity_pool", "dex_liquidity", ["pool_address", "block_number"], unique=False)
    op.create_table(
        "dex_trades",
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_time", sa.BigInteger(), nullable=False),
        sa.Column("transaction_hash", sa.Text(), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("pool_address", sa.Text(), nullable=False),
        sa.Column("taker", sa.Text(), nullable=False),
        sa.Column("maker", sa.Text(), nullable=False),
        sa.Column("token_bought_address", sa.Text(), nullable=False),
        sa.Column("token_sold_address", sa.Text(), nullable=False),
        sa.Column("token_bought_symbol", sa.Text(), nullable=True),
        sa.Column("token_sold_symbol", sa.Text(), nullable=True),
        sa.Column("amount_bought_raw", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("amount_sold_raw", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("amount_bought", sa.Numeric(), nullable=True),
        sa.Column("amount_sold", sa.Numeric(), nullable=True),
        sa.Column("price", sa.Numeric(), nullable=True),
        sa.Column("tx_from", sa.Text(), nullable=False),
        sa.Column("tx_to", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("block_hash", "log_index"),
    )
    op.create_index("ix_dex_trades_block_number", "dex_trades", ["block_number", "log_index"], unique=False)
    op.create_index("ix_dex_trades_block_time", "dex_trades", ["block_time"], unique=False)
    op.create_index("ix_dex_trades_pool", "dex_trades", ["pool_address", "block_number"], unique=False)
    op.create_index("ix_dex_trades_taker", "dex_trades", ["taker", "block_number"], unique=False)
    op.create_index(
        "ix_dex_trades_token_bought", "dex_trades", ["token_bought_address", "block_number"], unique=False
    )
    op.create_index(
        "ix_dex_trades_token_sold", "dex_trades", ["token_sold_address", "block_number"], unique=False
    )
    op.create_table(
        "funding_rates",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("rate", sa.Numeric(), nullable=False),
        sa.Column("predicted_rate", sa.Numeric(), nullable=True),
        sa.Column("mark_price", sa.Numeric(), nullable=True),
        sa.Column("next_funding_time", sa.BigInteger(), nullable=True),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_funding_rates_time", "funding_rates", ["exchange", "symbol", "atom_timestamp"], unique=False
    )
    op.create_table(
        "logs",
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("transaction_hash", sa.Text(), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("topic0", sa.Text(), nullable=True),
        sa.Column("topic1", sa.Text(), nullable=True),
        sa.Column("topic2", sa.Text(), nullable=True),
        sa.Column("topic3", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("block_hash", "log_index"),
    )
    op.create_index("ix_logs_address", "logs", ["address", "block_number"], unique=False)
    op.create_index("ix_logs_block_number", "logs", ["block_number", "log_index"], unique=False)
    op.create_index("ix_logs_topic0", "logs", ["topic0", "block_number"], unique=False)
    op.create_index("ix_logs_transaction", "logs", ["transaction_hash"], unique=False)
    op.create_table(
        "open_interest",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("open_interest", sa.Numeric(), nullable=False),
        sa.Column("event_timestamp", sa.BigInteger(), nullable=True),
        sa.Column("atom_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_open_interest_time", "open_interest", ["exchange", "symbol", "atom_timestamp"], unique=False
    )
    op.create_table(
        "pools",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("protocol", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("factory", sa.Text(), nullable=True),
        sa.Column("token0", sa.Text(), nullable=False),
        sa.Column("token1", sa.Text(), nullable=False),
        sa.Column("fee", sa.Integer(), nullable=True),
        sa.Column("tick_spacing", sa.Integer(), nullable=True),
        sa.Column("created_block_number", sa.BigInteger(), nullable=True),
        sa.Column("created_block_hash", sa.Text(), nullable=True),
        sa.Column("created_transaction_hash", sa.Text(), nullable=True),
        sa.Column("created_log_index", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index("ix_pools_created_block", "pools", ["created_block_number"], unique=False)
    op.create_index("ix_pools_token0", "pools", ["token0"], unique=False)
    op.create_index("ix_pools_token1", "pools", ["token1"], unique=False)
    op.create_table(
        "reorgs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("common_ancestor_number", sa.BigInteger(), nullable=False),
        sa.Column("common_ancestor_hash", sa.Text(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("orphaned_hashes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("new_hashes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reorgs_ancestor", "reorgs", ["common_ancestor_number"], unique=False)
    op.create_table(
        "token_transfers",
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("transaction_hash", sa.Text(), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("token_address", sa.Text(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("to_address", sa.Text(), nullable=False),
        sa.Column("value", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("token_id", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("standard", sa.Text(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("block_hash", "log_index", "batch_index"),
    )
    op.create_index(
        "ix_token_transfers_block_number", "token_transfers", ["block_number", "log_index"], unique=False
    )
    op.create_index(
        "ix_token_transfers_from", "token_transfers", ["from_address", "block_number"], unique=False
    )
    op.create_index("ix_token_transfers_to", "token_transfers", ["to_address", "block_number"], unique=False)
    op.create_index(
        "ix_token_transfers_token", "token_transfers", ["token_address", "block_number"], unique=False
    )
    op.create_table(
        "tokens",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("decimals", sa.Integer(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index("ix_tokens_symbol", "tokens", ["symbol"], unique=False)
    op.create_table(
        "transactions",
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("block_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.Numeric(precision=20, scale=0), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("to_address", sa.Text(), nullable=True),
        sa.Column("value", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("gas", sa.BigInteger(), nullable=False),
        sa.Column("gas_price", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("max_fee_per_gas", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("max_priority_fee_per_gas", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("max_fee_per_blob_gas", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("blob_versioned_hashes", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("type", sa.Integer(), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=True),
        sa.Column("root", sa.Text(), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("cumulative_gas_used", sa.BigInteger(), nullable=True),
        sa.Column("effective_gas_price", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("contract_address", sa.Text(), nullable=True),
        sa.Column("blob_gas_used", sa.BigInteger(), nullable=True),
        sa.Column("blob_gas_price", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index(
        "ix_transactions_block", "transactions", ["block_number", "transaction_index"], unique=False
    )
    op.create_index("ix_transactions_from", "transactions", ["from_address", "block_number"], unique=False)
    op.create_index("ix_transactions_to", "transactions", ["to_address", "block_number"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transactions_to", table_name="transactions")
    op.drop_index("ix_transactions_from", table_name="transactions")
    op.drop_index("ix_transactions_block", table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_tokens_symbol", table_name="tokens")
    op.drop_table("tokens")
    op.drop_index("ix_token_transfers_token", table_name="token_transfers")
    op.drop_index("ix_token_transfers_to", table_name="token_transfers")
    op.drop_index("ix_token_transfers_from", table_name="token_transfers")
    op.drop_index("ix_token_transfers_block_number", table_name="token_transfers")
    op.drop_table("token_transfers")
    op.drop_index("ix_reorgs_ancestor", table_name="reorgs")
    op.drop_table("reorgs")
    op.drop_index("ix_pools_token1", table_name="pools")
    op.drop_index("ix_pools_token0", table_name="pools")
    op.drop_index("ix_pools_created_block", table_name="pools")
    op.drop_table("pools")
    op.drop_index("ix_open_interest_time", table_name="open_interest")
    op.drop_table("open_interest")
    op.drop_index("ix_logs_transaction", table_name="logs")
    op.drop_index("ix_logs_topic0", table_name="logs")
    op.drop_index("ix_logs_block_number", table_name="logs")
    op.drop_index("ix_logs_address", table_name="logs")
    op.drop_table("logs")
    op.drop_index("ix_funding_rates_time", table_name="funding_rates")
    op.drop_table("funding_rates")
    op.drop_index("ix_dex_trades_token_sold", table_name="dex_trades")
    op.drop_index("ix_dex_trades_token_bought", table_name="dex_trades")
    op.drop_index("ix_dex_trades_taker", table_name="dex_trades")
    op.drop_index("ix_dex_trades_pool", table_name="dex_trades")
    op.drop_index("ix_dex_trades_block_time", table_name="dex_trades")
    op.drop_index("ix_dex_trades_block_number", table_name="dex_trades")
    op.drop_table("dex_trades")
    op.drop_index("ix_dex_liquidity_pool", table_name="dex_liquidity")
    op.drop_index("ix_dex_liquidity_block_number", table_name="dex_liquidity")
    op.drop_table("dex_liquidity")
    op.drop_table("cursors")
    op.drop_index("ux_cex_trades_natural", table_name="cex_trades")
    op.drop_index("ix_cex_trades_time", table_name="cex_trades")
    op.drop_table("cex_trades")
    op.drop_index("ix_cex_tickers_time", table_name="cex_tickers")
    op.drop_table("cex_tickers")
    op.drop_index("ix_cex_book_events_time", table_name="cex_book_events")
    op.drop_table("cex_book_events")
    op.drop_table("candles")
    op.drop_index("ix_blocks_timestamp", table_name="blocks")
    op.drop_index("ix_blocks_number", table_name="blocks")
    op.drop_table("blocks")
