"""Journal entries of FHIR interactions (IHE BALP-like), built in one place.

Why grouped by patient: the journal's ``patient`` column is what answers "who accessed my
record" (``$access-history``, the AuditEvent view). An interaction touching resources of
several patients (a search page, an import batch) is recorded as one entry per patient,
each naming that patient's resources, plus one entry for resources of no patient. Entries
of one interaction share the request id.

What could reveal clinical content — the search parameters, a conditional URL — goes only
into ``detail_sealed``: AEAD under the tenant's data key, context ``journal`` + request id
(``crypto.sealed.journal_detail_context``). Object references (``Type/id``, random ids) and
the patient reference are clear: they are what the auditor searches on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from hdsvault.crypto.aead import DataKeys
from hdsvault.crypto.sealed import journal_detail_context
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.group_commit import JournalUnavailable
from hdsvault.journal.store import append_many
from hdsvault.platform import Platform
from hdsvault.records import jsonio
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.model import Caller

_MAX_OBJECTS = 500
"""References per entry; a larger group is split into several entries."""


class Interaction(StrEnum):
    """FHIR interactions (and store operations) as journal event types."""

    READ = "fhir.read"
    VREAD = "fhir.vread"
    SEARCH = "fhir.search"
    HISTORY = "fhir.history"
    CREATE = "fhir.create"
    UPDATE = "fhir.update"
    PATCH = "fhir.patch"
    DELETE = "fhir.delete"
    TRANSACTION = "fhir.transaction"
    IMPORT = "fhir.import"
    EXPORT = "fhir.export"
    AUDIT = "fhir.audit"
    DENIED = "fhir.denied"


_SHAPE: dict[Interaction, tuple[Category, Action]] = {
    Interaction.READ: (Category.ACCESS, Action.READ),
    Interaction.VREAD: (Category.ACCESS, Action.READ),
    Interaction.SEARCH: (Category.ACCESS, Action.EXECUTE),
    Interaction.HISTORY: (Category.ACCESS, Action.READ),
    Interaction.CREATE: (Category.MODIFICATION, Action.CREATE),
    Interaction.UPDATE: (Category.MODIFICATION, Action.UPDATE),
    Interaction.PATCH: (Category.MODIFICATION, Action.UPDATE),
    Interaction.DELETE: (Category.MODIFICATION, Action.DELETE),
    Interaction.TRANSACTION: (Category.MODIFICATION, Action.EXECUTE),
    Interaction.IMPORT: (Category.TRANSFER, Action.CREATE),
    Interaction.EXPORT: (Category.TRANSFER, Action.READ),
    Interaction.AUDIT: (Category.ACCESS, Action.READ),
    Interaction.DENIED: (Category.ACCESS, Action.EXECUTE),
}


_GROUPED = 1000
"""Read entries of one request committed through the group commit; more take their own."""


def commit_reads(platform: Platform, entries: Sequence[JournalEntry]) -> None:
    """Journal read traces durably before the data is returned (invariant 2).

    Through the platform's group commit: the entries of one request (one per patient of a
    search page) go into the same batch, and concurrent reads share its transaction and
    its fsync. A request with more than :data:`_GROUPED` entries (a bulk export: one per
    patient) commits in a transaction of its own, so as not to hold other reads' batch.
    """
    try:
        if len(entries) <= _GROUPED:
            platform.durable_journal().submit(entries).wait()
            return
        with platform.engine.begin() as conn:
            append_many(conn, entries)
    except (JournalUnavailable, SQLAlchemyError) as exc:  # no trace, no data
        raise RecordError(
            Problem.UNAVAILABLE, f"journal unavailable, nothing returned: {exc}"[:300]
        ) from None


def seal_detail(keys: DataKeys, caller: Caller, detail: object) -> bytes:
    """``detail`` (JSON-able) sealed for the journal under the tenant's data key."""
    return bytes(
        keys.seal(jsonio.dumps(detail), journal_detail_context(caller.tenant, caller.request_id))
    )


def open_detail(keys: DataKeys, tenant: str, request_id: str, blob: bytes) -> object:
    """The clear detail of an entry (AuditEvent view, for the DPO)."""
    return jsonio.loads(keys.open(blob, journal_detail_context(tenant, request_id)))


def entry(
    caller: Caller,
    interaction: Interaction,
    when: datetime,
    *,
    objects: Sequence[str] = (),
    patient: str | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    detail: bytes | None = None,
    action: Action | None = None,
    log_id: str | None = None,
) -> JournalEntry:
    category, default_action = _SHAPE[interaction]
    failed = outcome is not Outcome.SUCCESS
    return JournalEntry(
        log_id=log_id or caller.tenant,
        time=when,
        event_type=interaction.value,
        category=category,
        action=action or default_action,
        outcome=outcome,
        severity=Severity.WARNING if failed else Severity.INFO,
        actor=caller.principal.subject,
        actor_role=caller.principal.role.value,
        objects=tuple(objects),
        patient=patient,
        source_address=caller.source_address,
        request_id=caller.request_id,
        detail_sealed=detail,
    )


def per_patient(
    caller: Caller,
    interaction: Interaction,
    when: datetime,
    touched: Iterable[tuple[str, str | None]],
    *,
    detail: bytes | None = None,
    action: Action | None = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> list[JournalEntry]:
    """Entries for ``touched`` = (``Type/id``, patient or None) pairs, one per patient.

    Always at least one entry (an empty search is an access too).
    """
    groups: dict[str | None, list[str]] = {}
    for ref, patient in touched:
        refs = groups.setdefault(patient, [])
        if not refs or refs[-1] != ref:
            refs.append(ref)
    if not groups:
        groups[None] = []
    out: list[JournalEntry] = []
    for patient, refs in groups.items():
        chunks = [refs[i : i + _MAX_OBJECTS] for i in range(0, len(refs), _MAX_OBJECTS)] or [[]]
        out.extend(
            entry(
                caller,
                interaction,
                when,
                objects=chunk,
                patient=patient,
                detail=detail,
                action=action,
                outcome=outcome,
            )
            for chunk in chunks
        )
    return out
