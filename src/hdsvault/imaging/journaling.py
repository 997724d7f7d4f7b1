"""Access decisions and journal entries of imaging acts.

Event types: ``dicom.store`` (modification/create), ``dicom.query`` (access/execute: QIDO-RS,
C-FIND), ``dicom.retrieve`` (access/read: WADO-RS, C-MOVE, C-GET), ``dicom.echo`` is not
journaled (no data). Objects are ``ImagingStudy/<id>`` (the study's random id, also its FHIR
id) and ``DicomInstance/<id>``; the patient is ``Patient/<id>`` once the study is linked. The
actor is the principal's subject: ``dicom:<calling AE title>`` for a DIMSE peer, the token or
OpenID subject for DICOMweb. Query keys are clinical content: they go only into
``detail_sealed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from hdsvault.access.context import RequestMeta, current_request_meta
from hdsvault.access.decision import AccessRequest, Operation, authorize
from hdsvault.access.journaling import journal_decision
from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.sealed import journal_detail_context
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.store import append_many
from hdsvault.records.model import Caller

STORE = "dicom.store"
QUERY = "dicom.query"
RETRIEVE = "dicom.retrieve"
_SHAPE = {
    STORE: (Category.MODIFICATION, Action.CREATE),
    QUERY: (Category.ACCESS, Action.EXECUTE),
    RETRIEVE: (Category.ACCESS, Action.READ),
}
_MAX_OBJECTS = 500


def _access(caller: Caller, operation: Operation) -> AccessRequest:
    return AccessRequest(
        principal=caller.principal,
        operation=operation,
        tenant=caller.tenant,
        resource_type="ImagingStudy",
    )


def allowed(caller: Caller, operation: Operation) -> bool:
    """Whether the policy allows it, journaling nothing: a refusal is for :func:`allow`."""
    return authorize(_access(caller, operation)).allowed


def allow(engine: Engine, caller: Caller, operation: Operation) -> None:
    """Ask the policy (resource type ImagingStudy); journal and raise FORBIDDEN on refusal."""
    request = _access(caller, operation)
    decision = authorize(request)
    if decision.allowed:
        return
    meta = current_request_meta() or RequestMeta(
        source_address=caller.source_address, request_id=caller.request_id
    )
    with engine.begin() as conn:
        journal_decision(conn, request, decision, meta)
    raise ImagingError(Kind.FORBIDDEN, f"{operation.value} refused: {decision.reason}")


def seal_detail(keys: DataKeys, caller: Caller, detail: object) -> bytes:
    blob = keys.seal(
        json.dumps(detail, sort_keys=True).encode(),
        journal_detail_context(caller.tenant, caller.request_id),
    )
    return bytes(blob)


def entries(
    caller: Caller,
    event: str,
    touched: Iterable[tuple[str, str | None]],
    *,
    outcome: Outcome = Outcome.SUCCESS,
    detail: bytes | None = None,
    when: datetime | None = None,
) -> list[JournalEntry]:
    """One entry per patient of the ``(object, patient)`` pairs (at least one entry)."""
    category, action = _SHAPE[event]
    groups: dict[str | None, list[str]] = {}
    for ref, patient in touched:
        refs = groups.setdefault(patient, [])
        if ref not in refs[-2:]:
            refs.append(ref)
    if not groups:
        groups[None] = []
    t = when or datetime.now(UTC)
    out = []
    for patient, refs in groups.items():
        for i in range(0, max(len(refs), 1), _MAX_OBJECTS):
            out.append(
                JournalEntry(
                    log_id=caller.tenant,
                    time=t,
                    event_type=event,
                    category=category,
                    action=action,
                    outcome=outcome,
                    severity=Severity.INFO if outcome is Outcome.SUCCESS else Severity.WARNING,
                    actor=caller.principal.subject[:255],
                    actor_role=str(caller.principal.role),
                    professional_id=caller.principal.professional_id,
                    objects=tuple(refs[i : i + _MAX_OBJECTS]),
                    patient=patient,
                    source_address=caller.source_address,
                    request_id=caller.request_id,
                    detail_sealed=detail,
                )
            )
    return out


def record(conn: Connection, journal: Sequence[JournalEntry]) -> None:
    append_many(conn, journal)
