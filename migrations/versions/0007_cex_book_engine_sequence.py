"""cex_book_events.engine_sequence and engine_timestamp: the matching engine's sequence and time where an
exchange sends them apart from the book's update id (Bybit v5 ``seq`` and ``cts``); null elsewhere

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cex_book_events", sa.Column("engine_sequence", sa.BigInteger, nullable=True))
    op.add_column("cex_book_events", sa.Column("engine_timestamp", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("cex_book_events", "engine_timestamp")
    op.drop_column("cex_book_events", "engine_sequence")
