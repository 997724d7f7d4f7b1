"""Reads: read, vread, history (instance, type, system).

Each is ``authorize -> fetch (read snapshot) -> decrypt in memory -> journal (committed)
-> return``: nothing leaves the server before its journal entry is durable (invariant 2).
Decryption happens before the journal commit only because the entry names the patient the
data belongs to, which the ciphertext alone does not say; the clear data stays in memory.
A read of a missing or deleted resource is journaled too (as a failure): probing is an
access attempt the DPO must see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select

from hdsvault.access.decision import Operation
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import resource_versions
from hdsvault.journal.entry import Outcome
from hdsvault.records import storage
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.guard import allow, security_labels
from hdsvault.records.journaling import Interaction, commit_reads, entry, per_patient
from hdsvault.records.model import Caller, ResourceKey, Stored, check_id, check_type, now
from hdsvault.records.references import patient_of
from hdsvault.records.store import RecordStore


def _journal(
    store: RecordStore,
    caller: Caller,
    interaction: Interaction,
    touched: Sequence[tuple[str, str | None]],
    outcome: Outcome = Outcome.SUCCESS,
) -> None:
    when = now()
    if outcome is Outcome.SUCCESS:
        commit_reads(store.platform, per_patient(caller, interaction, when, touched))
    else:
        objects = tuple(ref for ref, _ in touched)
        failed = entry(caller, interaction, when, objects=objects, outcome=outcome)
        commit_reads(store.platform, [failed])


def touched_by(items: Sequence[Stored]) -> list[tuple[str, str | None]]:
    return [(str(s.key), patient_of(s.resource, s.key)) for s in items]


def read(store: RecordStore, caller: Caller, resource_type: str, resource_id: str) -> Stored:
    """The current version; NOT_FOUND if never created, GONE if deleted."""
    check_type(resource_type)
    check_id(resource_id)
    key = ResourceKey(resource_type, resource_id)
    allow(store, caller, Operation.READ, resource_type, resource_id=key.id)
    with read_connection(store.engine) as conn:
        h = storage.head(conn, caller.tenant, key)
        stored = None
        if h is not None and not h.deleted:
            keys = store.data_keys(conn, caller.tenant)
            rows = storage.version_rows(conn, caller.tenant, key, h.version)
            stored = storage.open_rows(keys, caller.tenant, rows)[0]
    if stored is None:
        _journal(store, caller, Interaction.READ, [(str(key), None)], Outcome.MINOR_FAILURE)
        if h is None:
            raise RecordError(Problem.NOT_FOUND, f"{key} does not exist")
        raise RecordError(Problem.GONE, f"{key} was deleted (version {h.version})")
    return _release(store, caller, Interaction.READ, stored)


def _release(
    store: RecordStore, caller: Caller, interaction: Interaction, stored: Stored
) -> Stored:
    """Per-resource decision (patient, security labels known now), journal, return."""
    patient = patient_of(stored.resource, stored.key)
    allow(
        store,
        caller,
        Operation.READ,
        stored.type,
        patient=patient,
        labels=security_labels(stored.resource),
        resource_id=stored.id,
    )
    _journal(store, caller, interaction, [(str(stored.key), patient)])
    return stored


def vread(
    store: RecordStore, caller: Caller, resource_type: str, resource_id: str, version: str
) -> Stored:
    """One version; a deleted version is GONE, an unknown one NOT_FOUND."""
    check_type(resource_type)
    check_id(resource_id)
    key = ResourceKey(resource_type, resource_id)
    allow(store, caller, Operation.READ, resource_type, resource_id=key.id)
    if not version.isdigit() or len(version) > 9:
        raise RecordError(Problem.NOT_FOUND, f"{key} has no version {version[:20]!r}")
    with read_connection(store.engine) as conn:
        rows = storage.version_rows(conn, caller.tenant, key, int(version))
        stored = (
            storage.open_rows(store.data_keys(conn, caller.tenant), caller.tenant, rows)[0]
            if rows
            else None
        )
    if stored is None or stored.deleted:
        _journal(store, caller, Interaction.VREAD, [(str(key), None)], Outcome.MINOR_FAILURE)
        if stored is None:
            raise RecordError(Problem.NOT_FOUND, f"{key} has no version {version}")
        raise RecordError(Problem.GONE, f"{key} version {version} is a deletion")
    return _release(store, caller, Interaction.VREAD, stored)


@dataclass
class HistoryPage:
    total: int
    versions: list[Stored]


def history(
    store: RecordStore,
    caller: Caller,
    resource_type: str | None = None,
    resource_id: str | None = None,
    *,
    count: int,
    offset: int = 0,
    since: datetime | None = None,
    at: datetime | None = None,
) -> HistoryPage:
    """Versions newest first: of one resource, one type, or the whole tenant."""
    if resource_type is not None:
        check_type(resource_type)
    if resource_id is not None:
        check_id(resource_id)
    target = f"{resource_type}/{resource_id}" if resource_id else (resource_type or "*")
    allow(store, caller, Operation.HISTORY, resource_type, resource_id=resource_id)
    v = resource_versions.c
    cond = [v.tenant_id == caller.tenant]
    if resource_type is not None:
        cond.append(v.resource_type == resource_type)
    if resource_id is not None:
        cond.append(v.resource_id == resource_id)
    if since is not None:
        cond.append(v.last_updated >= since)
    if at is not None:
        cond.append(v.last_updated <= at)
    where = and_(*cond)
    with read_connection(store.engine) as conn:
        missing = (
            resource_id is not None
            and resource_type is not None
            and storage.head(conn, caller.tenant, ResourceKey(resource_type, resource_id)) is None
        )
        versions: list[Stored] = []
        total = 0
        if not missing:
            count_stmt = select(func.count()).select_from(resource_versions).where(where)
            total = int(conn.execute(count_stmt).scalar_one())
            rows = conn.execute(
                select(
                    v.resource_type, v.resource_id, v.version_id, v.last_updated, v.deleted, v.body
                )
                .where(where)
                .order_by(
                    v.last_updated.desc(), v.resource_type, v.resource_id, v.version_id.desc()
                )
                .limit(count)
                .offset(offset)
            ).all()
            versions = storage.open_rows(store.data_keys(conn, caller.tenant), caller.tenant, rows)
    if missing:
        _journal(store, caller, Interaction.HISTORY, [(target, None)], Outcome.MINOR_FAILURE)
        raise RecordError(Problem.NOT_FOUND, f"{target} does not exist")
    _journal(store, caller, Interaction.HISTORY, touched_by(versions) or [(target, None)])
    return HistoryPage(total, versions)
