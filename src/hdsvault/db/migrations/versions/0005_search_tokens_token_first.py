"""records: search_tokens keeps (token, resource_id) only

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 13:30:00

The blind-index token already binds the tenant (the HMAC key is the tenant's) and the
resource type (the token's field is ``<ResourceType>.<parameter>``), so the ``tenant_id``
and ``resource_type`` columns repeated in every row (~50 rows per resource) said nothing a
lookup needs: rows of one token are of one tenant and one type. Without them the rows are
about a quarter smaller and the import's largest insert is cheaper. The table is rebuilt
(a primary key cannot change in place on SQLite); its rows are copied, so searches work on
the upgraded database without re-indexing.

Downgrade rebuilds the old rows from ``resources.tokens`` (each head keeps its current
token set, tenant and type), which is exactly what the old table held.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TOKEN_SIZE = 16
_CHUNK = 5000


def upgrade() -> None:
    op.rename_table("search_tokens", "search_tokens_0004")
    if op.get_bind().dialect.name == "postgresql":
        # The primary key's index keeps its name across a rename: free it for the new table.
        op.execute(
            "ALTER TABLE search_tokens_0004 RENAME CONSTRAINT pk_search_tokens "
            "TO pk_search_tokens_0004"
        )
    op.create_table(
        "search_tokens",
        sa.Column(
            "token", sa.LargeBinary(length=16), nullable=False, comment="HMAC blind-index token"
        ),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("token", "resource_id", name=op.f("pk_search_tokens")),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO search_tokens (token, resource_id) "
        "SELECT DISTINCT token, resource_id FROM search_tokens_0004 ORDER BY token, resource_id"
    )
    op.drop_table("search_tokens_0004")


def downgrade() -> None:
    op.drop_table("search_tokens")
    old = op.create_table(
        "search_tokens",
        sa.Column("tenant_id", sa.String(length=9), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column(
            "token", sa.LargeBinary(length=16), nullable=False, comment="HMAC blind-index token"
        ),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "resource_type", "token", "resource_id", name=op.f("pk_search_tokens")
        ),
        sqlite_with_rowid=False,
    )
    assert old is not None
    conn = op.get_bind()
    heads = conn.execute(
        sa.text(
            "SELECT tenant_id, resource_type, resource_id, tokens FROM resources "
            "WHERE deleted = :no AND tokens IS NOT NULL"
        ),
        {"no": False},
    ).fetchall()
    rows: list[dict[str, object]] = []
    for tenant, rtype, rid, packed in heads:
        packed = bytes(packed)
        for i in range(0, len(packed), _TOKEN_SIZE):
            rows.append(
                {
                    "tenant_id": tenant,
                    "resource_type": rtype,
                    "token": packed[i : i + _TOKEN_SIZE],
                    "resource_id": rid,
                }
            )
        if len(rows) >= _CHUNK:
            op.bulk_insert(old, rows)
            rows = []
    if rows:
        op.bulk_insert(old, rows)
