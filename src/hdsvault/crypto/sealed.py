"""The registry of encrypted columns: where ciphertexts live and what context binds each one.

Rewrap (re-encryption to the newest data key) and verification walk this registry, so a new
table holding ciphertexts registers here once and is covered by both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table

from hdsvault.crypto.aead import SealContext
from hdsvault.db.schema import resource_versions


@dataclass(frozen=True)
class SealedColumn:
    """One column of AEAD blobs, its key-version column and how to rebuild each row's context."""

    table: Table
    body: Column[Any]
    key_version: Column[Any]
    tenant: Column[Any]
    context: Callable[[Any], SealContext]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.body.name}"


def resource_context(
    tenant: str, resource_type: str, resource_id: str, version: int
) -> SealContext:
    """The context of one stored resource version: moving its ciphertext anywhere else fails."""
    return SealContext(tenant, "resource/" + resource_type, resource_id, version)


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(
        table=resource_versions,
        body=resource_versions.c.body,
        key_version=resource_versions.c.key_version,
        tenant=resource_versions.c.tenant_id,
        context=lambda row: resource_context(
            row.tenant_id, row.resource_type, row.resource_id, row.version_id
        ),
    ),
)
