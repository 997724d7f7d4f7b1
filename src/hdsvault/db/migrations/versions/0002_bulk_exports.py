"""bulk exports: FHIR Bulk Data $export jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 11:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_exports",
        sa.Column(
            "id", sa.String(length=32), nullable=False, comment="random; names the job in URLs"
        ),
        sa.Column("tenant_id", sa.String(length=9), nullable=False),
        sa.Column(
            "requested_by", sa.String(length=255), nullable=False, comment="principal subject"
        ),
        sa.Column("request", sa.Text(), nullable=False, comment="the kick-off URL path and query"),
        sa.Column("types", sa.Text(), nullable=False, comment="JSON array; empty = every type"),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=False, comment="system | patient"),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="accepted|running|completed|failed|cancelled",
        ),
        sa.Column("written", sa.Integer(), nullable=False, comment="resources written so far"),
        sa.Column("parts", sa.Text(), nullable=False, comment="JSON array of sealed parts"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_bulk_exports_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_exports")),
    )
    with op.batch_alter_table("bulk_exports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bulk_exports_tenant_created", ["tenant_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_bulk_exports_expires", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bulk_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_exports_expires")
        batch_op.drop_index("ix_bulk_exports_tenant_created")
    op.drop_table("bulk_exports")
