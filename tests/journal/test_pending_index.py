"""The sequencer finds pending entries without scanning the whole journal.

It asks every second which logs have pending entries; the answer must come from the partial
``seq IS NULL`` index (whose size is what is pending), not from a scan of every entry ever
journaled. Checked on the query plan (SQLite) and the index definition (both backends).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from hdsvault.journal.sequencer import pending_logs
from hdsvault.journal.service import admin_entry, integrate, record
from hdsvault.platform import Platform


def test_pending_index_is_partial(platform: Platform) -> None:
    with platform.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_journal_entries_pending'"
            ).scalar_one()
        else:
            sql = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_journal_entries_pending'"
            ).scalar_one()
    assert "WHERE" in sql and "seq IS NULL" in sql.replace("(", "").replace(")", "")


def test_pending_logs_answers_from_the_partial_index(platform: Platform, tenant: str) -> None:
    integrate(platform)
    with platform.engine.begin() as conn:
        record(conn, admin_entry("test.pending", "test", log_id=tenant))
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(platform.engine, "before_cursor_execute", capture)
    try:
        with platform.engine.connect() as conn:
            assert pending_logs(conn) == [tenant]
    finally:
        event.remove(platform.engine, "before_cursor_execute", capture)
    integrate(platform)
    with platform.engine.connect() as conn:
        assert pending_logs(conn) == []
        if conn.dialect.name != "sqlite":
            return  # PostgreSQL's planner picks the small partial index by itself
        (query,) = [s for s in statements if "DISTINCT log_id" in s]
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all()
    assert any("ix_journal_entries_pending" in str(row) for row in plan), plan
