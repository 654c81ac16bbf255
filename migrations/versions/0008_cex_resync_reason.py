"""cex_book_events.reason: why a book was found wrong (``gap``, ``checksum``, ``crossed``, ``stale``, ...),
on ``resync`` rows, so a websocket client of a separate ``serve`` (NOTIFY path) gets the same resync
message as one in process; null on other rows and on resyncs stored before this revision

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cex_book_events", sa.Column("reason", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("cex_book_events", "reason")
