"""imaging: data-key version of each instance blob (so that rewrap can find old blobs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:50:00

Existing rows get NULL ("not recorded"): their blob may be on an older version than their
``key_version`` (which is the metadata's, and rewrap moved it without the blob), so the only
truth is the blob's own header; ``keys rewrap`` reads it and fills the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("imaging_instances") as batch:
        batch.add_column(
            sa.Column(
                "blob_key_version",
                sa.Integer(),
                nullable=True,
                comment="data-key version of the blob; NULL: stored before it was recorded",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("imaging_instances") as batch:
        batch.drop_column("blob_key_version")
