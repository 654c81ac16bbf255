"""dex_liquidity.amounts: every token's amount of a liquidity event, for pools with more than two
tokens (Balancer v2); token0/token1 and amount0/amount1 keep the first two

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dex_liquidity", sa.Column("amounts", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("dex_liquidity", "amounts")
