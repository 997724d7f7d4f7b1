"""Reading the journal for people: filtered entries, a patient's access history, CSV/JSON.

Reading the journal is itself journaled (an auditor's reads are traced like anyone's).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, select

from hdsvault.db.engine import read_connection
from hdsvault.db.schema import journal_entries
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome
from hdsvault.journal.service import record
from hdsvault.journal.store import row_to_entry
from hdsvault.platform import Platform

CSV_COLUMNS = (
    "seq", "time", "event_type", "category", "action", "outcome", "severity", "actor",
    "actor_role", "professional_id", "on_behalf_of", "objects", "patient", "purpose_of_use",
    "source_address", "zone", "request_id", "has_sealed_detail",
)  # fmt: skip


@dataclass(frozen=True)
class EntryFilter:
    """What an auditor asks for; every field optional."""

    patient: str | None = None
    actor: str | None = None
    action: Action | None = None
    category: Category | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 10_000


def _select(log_id: str, f: EntryFilter) -> Select[Any]:
    c = journal_entries.c
    stmt = select(journal_entries).where(c.log_id == log_id, c.seq.is_not(None))
    if f.patient:
        stmt = stmt.where(c.patient == f.patient)
    if f.actor:
        stmt = stmt.where(c.actor == f.actor)
    if f.action:
        stmt = stmt.where(c.action == f.action.value)
    if f.category:
        stmt = stmt.where(c.category == f.category.value)
    if f.since:
        stmt = stmt.where(c.time >= f.since)
    if f.until:
        stmt = stmt.where(c.time < f.until)
    return stmt.order_by(c.seq).limit(f.limit)


def read_entries(platform: Platform, log_id: str, f: EntryFilter, *, by: str) -> list[JournalEntry]:
    """Entries of ``log_id`` matching ``f``; the read is journaled in the same log."""
    with read_connection(platform.engine) as conn:
        entries = [row_to_entry(r) for r in conn.execute(_select(log_id, f))]
    with platform.engine.begin() as conn:
        record(
            conn,
            JournalEntry(
                log_id=log_id,
                time=datetime.now(UTC),
                event_type="journal.read",
                category=Category.ACCESS,
                action=Action.READ,
                outcome=Outcome.SUCCESS,
                actor=by,
                actor_role="dpo",
                objects=(f"JournalLog/{log_id}",),
                patient=f.patient,
            ),
        )
    return entries


def access_history(platform: Platform, tenant: str, patient: str, *, by: str) -> list[JournalEntry]:
    """Who accessed a patient's record, when, how: the patient's right of access (RGPD art. 15)."""
    return read_entries(
        platform, tenant, EntryFilter(patient=patient, category=Category.ACCESS), by=by
    )


def _row(e: JournalEntry) -> dict[str, Any]:
    data = e.public_fields()
    data.pop("detail_sealed")
    data.pop("log_id")
    data["seq"] = e.seq
    data["has_sealed_detail"] = e.detail_sealed is not None
    return data


def to_json(entries: Iterable[JournalEntry]) -> bytes:
    """JSON array; sealed details are never exported, only whether one exists."""
    return orjson.dumps([_row(e) for e in entries], option=orjson.OPT_INDENT_2)


def to_csv(entries: Iterable[JournalEntry]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for e in entries:
        row = _row(e)
        row["objects"] = " ".join(row["objects"])
        writer.writerow(row)
    return out.getvalue()
