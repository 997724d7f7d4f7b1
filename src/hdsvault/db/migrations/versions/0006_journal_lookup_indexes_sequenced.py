"""journal: the patient, actor and time lookup indexes cover sequenced entries only (partial)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 16:00:00

Every read of health data appends one journal entry per patient concerned, durably, before the
data is returned. With full indexes on ``(log_id, patient)`` and ``(log_id, actor)`` each
append also inserted into two B-trees keyed by effectively random values, so a commit wrote one
random page per patient per index (a search returning 17 patients' resources: 0.29 -> 0.79 ms
of commit). The views only ever show sequenced entries (``seq IS NOT NULL``), so the lookup
indexes can be partial on that condition: an append then touches only indexes in arrival order,
and the index entries are written by the sequencer, in batches, when it sets ``seq``.

``seq`` now ends the patient and actor keys: a patient's access history comes out of the
index in order. Without it SQLite's planner walked the whole log by ``seq`` rather than sort
the few entries of one patient (a history read every entry of the log).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LOOKUPS = {
    "ix_journal_entries_patient": ["log_id", "patient", "seq"],
    "ix_journal_entries_actor": ["log_id", "actor", "seq"],
    "ix_journal_entries_time": ["log_id", "time"],
}
_BEFORE = {name: columns[:2] for name, columns in _LOOKUPS.items()}


def upgrade() -> None:
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        for name, columns in _LOOKUPS.items():
            batch_op.drop_index(name)
            batch_op.create_index(
                name,
                columns,
                unique=False,
                sqlite_where=sa.text("seq IS NOT NULL"),
                postgresql_where=sa.text("seq IS NOT NULL"),
            )


def downgrade() -> None:
    with op.batch_alter_table("journal_entries", schema=None) as batch_op:
        for name, columns in _BEFORE.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False)
