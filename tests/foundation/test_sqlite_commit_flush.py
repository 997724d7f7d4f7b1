"""Invariant 4 on SQLite: a write transaction is on disk when its commit returns, its flush
done after SQLite's write lock is released (``db.engine.DurableConnection``).

A power cut cannot be run here: what these tests check is the order that makes a commit
survive one. SQLite's own commit (``synchronous=NORMAL``) appends the transaction to the WAL
without flushing it; the connection then flushes the WAL file (``fdatasync``) before
``commit`` returns. ``os.fdatasync`` is wrapped to record which file it flushed and what
another connection could see at that moment; the flush itself still runs. Real SQLite files.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from hdsvault.db.engine import DurableConnection, create_db_engine, flush_wal, read_connection


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "d.db"


@pytest.fixture
def engine(db: Path) -> Engine:
    made = create_db_engine(f"sqlite:///{db}")
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    return made


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch, db: Path) -> list[tuple[str, list[int]]]:
    """(file flushed, rows of ``t`` another connection sees then), for each ``fdatasync``."""
    seen: list[tuple[str, list[int]]] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        with sqlite3.connect(db) as other:
            rows = [v for (v,) in other.execute("SELECT v FROM t ORDER BY v")]
        seen.append((path, rows))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return seen


def test_a_write_commit_returns_after_the_wal_is_flushed(
    engine: Engine, db: Path, flushes: list[tuple[str, list[int]]]
) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert flushes == []  # nothing flushed before the commit
    # Flushed before commit returned, after SQLite committed (another connection saw the row:
    # the write lock was released first), and the file flushed is this database's WAL.
    assert flushes == [(f"{db}-wal", [1])]
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL: flush is ours


def test_every_write_commit_flushes_and_reads_do_not(
    engine: Engine, flushes: list[tuple[str, list[int]]]
) -> None:
    for v in (1, 2, 3):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": v})
    with read_connection(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 3
        conn.commit()
    assert [rows for _, rows in flushes] == [[1], [1, 2], [1, 2, 3]]


def test_rows_written_in_a_read_transaction_are_flushed_too(
    engine: Engine, flushes: list[tuple[str, list[int]]]
) -> None:
    """A deferred BEGIN (a read connection) that writes all the same is still flushed."""
    with read_connection(engine) as conn:
        conn.execute(text("INSERT INTO t VALUES (7)"))
        conn.commit()
    assert [rows for _, rows in flushes] == [[7]]


def test_a_rolled_back_write_flushes_nothing(
    engine: Engine, flushes: list[tuple[str, list[int]]]
) -> None:
    conn = engine.connect()
    tx = conn.begin()
    conn.execute(text("INSERT INTO t VALUES (5)"))
    tx.rollback()
    conn.close()
    with read_connection(engine) as conn:
        conn.commit()
    assert flushes == []


def test_flush_wal_flushes_what_others_committed(
    engine: Engine, db: Path, flushes: list[tuple[str, list[int]]]
) -> None:
    """What the SIEM export calls before sending: the WAL, whoever wrote in it."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA synchronous=NORMAL")
    other.execute("INSERT INTO t VALUES (9)")
    other.close()
    flushes.clear()
    flush_wal(engine)
    assert flushes == [(f"{db}-wal", [9])]


def test_an_in_memory_database_keeps_synchronous_full(
    flushes: list[tuple[str, list[int]]],
) -> None:
    memory = create_db_engine("sqlite://")
    with memory.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, DurableConnection) and dbapi.wal_path is None
    flush_wal(memory)  # nothing to flush, no error
    assert flushes == []


def test_closing_a_connection_closes_its_wal_descriptor(engine: Engine, db: Path) -> None:
    def wal_fds() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            # FileNotFoundError: the descriptor listdir itself used. " (deleted)" follows the
            # name once the last connection has removed the WAL.
            with contextlib.suppress(FileNotFoundError):
                count += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{db}-wal")
        return count

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert wal_fds() == 2  # SQLite's, and the one the pooled connection flushes
    engine.dispose()
    assert wal_fds() == 0
