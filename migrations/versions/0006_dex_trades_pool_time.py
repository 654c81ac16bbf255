"""dex_trades (pool_address, block_time): a pool's candles and time-filtered trades read only the window

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_dex_trades_pool_time", "dex_trades", ["pool_address", "block_time"])


def downgrade() -> None:
    op.drop_index("ix_dex_trades_pool_time", table_name="dex_trades")
