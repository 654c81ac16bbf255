"""Prague fields (blocks.requests_hash, transactions.authorization_list) and a nullable dex_trades.maker

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blocks", sa.Column("requests_hash", sa.Text(), nullable=True))
    op.add_column(
        "transactions",
        sa.Column("authorization_list", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.alter_column("dex_trades", "maker", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # v3 trades have no maker (Dune's NULL); the old NOT NULL column held the pool address
    op.execute("UPDATE dex_trades SET maker = pool_address WHERE maker IS NULL")
    op.alter_column("dex_trades", "maker", existing_type=sa.Text(), nullable=False)
    op.drop_column("transactions", "authorization_list")
    op.drop_column("blocks", "requests_hash")
