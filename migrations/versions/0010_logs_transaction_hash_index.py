"""logs by transaction: a hash index instead of a B-tree on transaction_hash

Every lookup by ``logs.transaction_hash`` is an equality (a transaction's logs in
``/v1/transactions/{hash}``, GraphQL ``logs(where: {transactionHash})`` and ``transactionHash_in``), so
the index needs no order. A B-tree entry holds the 66-character hex text and every insert compares it
at each level (random keys: a page read and a split anywhere in the tree); a hash index keeps a 4-byte
hash code per entry. ``bench/index_cost.py`` on the backfill's devnet (85,929 logs, 50 blocks a
transaction, each variant alone on top of the primary key, 3-5 rounds alternated, load 3-4): Postgres
0.00-0.11 CPU-s instead of 0.06-0.18 for this index, WAL 7.9 MB instead of 13.0; the index is larger
at this size (4.7 MB against 3.3: the B-tree deduplicates a transaction's several entries, the hash
index keeps each). Rebuilding it blocks writes to ``logs`` while it builds (docs/upgrading.md).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_logs_transaction", table_name="logs")
    op.create_index("ix_logs_transaction", "logs", ["transaction_hash"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_logs_transaction", table_name="logs")
    op.create_index("ix_logs_transaction", "logs", ["transaction_hash"])
