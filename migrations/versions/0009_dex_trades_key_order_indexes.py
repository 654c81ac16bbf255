"""dex_trades by pool and by taker: indexes in the lists' full sort key (block_number, log_index)

A page of a pool's or a taker's trades is ordered by (block_number, log_index); with the indexes on
(pool_address, block_number) and (taker, block_number) Postgres read them in block order and sorted
each block's rows again (an incremental sort; a full sort after a taker's bitmap scan). With log_index
in the index the scan is the order: bench/api.py's 100-trade pages by pool 0.37-0.39 Postgres CPU-ms
instead of 0.42-0.45, by taker 0.37 instead of 0.44-0.45 (three rounds alternated with the old indexes,
sequential, rows in shared buffers). The write path, COPY of 100k generated trades into dex_trades with
all its indexes (three rounds): 21.3-22.4 us of Postgres CPU a row (21.4-24.1 with the old ones), all
indexes 72 MB instead of 69.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {"ix_dex_trades_pool": "pool_address", "ix_dex_trades_taker": "taker"}


def upgrade() -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name="dex_trades")
        op.create_index(name, "dex_trades", [column, "block_number", "log_index"])


def downgrade() -> None:
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name="dex_trades")
        op.create_index(name, "dex_trades", [column, "block_number"])
