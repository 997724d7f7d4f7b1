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

import sqlite3
from binascii import b2a_base64
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Row, select

from hdsvault.db import driver
from hdsvault.db.engine import marker
from hdsvault.db.schema import journal_entries
from hdsvault.journal.entry import JournalEntry, format_time, safe_text

ENTRY_COLUMNS = (
    "log_id", "time", "event_type", "category", "action", "outcome", "severity", "actor",
    "actor_role", "professional_id", "on_behalf_of", "objects", "patient", "purpose_of_use",
    "source_address", "zone", "request_id", "detail_sealed",
)  # fmt: skip
_TEXT_COLUMNS = tuple(c for c in ENTRY_COLUMNS if c not in ("time", "objects", "detail_sealed"))

LEAF_KEYS = tuple(sorted((*ENTRY_COLUMNS, "seq")))
"""The leaf's JSON keys in canonical (sorted) order; ``seq`` is the only one not a column."""
_SEQ = LEAF_KEYS.index("seq")
_TIME = LEAF_KEYS.index("time")
_OBJECTS = LEAF_KEYS.index("objects")
_SEALED = LEAF_KEYS.index("detail_sealed")
LEAF_SELECT = ", ".join("NULL" if k == "seq" else k for k in LEAF_KEYS)
"""SQL select list giving a row the shape :func:`leaf_bytes` reads (``seq`` left NULL)."""

RowBuilder = Callable[[JournalEntry], tuple[Any, ...]]
TimeText = Callable[[Any], str]


def _text(v: str | None) -> str | None:
    return v if v is None or v.isascii() else safe_text(v)


def _objects_json(objects: tuple[str, ...]) -> str:
    try:
        return orjson.dumps(objects).decode()
    except orjson.JSONEncodeError:  # a lone surrogate: store what the leaf will hash
        return orjson.dumps([safe_text(o) for o in objects]).decode()


def _sqlite_time(t: datetime) -> str:
    """Naive UTC text, exactly as SQLAlchemy's SQLite DateTime stores and compares it."""
    if t.tzinfo is not UTC and t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.isoformat(" ", "microseconds")[:26]


def _pg_time(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def row_builder(conn: Connection | sqlite3.Connection) -> RowBuilder:
    """The function turning an entry into its ``ENTRY_COLUMNS`` tuple for ``conn``'s dialect
    (a driver's own SQLite connection: SQLite's).

    Chosen once per batch: appends are the hottest path of the platform (every read of health
    data makes one), so the per-entry work is a single tuple expression.
    """
    stored_time: Callable[[datetime], Any] = _sqlite_time if _on_sqlite(conn) else _pg_time

    def build(e: JournalEntry) -> tuple[Any, ...]:
        return (
            e.log_id,
            stored_time(e.time),
            e.event_type,
            e.category.value,
            e.action.value,
            e.outcome.value,
            e.severity.value,
            _text(e.actor),
            e.actor_role,
            _text(e.professional_id),
            _text(e.on_behalf_of),
            _objects_json(e.objects),
            _text(e.patient),
            e.purpose_of_use,
            _text(e.source_address),
            e.zone,
            _text(e.request_id),
            e.detail_sealed,
        )

    return build


def _on_sqlite(conn: Connection | sqlite3.Connection) -> bool:
    return isinstance(conn, sqlite3.Connection) or conn.dialect.name == "sqlite"


def _insert_sql(mark: str) -> str:
    return (
        f"INSERT INTO journal_entries ({', '.join(ENTRY_COLUMNS)}) "  # noqa: S608 (constants)
        f"VALUES ({', '.join([mark] * len(ENTRY_COLUMNS))})"
    )


_SQLITE_INSERT = _insert_sql("?")


def append(conn: Connection, entry: JournalEntry) -> None:
    """Record ``entry`` in the current transaction of ``conn``."""
    conn.exec_driver_sql(_insert_sql(marker(conn)), row_builder(conn)(entry))


def append_many(conn: Connection | sqlite3.Connection, entries: Iterable[JournalEntry]) -> int:
    """Record several entries in one statement (batch importers, group commit), in the current
    transaction of ``conn``: SQLAlchemy's, or the driver's own SQLite connection's (the group
    commit's writer, :class:`hdsvault.db.engine.KeptWriteConnection`)."""
    rows = list(map(row_builder(conn), entries))
    if isinstance(conn, sqlite3.Connection):
        conn.executemany(_SQLITE_INSERT, rows)
    else:
        driver.execute_many(conn, _insert_sql(marker(conn)), rows)
    return len(rows)


def _utc(t: datetime | str) -> datetime:
    if isinstance(t, str):  # SQLite through a raw cursor
        t = datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _sqlite_time_text(stored: str) -> str:
    """Canonical spelling of a time stored by :func:`_sqlite_time`, without parsing it.

    Only the exact stored shape is accepted: any other text (edited by hand) gets a spelling
    no leaf can contain, so it is reported as an alteration rather than silently normalised.
    """
    if len(stored) == 26 and stored[10] == " ":
        return stored[:10] + "T" + stored[11:] + "Z"
    return "not a stored time: " + stored


def time_text(conn: Connection) -> TimeText:
    """How to spell a fetched ``time`` column canonically on ``conn``'s dialect."""
    return _sqlite_time_text if conn.dialect.name == "sqlite" else format_time


def leaf_bytes(row: Sequence[Any], seq: int, spell: TimeText) -> bytes:
    """Leaf bytes of entry ``seq`` from a row selected with :data:`LEAF_SELECT` first.

    ``spell`` is :func:`time_text` of the connection; columns selected after those are
    ignored. Byte-identical to :meth:`JournalEntry.canonical_bytes`: the values are placed in
    sorted key order, so orjson needs no key sorting, and nothing is converted that need not be.
    The verifier spends its time here, once per entry.
    """
    values = list(row)
    values[_SEQ] = seq
    values[_TIME] = spell(values[_TIME])
    values[_OBJECTS] = orjson.loads(values[_OBJECTS])
    sealed = values[_SEALED]
    values[_SEALED] = b2a_base64(sealed, newline=False).decode() if sealed else None
    return orjson.dumps(dict(zip(LEAF_KEYS, values, strict=False)))  # extra columns: ignored


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
