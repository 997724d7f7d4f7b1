"""journal: the pending-entries index covers pending entries only (partial)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:40:00

The sequencer asks every second which logs have pending entries; with a full index that
question scanned every entry ever journaled (~70 ms at 1M entries, linear in the journal's
size). A partial index on ``seq IS NULL`` holds only what is pending.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_journal_entries_pending")
        batch_op.create_index(
            "ix_journal_entries_pending",
            ["log_id", "id"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_journal_entries_pending")
        batch_op.create_index("ix_journal_entries_pending", ["log_id", "id"], unique=False)
