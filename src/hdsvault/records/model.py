"""The values that travel between the record store and its faces.

``Caller`` is who asks and from where (for access decisions and the journal); ``Stored`` is
one resource version as the store returns it, decrypted; ``ResourceKey`` names a logical
resource. Kept free of HTTP so the CLI importer and the REST face share them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hdsvault.access.tokens import Principal
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.search.definitions import resource_types

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
"""FHIR ``id`` datatype."""

Json = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who calls, for which establishment, from where (request id ties journal and logs)."""

    principal: Principal
    tenant: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source_address: str | None = None


@dataclass(frozen=True, order=True)
class ResourceKey:
    """A logical resource: ``Type/id``."""

    type: str
    id: str

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass(frozen=True)
class Stored:
    """One resource version. ``resource`` is None for a deletion (a tombstone version)."""

    type: str
    id: str
    version: int
    last_updated: datetime
    resource: Json | None

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.type, self.id)

    @property
    def deleted(self) -> bool:
        return self.resource is None


def new_id() -> str:
    """Server-assigned ids are random UUIDs: they reveal neither order nor volume."""
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def instant(t: datetime) -> str:
    """``meta.lastUpdated`` form: UTC, microseconds, ``Z``."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc(t: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite gives naive UTC values back)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def check_type(resource_type: str) -> str:
    """``resource_type`` if it is an R4 resource type the store keeps, else NOT_FOUND."""
    if resource_type not in storable_types():
        known = resource_type in _NOT_STORED
        raise RecordError(
            Problem.NOT_FOUND,
            f"resource type {resource_type!r} is not stored by this server"
            if known
            else f"unknown resource type {resource_type[:64]!r} (FHIR R4)",
        )
    return resource_type


def check_id(resource_id: str, what: str = "id") -> str:
    if not ID_PATTERN.fullmatch(resource_id):
        raise RecordError(
            Problem.INVALID,
            f"{what} {resource_id[:80]!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
        )
    return resource_id


_NOT_STORED = frozenset({"Bundle", "OperationOutcome", "Parameters", "AuditEvent"})
"""Types the store does not keep as resources: bundles are processed, AuditEvent is a view
of the journal (``records.audit_view``), the others are protocol messages."""


def storable_types() -> frozenset[str]:
    return _STORABLE


_STORABLE = frozenset(resource_types() - _NOT_STORED)
