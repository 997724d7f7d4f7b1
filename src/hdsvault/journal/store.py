"""Journal rows: append an entry in the caller's transaction, read entries back.

``append`` is the one hook every service uses. It runs inside the transaction of the act it
records, so the act and its trace commit together or not at all (invariant 1); a read records
its entry and commits before the data is returned (invariant 2). Sequencing into the Merkle
tree happens later, in batches (see :mod:`hdsvault.journal.sequencer`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from hdsvault.db.schema import journal_entries
from hdsvault.journal.entry import JournalEntry

_STREAM_BATCH = 5000


def _row_values(entry: JournalEntry) -> dict[str, Any]:
    return {
        "log_id": entry.log_id,
        "time": entry.time.astimezone(UTC),
        "event_type": entry.event_type,
        "category": entry.category.value,
        "action": entry.action.value,
        "outcome": entry.outcome.value,
        "severity": entry.severity.value,
        "actor": entry.actor,
        "actor_role": entry.actor_role,
        "professional_id": entry.professional_id,
        "on_behalf_of": entry.on_behalf_of,
        "objects": json.dumps(list(entry.objects), separators=(",", ":")),
        "patient": entry.patient,
        "purpose_of_use": entry.purpose_of_use,
        "source_address": entry.source_address,
        "zone": entry.zone,
        "request_id": entry.request_id,
        "detail_sealed": entry.detail_sealed,
    }


def append(conn: Connection, entry: JournalEntry) -> None:
    """Record ``entry`` in the current transaction of ``conn``."""
    conn.execute(insert(journal_entries).values(_row_values(entry)))


def append_many(conn: Connection, entries: Iterable[JournalEntry]) -> int:
    """Record several entries in one statement (batch importers, group commit)."""
    values = [_row_values(e) for e in entries]
    if values:
        conn.execute(insert(journal_entries), values)
    return len(values)


def row_to_entry(row: Row[Any]) -> JournalEntry:
    """Rebuild the entry exactly as it was recorded (times are stored in UTC)."""
    data = row._mapping
    t = data["time"]
    return JournalEntry.from_fields(
        {
            **{k: data[k] for k in _ENTRY_COLUMNS},
            "time": t if t.tzinfo else t.replace(tzinfo=UTC),
            "objects": json.loads(data["objects"]),
        },
        seq=data["seq"],
    )


_ENTRY_COLUMNS = (
    "log_id", "event_type", "category", "action", "outcome", "severity", "actor", "actor_role",
    "professional_id", "on_behalf_of", "patient", "purpose_of_use", "source_address", "zone",
    "request_id", "detail_sealed",
)  # fmt: skip


def entries_after(conn: Connection, log_id: str, after_seq: int, limit: int) -> list[JournalEntry]:
    """Sequenced entries of ``log_id`` with ``seq > after_seq``, in order (SIEM export, views)."""
    rows = conn.execute(
        select(journal_entries)
        .where(journal_entries.c.log_id == log_id, journal_entries.c.seq > after_seq)
        .order_by(journal_entries.c.seq)
        .limit(limit)
    ).all()
    return [row_to_entry(r) for r in rows]


def stream_sequenced(conn: Connection, log_id: str) -> Iterator[Row[Any]]:
    """Every sequenced row of ``log_id`` in seq order, fetched in bounded batches."""
    last = -1
    while True:
        rows = conn.execute(
            select(journal_entries)
            .where(journal_entries.c.log_id == log_id, journal_entries.c.seq > last)
            .order_by(journal_entries.c.seq)
            .limit(_STREAM_BATCH)
        ).all()
        yield from rows
        if len(rows) < _STREAM_BATCH:
            return
        last = rows[-1].seq
