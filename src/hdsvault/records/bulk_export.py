"""FHIR Bulk Data ``$export``: a tenant's record exported asynchronously, sealed until downloaded.

Why beside ``hdsvault export``: the Bulk Data Access IG is how a data warehouse, a research
platform or the next host pulls a whole record over the API, without shell access to the
server, so that reversibility never needs an operator who could read the files.

The flow (Bulk Data Access IG v2, system level):

1. :func:`kick_off` authorizes (``Operation.EXPORT``) and records the job (``accepted``) and
   its journal entry in one transaction;
2. :func:`run` writes, type by type, the current version of every resource (or of those
   changed after ``_since``) as NDJSON, cut into parts of at most ``fhir.export_part_bytes``.
   Each part is sealed (AES-256-GCM under the tenant's data key; the context binds tenant,
   job and part name) and durable in the blob store before the job row lists it: nothing
   clear touches the disk (invariant 3), and a crash leaves at most an unlisted sealed part;
3. :func:`status` gives the progress, then the manifest;
4. :func:`open_part` journals the transfer durably before the first byte (invariant 2);
5. :func:`cancel` and :func:`expire` delete the parts, then the row.

Only the principal that kicked a job off may see, download or cancel it (the IG's rule). A
job whose worker stopped (no heartbeat for :data:`STALE_AFTER`: process killed, server
restarted) reads as failed; kick off again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update

from hdsvault.access.decision import Operation
from hdsvault.blobs import BlobError, BlobStore
from hdsvault.crypto.sealed import bulk_export_context
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import bulk_exports
from hdsvault.journal.entry import Action
from hdsvault.journal.store import append_many
from hdsvault.periodic import PeriodicTask
from hdsvault.records import jsonio, storage
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.guard import allow
from hdsvault.records.journaling import Interaction, commit_reads, entry, per_patient
from hdsvault.records.model import Caller, Json, instant, now, utc
from hdsvault.records.references import patient_of
from hdsvault.records.store import RecordStore

EXPIRY_INTERVAL_SECONDS = 60.0
STALE_AFTER = timedelta(minutes=5)
"""A running job that has not reported for this long has lost its worker."""

_JOB_ID_BYTES = 16


class ExportScope(StrEnum):
    SYSTEM = "system"
    PATIENT = "patient"


class ExportStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ExportRequest:
    """What was asked: resource types (empty = all), a ``_since`` instant, the kick-off URL.

    ``scope`` is ``system`` (everything) or ``patient`` (``Patient/$export``: the patients and
    the resources in their compartment, i.e. those that name a patient as their patient,
    subject, beneficiary or individual).
    """

    types: tuple[str, ...] = ()
    since: datetime | None = None
    request: str = "$export"
    scope: ExportScope = ExportScope.SYSTEM


@dataclass(frozen=True)
class ExportPart:
    """One sealed NDJSON file of the output (a type may span several parts)."""

    type: str
    name: str
    count: int
    blob_key: str
    key_version: int

    def to_json(self) -> Json:
        return {
            "type": self.type,
            "name": self.name,
            "count": self.count,
            "blob_key": self.blob_key,
            "key_version": self.key_version,
        }

    @classmethod
    def from_json(cls, data: Json) -> ExportPart:
        return cls(
            str(data["type"]),
            str(data["name"]),
            int(data["count"]),
            str(data["blob_key"]),
            int(data["key_version"]),
        )


@dataclass(frozen=True)
class ExportJob:
    """A job as stored; :attr:`status` already accounts for a worker that died."""

    id: str
    tenant: str
    requested_by: str
    request: str
    types: tuple[str, ...]
    since: datetime | None
    scope: ExportScope
    status: ExportStatus
    written: int
    parts: tuple[ExportPart, ...]
    error: str | None
    created_at: datetime
    transaction_time: datetime | None
    expires_at: datetime

    def manifest(self, file_url: str) -> Json:
        """The IG's completion manifest; ``file_url`` is formatted with ``name``."""
        return {
            "transactionTime": instant(self.transaction_time or self.created_at),
            "request": self.request,
            "requiresAccessToken": True,
            "output": [
                {"type": p.type, "url": file_url.format(name=p.name), "count": p.count}
                for p in self.parts
            ],
            "error": [],
        }


# ------------------------------------------------------------------ the job's life


def kick_off(store: RecordStore, caller: Caller, request: ExportRequest) -> ExportJob:
    """Record a new job (``accepted``) and its journal entry; :func:`run` does the work."""
    allow(store, caller, Operation.EXPORT)
    job_id = secrets.token_hex(_JOB_ID_BYTES)
    t = now()
    expires = t + timedelta(hours=store.options.export_retention_hours)
    with store.engine.begin() as conn:
        store.data_keys(conn, caller.tenant)  # an unknown or shredded tenant: 404 now
        conn.execute(
            insert(bulk_exports).values(
                id=job_id,
                tenant_id=caller.tenant,
                requested_by=caller.principal.subject,
                request=request.request,
                types=orjson.dumps(list(request.types)).decode(),
                since=request.since,
                scope=request.scope.value,
                status=ExportStatus.ACCEPTED.value,
                written=0,
                parts="[]",
                created_at=t,
                heartbeat_at=t,
                expires_at=expires,
            )
        )
        append_many(
            conn,
            [entry(caller, Interaction.EXPORT, t, objects=(f"BulkExport/{job_id}",))],
        )
    return _get(store, job_id)


def run(store: RecordStore, blobs: BlobStore, caller: Caller, job_id: str) -> ExportJob:
    """Write the job's sealed parts; never raises (a failure is recorded on the job)."""
    job = _get(store, job_id)
    if job.status is not ExportStatus.ACCEPTED:
        return job
    transaction_time = now()
    _set(store, job_id, status=ExportStatus.RUNNING, transaction_time=transaction_time)
    writer = _PartWriter(store, blobs, job)
    patients: set[str] = set()  # whose data the files hold, for the journal
    try:
        with read_connection(store.engine) as conn:
            keys = store.data_keys(conn, job.tenant)
            types = job.types or storage.types_present(conn, job.tenant)
            for rt in types:
                for resource in storage.iter_current(
                    conn, keys, job.tenant, rt, since=job.since, until=transaction_time
                ):
                    patient = patient_of(resource)
                    if patient is None and job.scope is ExportScope.PATIENT:
                        continue
                    if patient is not None:
                        patients.add(patient)
                    writer.add(rt, jsonio.dumps(resource) + b"\n")
                    if writer.cancelled:
                        return _get(store, job_id)
                writer.flush(rt)
    except Exception as exc:  # recorded on the job, reported by status
        _set(store, job_id, status=ExportStatus.FAILED, error=_safe_error(exc))
        return _get(store, job_id)
    with store.engine.begin() as conn:
        done = conn.execute(
            update(bulk_exports)
            .where(
                bulk_exports.c.id == job_id,
                bulk_exports.c.status == ExportStatus.RUNNING.value,
            )
            .values(status=ExportStatus.COMPLETED.value, heartbeat_at=now())
        ).rowcount
        if done:
            # The requester now holds these records (sealed, until downloaded): one
            # access entry per patient whose data the files contain.
            append_many(
                conn,
                per_patient(
                    caller,
                    Interaction.EXPORT,
                    now(),
                    [(f"BulkExport/{job_id}", p) for p in sorted(patients)],
                ),
            )
    return _get(store, job_id)


def status(store: RecordStore, caller: Caller, job_id: str) -> ExportJob:
    """The caller's job (404 for anyone else's: its existence is not revealed)."""
    job = _get(store, job_id)
    if job.tenant != caller.tenant or job.requested_by != caller.principal.subject:
        raise RecordError(Problem.NOT_FOUND, f"no export job {job_id[:40]!r}")
    if job.expires_at <= now():
        raise RecordError(Problem.GONE, f"export job {job_id} has expired")
    return job


def open_part(
    store: RecordStore, blobs: BlobStore, caller: Caller, job_id: str, name: str
) -> Iterator[bytes]:
    """Journal the transfer (durable), then the part's NDJSON bytes."""
    job = status(store, caller, job_id)
    if job.status is not ExportStatus.COMPLETED:
        raise RecordError(Problem.NOT_FOUND, f"export job {job_id} is {job.status.value}")
    part = next((p for p in job.parts if p.name == name), None)
    if part is None:
        raise RecordError(Problem.NOT_FOUND, f"export job {job_id} has no file {name[:80]!r}")
    commit_reads(
        store.platform,
        [
            entry(
                caller,
                Interaction.EXPORT,
                now(),
                objects=(f"BulkExport/{job_id}", f"Binary/{part.name}"),
            )
        ],
    )
    with read_connection(store.engine) as conn:
        keys = store.data_keys(conn, job.tenant)
    sealed = blobs.get(part.blob_key)
    yield keys.open(sealed, bulk_export_context(job.tenant, job_id, part.name))


def cancel(store: RecordStore, blobs: BlobStore, caller: Caller, job_id: str) -> None:
    """Stop the job (a running worker notices at its next part) and delete its files."""
    job = status(store, caller, job_id)
    with store.engine.begin() as conn:
        conn.execute(
            update(bulk_exports)
            .where(bulk_exports.c.id == job_id)
            .values(status=ExportStatus.CANCELLED.value)
        )
        append_many(
            conn,
            [
                entry(
                    caller,
                    Interaction.EXPORT,
                    now(),
                    objects=(f"BulkExport/{job_id}",),
                    action=Action.DELETE,
                )
            ],
        )
    _delete_parts(blobs, job.parts)


def expire(store: RecordStore, blobs: BlobStore, at: datetime | None = None) -> int:
    """Delete every job past its expiry (parts first, then the row); how many were."""
    limit = at or now()
    with read_connection(store.engine) as conn:
        rows = conn.execute(
            select(bulk_exports.c.id, bulk_exports.c.parts).where(
                bulk_exports.c.expires_at <= limit
            )
        ).all()
    for job_id, parts in rows:
        _delete_parts(blobs, _parse_parts(parts))
        with store.engine.begin() as conn:
            conn.execute(delete(bulk_exports).where(bulk_exports.c.id == job_id))
    return len(rows)


def expiry_task(store: RecordStore, blobs: BlobStore) -> PeriodicTask:
    """Each server process deletes expired jobs every minute (idempotent across processes)."""
    return PeriodicTask("bulk-export-expiry", EXPIRY_INTERVAL_SECONDS, lambda: expire(store, blobs))


# ------------------------------------------------------------------ writing parts


class _PartWriter:
    """Buffers one type's NDJSON and seals a part whenever the buffer reaches the limit."""

    def __init__(self, store: RecordStore, blobs: BlobStore, job: ExportJob) -> None:
        self.store, self.blobs, self.job = store, blobs, job
        self.limit = store.options.export_part_bytes
        self.buffer = bytearray()
        self.count = 0
        self.parts: list[ExportPart] = []
        self.cancelled = False

    def add(self, rt: str, line: bytes) -> None:
        self.buffer += line
        self.count += 1
        if len(self.buffer) >= self.limit:
            self.flush(rt)

    def flush(self, rt: str) -> None:
        if not self.count:
            return
        n = 1 + sum(p.type == rt for p in self.parts)
        name = f"{rt}.{n}.ndjson"
        key = f"{self.job.tenant}/bulk-export/{self.job.id}/{name}"
        with read_connection(self.store.engine) as conn:
            keys = self.store.data_keys(conn, self.job.tenant)
        sealed = keys.seal(self.buffer, bulk_export_context(self.job.tenant, self.job.id, name))
        self.blobs.put(key, sealed)  # durable before the row lists it
        self.parts.append(ExportPart(rt, name, self.count, key, keys.current_version))
        written = sum(p.count for p in self.parts)
        self.buffer, self.count = bytearray(), 0
        with self.store.engine.begin() as conn:
            listed = conn.execute(
                update(bulk_exports)
                .where(
                    bulk_exports.c.id == self.job.id,
                    bulk_exports.c.status == ExportStatus.RUNNING.value,
                )
                .values(
                    parts=orjson.dumps([p.to_json() for p in self.parts]).decode(),
                    written=written,
                    heartbeat_at=now(),
                )
            ).rowcount
        if not listed:  # cancelled meanwhile: the part just written is not listed anywhere
            self.cancelled = True
            _delete_parts(self.blobs, self.parts)


# ------------------------------------------------------------------ rows


def _get(store: RecordStore, job_id: str) -> ExportJob:
    with read_connection(store.engine) as conn:
        row = conn.execute(select(bulk_exports).where(bulk_exports.c.id == job_id)).first()
    if row is None:
        raise RecordError(Problem.NOT_FOUND, f"no export job {job_id[:40]!r}")
    state = ExportStatus(row.status)
    error = row.error
    if state in (ExportStatus.ACCEPTED, ExportStatus.RUNNING) and (
        utc(row.heartbeat_at) + STALE_AFTER < now()
    ):
        state, error = ExportStatus.FAILED, "the export worker stopped (server restarted?)"
    return ExportJob(
        id=row.id,
        tenant=row.tenant_id,
        requested_by=row.requested_by,
        request=row.request,
        types=tuple(orjson.loads(row.types)),
        since=utc(row.since) if row.since is not None else None,
        scope=ExportScope(row.scope),
        status=state,
        written=row.written,
        parts=_parse_parts(row.parts),
        error=error,
        created_at=utc(row.created_at),
        transaction_time=utc(row.transaction_time) if row.transaction_time else None,
        expires_at=utc(row.expires_at),
    )


def _set(store: RecordStore, job_id: str, **values: Any) -> None:
    if isinstance(values.get("status"), ExportStatus):
        values["status"] = values["status"].value
    with store.engine.begin() as conn:
        conn.execute(
            update(bulk_exports)
            .where(bulk_exports.c.id == job_id)
            .values(heartbeat_at=now(), **values)
        )


def _parse_parts(text: str) -> tuple[ExportPart, ...]:
    return tuple(ExportPart.from_json(p) for p in orjson.loads(text))


def _delete_parts(blobs: BlobStore, parts: tuple[ExportPart, ...] | list[ExportPart]) -> None:
    for part in parts:
        blobs.delete(part.blob_key)  # no error when already gone


def _safe_error(exc: Exception) -> str:
    """What failed, by kind only: a message could quote clinical content."""
    if isinstance(exc, RecordError | BlobError):
        return f"{type(exc).__name__}: {exc}"[:500]
    return f"{type(exc).__name__} while writing the export"
