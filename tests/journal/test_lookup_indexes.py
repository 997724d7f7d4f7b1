"""The views' lookup indexes (patient, actor, time) hold sequenced entries only.

Every read of health data appends one entry per patient concerned, durably, before the data
is returned. A full index on ``patient`` or ``actor`` made each of those appends write into a
B-tree at a random place; as partial indexes on ``seq IS NOT NULL`` (revision 0006) they are
filled by the sequencer, and an append touches only indexes in arrival order. The views only
ever show sequenced entries, so they lose nothing: checked here on both backends, through the
index definitions, the views' answers before and after sequencing, the SQLite query plan, and
a 0005 database upgraded with entries in it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection

from hdsvault.db.migrate import downgrade, upgrade
from hdsvault.journal.service import integrate, record
from hdsvault.journal.views import EntryFilter, _select, access_history
from hdsvault.platform import Platform

from support.journal_entries import access

LOOKUPS = ("ix_journal_entries_patient", "ix_journal_entries_actor", "ix_journal_entries_time")


def _definition(conn: Connection, name: str) -> str:
    if conn.dialect.name == "sqlite":
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
    else:
        sql = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,))
    return str(sql.scalar_one()).replace("(", "").replace(")", "")


def test_lookup_indexes_are_partial_on_sequenced_entries(platform: Platform) -> None:
    with platform.engine.connect() as conn:
        for name in LOOKUPS:
            assert "WHERE seq IS NOT NULL" in _definition(conn, name), name


def test_views_find_entries_once_sequenced(platform: Platform, tenant: str) -> None:
    with platform.engine.begin() as conn:
        record(conn, access(tenant, "token:nurse", "Patient/p1"))
        record(conn, access(tenant, "token:nurse", "Patient/p2"))
    assert access_history(platform, tenant, "Patient/p1", by="dpo") == []  # pending: not shown
    integrate(platform)
    history = access_history(platform, tenant, "Patient/p1", by="dpo")
    # the nurse's read, then the DPO's own look at p1's history (an access, journaled too)
    assert [(e.patient, e.actor) for e in history] == [
        ("Patient/p1", "token:nurse"),
        ("Patient/p1", "dpo"),
    ]
    with platform.engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            return  # PostgreSQL's planner chooses by statistics; the definition is checked above
        for f, index in (
            (EntryFilter(patient="Patient/p1"), "ix_journal_entries_patient"),
            (EntryFilter(actor="token:nurse"), "ix_journal_entries_actor"),
            (EntryFilter(since=datetime(2026, 1, 1, tzinfo=UTC)), "ix_journal_entries_time"),
        ):
            stmt = _select(tenant, f).compile(conn, compile_kwargs={"literal_binds": True})
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}").all()
            assert any(index in str(row) for row in plan), (index, plan)


def test_upgrade_of_a_0005_database_keeps_the_views(platform: Platform, tenant: str) -> None:
    downgrade(platform.engine, "0005")
    with platform.engine.connect() as conn:
        for name in LOOKUPS:
            assert "WHERE" not in _definition(conn, name), name
    entry = access(tenant, "token:doctor", "Patient/p1")
    with platform.engine.begin() as conn:
        record(conn, entry)
        record(conn, replace(entry, patient="Patient/p9", objects=("Patient/p9",)))
    integrate(platform)
    upgrade(platform.engine)
    with platform.engine.connect() as conn:
        for name in LOOKUPS:
            assert "WHERE seq IS NOT NULL" in _definition(conn, name), name
    history = access_history(platform, tenant, "Patient/p1", by="dpo")
    assert [(e.patient, e.actor) for e in history] == [("Patient/p1", "token:doctor")]
