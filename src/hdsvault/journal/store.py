"""Journal rows: append an entry in the caller's transaction, read entries back.

``append`` is the one hook every service uses. It runs inside the transaction of the act it
records, so the act and its trace commit together or not at all (invariant 1); a read records
its entry and commits before the data is returned (invariant 2). Sequencing into the Merkle
tree happens later, in batches (see :mod:`hdsvault.journal.sequencer`).

Appends and the verifier's row decoding are on hot paths, so they bypass SQLAlchemy's per-row
parameter processing: rows go to the driver as tuples, and canonical leaf bytes are built
straight from the stored columns (same bytes as :meth:`JournalEntry.canonical_bytes`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Row, select

from hdsvault.db.schema import journal_entries
from hdsvault.journal.entry import JournalEntry, canonical_json, format_time, safe_text

_STREAM_BATCH = 5000

ENTRY_COLUMNS = (
    "log_id", "time", "event_type", "category", "action", "outcome", "severity", "actor",
    "actor_role", "professional_id", "on_behalf_of", "objects", "patient", "purpose_of_use",
    "source_address", "zone", "request_id", "detail_sealed",
)  # fmt: skip
_TEXT_COLUMNS = tuple(c for c in ENTRY_COLUMNS if c not in ("time", "objects", "detail_sealed"))


def _stored_time(conn: Connection, t: datetime) -> Any:
    """A time as the dialect's DateTime column stores it (SQLite: naive UTC text)."""
    utc = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    if conn.dialect.name == "sqlite":
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return utc


def _row_tuple(conn: Connection, e: JournalEntry) -> tuple[Any, ...]:
    def text(v: str | None) -> str | None:
        return None if v is None else safe_text(v)

    return (
        e.log_id,
        _stored_time(conn, e.time),
        e.event_type,
        e.category.value,
        e.action.value,
        e.outcome.value,
        e.severity.value,
        text(e.actor),
        e.actor_role,
        text(e.professional_id),
        text(e.on_behalf_of),
        orjson.dumps([safe_text(o) for o in e.objects]).decode(),
        text(e.patient),
        e.purpose_of_use,
        text(e.source_address),
        e.zone,
        text(e.request_id),
        e.detail_sealed,
    )


def _insert_sql(conn: Connection) -> str:
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO journal_entries ({', '.join(ENTRY_COLUMNS)}) "  # noqa: S608 (constants)
        f"VALUES ({', '.join([marker] * len(ENTRY_COLUMNS))})"
    )


def append(conn: Connection, entry: JournalEntry) -> None:
    """Record ``entry`` in the current transaction of ``conn``."""
    conn.exec_driver_sql(_insert_sql(conn), _row_tuple(conn, entry))


def append_many(conn: Connection, entries: Iterable[JournalEntry]) -> int:
    """Record several entries in one statement (batch importers, group commit)."""
    rows = [_row_tuple(conn, e) for e in entries]
    if rows:
        conn.exec_driver_sql(_insert_sql(conn), rows)
    return len(rows)


def _utc(t: datetime | str) -> datetime:
    if isinstance(t, str):  # SQLite through a raw cursor
        t = datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def canonical_row_bytes(row: Row[Any], seq: int) -> bytes:
    """Leaf bytes of a stored entry at index ``seq``, without building a JournalEntry."""
    m = row._mapping
    data: dict[str, Any] = {c: m[c] for c in _TEXT_COLUMNS}
    data["time"] = format_time(_utc(m["time"]))
    data["objects"] = orjson.loads(m["objects"])
    sealed = m["detail_sealed"]
    data["detail_sealed"] = base64.b64encode(sealed).decode() if sealed else None
    data["seq"] = seq
    return canonical_json(data)


def row_to_entry(row: Row[Any]) -> JournalEntry:
    """Rebuild the entry exactly as it was recorded (times are stored in UTC)."""
    m = row._mapping
    return JournalEntry.from_fields(
        {
            **{c: m[c] for c in _TEXT_COLUMNS},
            "time": _utc(m["time"]),
            "objects": orjson.loads(m["objects"]),
            "detail_sealed": m["detail_sealed"],
        },
        seq=m["seq"],
    )


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
        rows: Sequence[Row[Any]] = conn.execute(
            select(journal_entries)
            .where(journal_entries.c.log_id == log_id, journal_entries.c.seq > last)
            .order_by(journal_entries.c.seq)
            .limit(_STREAM_BATCH)
        ).all()
        yield from rows
        if len(rows) < _STREAM_BATCH:
            return
        last = rows[-1].seq
