"""pools: the contract that emits a pool's events (its id may be a bytes32, not an address), its token
list (N tokens, Balancer) and its hooks (Uniswap v4)

``pools.address`` stays the key and holds the protocol's pool id: the pool's contract address for
Uniswap v2/v3, the 32-byte PoolId for Uniswap v4, the poolId for Balancer v2. Existing rows are
v2/v3 pools: they emit their own events and hold two tokens.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pools", sa.Column("contract", sa.Text(), nullable=True))
    op.add_column("pools", sa.Column("tokens", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("pools", sa.Column("hooks", sa.Text(), nullable=True))
    op.execute("UPDATE pools SET contract = address, tokens = ARRAY[token0, token1]")
    op.create_index("ix_pools_contract", "pools", ["contract"])


def downgrade() -> None:
    op.drop_index("ix_pools_contract", table_name="pools")
    op.drop_column("pools", "hooks")
    op.drop_column("pools", "tokens")
    op.drop_column("pools", "contract")
