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
from hdsvault.db.schema import (
    hl7_messages,
    imaging_instances,
    imaging_series,
    imaging_studies,
    resource_versions,
)


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


def journal_detail_context(tenant: str, request_id: str) -> SealContext:
    """The context of a journal entry's ``detail_sealed`` (e.g. the search parameters).

    Not registered in :data:`SEALED_COLUMNS`: the journal's leaf hash covers these ciphertext
    bytes, so rewrapping them would break the Merkle tree; they stay on the key version that
    sealed them (older versions are kept while anything needs them).
    """
    return SealContext(tenant, "journal", request_id, "detail")


def imaging_meta_context(kind: str, tenant: str, item_id: str) -> SealContext:
    """Sealed DICOM metadata of a study, series or instance row (``kind`` says which)."""
    return SealContext(tenant, kind, item_id, "meta")


def hl7_message_context(tenant: str, message_id: str, part: str = "message") -> SealContext:
    """A received HL7 v2 message (``part="message"``) or the ACK sent for it (``"ack"``)."""
    return SealContext(tenant, "hl7v2/" + part, message_id, 1)


def bulk_export_context(tenant: str, job_id: str, part: str) -> SealContext:
    """One sealed NDJSON part of a bulk ``$export`` job (``part`` is its file name).

    Not registered in :data:`SEALED_COLUMNS`: parts live in the blob store for at most
    ``fhir.export_retention_hours`` and are deleted, never rewrapped.
    """
    return SealContext(tenant, "bulk-export", job_id, part)


def _meta_column(table: Table, kind: str) -> SealedColumn:
    """The sealed ``meta`` column of an imaging index table (study, series, instance)."""
    return SealedColumn(
        table=table,
        body=table.c.meta,
        key_version=table.c.key_version,
        tenant=table.c.tenant_id,
        context=lambda row: imaging_meta_context(kind, row.tenant_id, row.id),
    )


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
    *(
        _meta_column(table, kind)
        for table, kind in (
            (imaging_studies, "imaging/study"),
            (imaging_series, "imaging/series"),
            (imaging_instances, "imaging/instance-meta"),
        )
    ),
    SealedColumn(
        table=hl7_messages,
        body=hl7_messages.c.message,
        key_version=hl7_messages.c.key_version,
        tenant=hl7_messages.c.tenant_id,
        context=lambda row: hl7_message_context(row.tenant_id, row.id),
    ),
)
