"""AuditEvent: a read-only FHIR view of a tenant's journal, for the DPO/auditor.

Why a view and not stored AuditEvents: the journal *is* the record of who did what (a
Merkle log, verifiable); copying it into resources would create a second, forgeable truth.
Each journal entry of the tenant's log maps to one AuditEvent following the IHE BALP
patterns (type ``rest`` + subtype the FHIR interaction, action, recorded, outcome, agent
who/role/network, source, entity ``what`` per object and a patient entity). The sealed
detail (search parameters) is not shown: it is clinical content.

Searchable by ``patient``, ``agent``, ``date`` (every prefix), ``action``; newest first.
Only Operation.AUDIT may read it (the DPO of the establishment), and every audit read is
itself journaled. ``Patient/{id}/$access-history`` is the same search fixed on one patient:
"who accessed my record", as the patient's right of access requires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, and_, func, or_, select

from hdsvault.access.decision import Operation
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import journal_entries
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.finder import _date_condition
from hdsvault.records.guard import allow
from hdsvault.records.journaling import Interaction, commit_reads, entry
from hdsvault.records.model import Caller, Json, check_id, instant, now, utc
from hdsvault.records.search import SearchError
from hdsvault.records.search.prefixes import parse_date_query

_SUBTYPES = {
    "fhir.read": "read",
    "fhir.vread": "vread",
    "fhir.search": "search-type",
    "fhir.history": "history-instance",
    "fhir.create": "create",
    "fhir.update": "update",
    "fhir.patch": "patch",
    "fhir.delete": "delete",
    "fhir.transaction": "transaction",
    "fhir.import": "transaction",
    "fhir.export": "search-system",
    "fhir.audit": "search-type",
}
_PARAMS = {"patient", "agent", "date", "action", "_count", "_sort"}
DEFAULT_COUNT = 50
MAX_COUNT = 1000


@dataclass
class AuditPage:
    total: int
    events: list[Json]
    count: int
    offset: int


def to_audit_event(row: Any) -> Json:
    """The AuditEvent of one journal row."""
    ev: Json = {
        "resourceType": "AuditEvent",
        "id": str(row.id),
        "meta": {"lastUpdated": instant(utc(row.time))},
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "action": row.action,
        "recorded": instant(utc(row.time)),
        "outcome": row.outcome,
        "outcomeDesc": row.event_type,
    }
    sub = _SUBTYPES.get(row.event_type)
    if sub is not None:
        ev["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": sub}]
    agent: Json = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "code": "humanuser" if not row.actor.startswith("token:") else "datacollector",
                }
            ]
        },
        "who": {"identifier": {"system": "urn:hdsvault:actor", "value": row.actor}},
        "requestor": True,
    }
    if row.actor_role:
        agent["role"] = [{"text": row.actor_role}]
    if row.professional_id:
        agent["altId"] = row.professional_id
    if row.source_address:
        agent["network"] = {"address": row.source_address, "type": "2"}
    if row.purpose_of_use:
        agent["purposeOfUse"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": row.purpose_of_use,
                    }
                ]
            }
        ]
    ev["agent"] = [agent]
    ev["source"] = {
        "site": row.log_id,
        "observer": {"display": "hdsvault"},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }
        ],
    }
    entities: list[Json] = []
    if row.patient:
        entities.append(
            {
                "what": {"reference": row.patient},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    for obj in json.loads(row.objects or "[]"):
        if obj == row.patient:
            continue
        entities.append(
            {
                "what": {"reference": obj} if "/" in obj else {"display": obj},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                },
            }
        )
    if row.request_id:
        entities.append(
            {
                "what": {
                    "identifier": {"system": "urn:hdsvault:request-id", "value": row.request_id}
                },
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "4",
                },
            }
        )
    if entities:
        ev["entity"] = entities
    return ev


def _conditions(
    tenant: str, pairs: Sequence[tuple[str, str]], strict: bool
) -> tuple[list[ColumnElement[bool]], int]:
    j = journal_entries.c
    cond: list[ColumnElement[bool]] = [j.log_id == tenant]
    count = DEFAULT_COUNT
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base not in _PARAMS:
            if strict:
                raise RecordError(
                    Problem.INVALID, f"unknown AuditEvent parameter {name!r}", (name,)
                )
            continue
        values = [v for v in value.split(",") if v]
        if base == "_count":
            if not value.isdigit() or len(value) > 6:
                raise RecordError(Problem.INVALID, "_count must be a non-negative integer", (name,))
            count = min(int(value), MAX_COUNT)
        elif base == "_sort":
            continue  # always newest first
        elif base == "patient":
            refs = [v if v.startswith("Patient/") else f"Patient/{v}" for v in values]
            for r in refs:
                check_id(r.split("/", 1)[1], "patient")
            cond.append(j.patient.in_(refs))
        elif base == "agent":
            cond.append(j.actor.in_(values))
        elif base == "action":
            bad = [v for v in values if v not in ("C", "R", "U", "D", "E")]
            if bad:
                raise RecordError(Problem.INVALID, "action is one of C, R, U, D, E", (name,))
            cond.append(j.action.in_(values))
        elif base == "date":
            try:
                qs = [parse_date_query(name, v, int(now().timestamp() * 1_000_000)) for v in values]
            except SearchError as exc:
                raise RecordError(Problem.INVALID, str(exc), (name,)) from None
            cond.append(or_(*[_date_condition(j.time, q) for q in qs]))
    return cond, count


def _run(
    store: Any, caller: Caller, cond: list[ColumnElement[bool]], count: int, offset: int
) -> AuditPage:
    j = journal_entries.c
    where = and_(*cond)
    with read_connection(store.engine) as conn:
        total = int(
            conn.execute(
                select(func.count()).select_from(journal_entries).where(where)
            ).scalar_one()
        )
        rows = conn.execute(
            select(journal_entries)
            .where(where)
            .order_by(j.time.desc(), j.id.desc())
            .limit(count)
            .offset(offset)
        ).all()
    return AuditPage(total, [to_audit_event(r) for r in rows], count, offset)


def _journal(store: Any, caller: Caller, objects: tuple[str, ...], patient: str | None) -> None:
    audit = entry(caller, Interaction.AUDIT, now(), objects=objects, patient=patient)
    commit_reads(store.platform, [audit])


def search(
    store: Any,
    caller: Caller,
    pairs: Sequence[tuple[str, str]],
    offset: int = 0,
    strict: bool = False,
) -> AuditPage:
    allow(store, caller, Operation.AUDIT, "AuditEvent")
    cond, count = _conditions(caller.tenant, pairs, strict)
    page = _run(store, caller, cond, count, offset)
    patients = [v for k, v in pairs if k == "patient"]
    _journal(
        store,
        caller,
        ("AuditEvent",),
        patients[0] if len(patients) == 1 and "," not in patients[0] else None,
    )
    return page


def access_history(
    store: Any, caller: Caller, patient_id: str, pairs: Sequence[tuple[str, str]], offset: int = 0
) -> AuditPage:
    """Who accessed ``Patient/{patient_id}``: every journal entry naming that patient."""
    check_id(patient_id)
    allow(store, caller, Operation.AUDIT, "AuditEvent", patient=f"Patient/{patient_id}")
    rest = [(k, v) for k, v in pairs if k != "patient"]
    cond, count = _conditions(caller.tenant, [*rest, ("patient", f"Patient/{patient_id}")], False)
    page = _run(store, caller, cond, count, offset)
    _journal(store, caller, (f"Patient/{patient_id}", "AuditEvent"), f"Patient/{patient_id}")
    return page


def read(store: Any, caller: Caller, entry_id: str) -> Json:
    allow(store, caller, Operation.AUDIT, "AuditEvent")
    if not entry_id.isdigit() or len(entry_id) > 18:
        raise RecordError(Problem.NOT_FOUND, f"AuditEvent/{entry_id[:40]} does not exist")
    with read_connection(store.engine) as conn:
        row = conn.execute(
            select(journal_entries).where(
                journal_entries.c.log_id == caller.tenant, journal_entries.c.id == int(entry_id)
            )
        ).first()
    _journal(store, caller, (f"AuditEvent/{entry_id}",), row.patient if row is not None else None)
    if row is None:
        raise RecordError(Problem.NOT_FOUND, f"AuditEvent/{entry_id} does not exist")
    return to_audit_event(row)


def render_bundle(page: AuditPage, base: str, path: str, pairs: Sequence[tuple[str, str]]) -> Json:
    url = f"{base}/{path}"
    q = [(k, v) for k, v in pairs if k != "_offset"]

    def link(offset: int) -> str:
        items = [*q, ("_offset", str(offset))] if offset else q
        return f"{url}?{urlencode(items)}" if items else url

    links = [{"relation": "self", "url": link(page.offset)}]
    if page.offset + page.count < page.total:
        links.append({"relation": "next", "url": link(page.offset + page.count)})
    if page.offset:
        links.append({"relation": "previous", "url": link(max(0, page.offset - page.count))})
    b: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
    }
    if page.events:
        b["entry"] = [
            {"fullUrl": f"{base}/AuditEvent/{e['id']}", "resource": e, "search": {"mode": "match"}}
            for e in page.events
        ]
    return b
