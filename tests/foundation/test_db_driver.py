"""Hot statements through the driver's cursor (hdsvault.db.driver) behave as through
SQLAlchemy: inside its transaction, with its exceptions, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, column, select, table, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from hdsvault.db import driver
from hdsvault.db.engine import (
    BUSY_TIMEOUT_SECONDS,
    DurableConnection,
    KeptReadConnection,
    KeptWriteConnection,
    create_db_engine,
    marker,
    read_connection,
)


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS driver_probe"))
        conn.execute(text("CREATE TABLE driver_probe (k VARCHAR(20) PRIMARY KEY, v INTEGER)"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE driver_probe"))
    engine.dispose()


def _rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT k, v FROM driver_probe ORDER BY k"))]


def test_statements_commit_and_roll_back_with_the_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        m = marker(conn)
        driver.execute_many(
            conn, f"INSERT INTO driver_probe VALUES ({m}, {m})", [("a", 1), ("b", 2)]
        )
        driver.execute(conn, f"UPDATE driver_probe SET v = v + 10 WHERE k = {m}", ("a",))
        assert driver.execute(conn, "SELECT k, v FROM driver_probe ORDER BY k") == [
            ("a", 11),
            ("b", 2),
        ]
    assert _rows(engine) == [("a", 11), ("b", 2)]

    with pytest.raises(RuntimeError), engine.begin() as conn:
        driver.execute(conn, f"DELETE FROM driver_probe WHERE k = {marker(conn)}", ("a",))
        raise RuntimeError("the unit of work fails after the statement")
    assert _rows(engine) == [("a", 11), ("b", 2)]  # rolled back with SQLAlchemy's transaction


def test_a_first_statement_begins_the_transaction_as_autobegin_does(engine: Engine) -> None:
    with engine.connect() as conn:
        driver.execute(conn, f"INSERT INTO driver_probe VALUES ({marker(conn)}, 1)", ("x",))
        assert conn.in_transaction()
        conn.rollback()
    assert _rows(engine) == []
    with read_connection(engine) as conn:
        assert driver.execute(conn, "SELECT COUNT(*) FROM driver_probe") == [(0,)]
        assert conn.in_transaction()


def test_driver_errors_are_sqlalchemy_errors(engine: Engine) -> None:
    with engine.begin() as conn:
        driver.execute(conn, f"INSERT INTO driver_probe VALUES ({marker(conn)}, 1)", ("a",))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # what callers catch
        driver.execute_many(
            conn, f"INSERT INTO driver_probe VALUES ({marker(conn)}, 2)", [("b",), ("a",)]
        )
    assert _rows(engine) == [("a", 1)]  # nothing half-written
    # The same class SQLAlchemy raises for the same statement (driver-dependent).
    with pytest.raises(DBAPIError) as by_sqlalchemy, engine.begin() as conn:
        conn.exec_driver_sql("SELECT nope FROM driver_probe")
    with pytest.raises(type(by_sqlalchemy.value)), engine.begin() as conn:
        driver.execute(conn, "SELECT nope FROM driver_probe")


@pytest.mark.postgres
def test_a_lost_connection_is_invalidated_for_the_pool(pg_url: str) -> None:
    engine = create_db_engine(pg_url)
    try:
        with engine.connect() as conn:
            pid = driver.execute(conn, "SELECT pg_backend_pid()")[0][0]
            conn.rollback()
            with engine.connect() as other:
                other.execute(text(f"SELECT pg_terminate_backend({int(pid)})"))
            with pytest.raises(OperationalError) as raised:
                driver.execute(conn, "SELECT 1")
            assert raised.value.connection_invalidated and conn.invalidated
        with engine.connect() as conn:  # the pool does not hand the dead connection out again
            assert driver.execute(conn, "SELECT 1") == [(1,)]
    finally:
        engine.dispose()


def test_a_kept_read_connection_keeps_no_snapshot_and_recovers(engine: Engine) -> None:
    """KeptReadConnection (an event loop's reads): each transaction sees what was committed
    before it began (no snapshot kept between uses: on SQLite it would hold back the
    checkpoints), and after a database error the next use works on a fresh connection."""
    reads = KeptReadConnection(engine)
    try:
        with reads.transaction() as conn:
            assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 0
        with engine.begin() as writer:
            writer.execute(text("INSERT INTO driver_probe VALUES ('a', 1)"))
        with reads.transaction() as conn:
            assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 1
        assert not conn.in_transaction()  # ended with the block
        with pytest.raises(DBAPIError), reads.transaction() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        with reads.transaction() as again:
            assert again is not conn  # the failed one was closed
            assert again.execute(text("SELECT v FROM driver_probe")).scalar_one() == 1
    finally:
        reads.close()


def test_a_compiled_core_statement_binds_by_name_on_either_dialect(engine: Engine) -> None:
    """driver.compiled: a Core statement whose parameters are named, one of them used twice,
    and with a literal in it (which SQLAlchemy binds as an anonymous parameter), runs through
    the driver's cursor with its values bound as the dialect wants them (positionally on
    SQLite, by name on PostgreSQL)."""
    probe = table("driver_probe", column("k"), column("v"))
    stmt = (
        select(probe.c.k)
        .where((probe.c.v >= bindparam("low")) | (probe.c.k == bindparam("key")))
        .where(probe.c.v != bindparam("low") + 100)
        .order_by(probe.c.k)
    )
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO driver_probe VALUES ('a', 1), ('b', 5), ('c', 9)"))
        find = driver.compiled(stmt, conn.dialect)
        assert bool(find.order) == (conn.dialect.paramstyle == "qmark")
        rows = driver.execute(conn, find.sql, find.params({"low": 5, "key": "a"}))
    assert rows == [("a",), ("b",), ("c",)]


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/kept.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE driver_probe (k VARCHAR(20) PRIMARY KEY, v INTEGER)"))
    yield engine
    engine.dispose()


def test_a_kept_write_connection_commits_durably_and_rolls_back(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeptWriteConnection (the journal writer's, SQLite): a transaction's rows are visible to
    others once the block ends, and its commit flushed the WAL before returning (invariant
    4); one that raises leaves nothing; one the database fails is rolled back too, and the
    connection goes on serving."""
    flushed: list[list[tuple[str, int]]] = []
    flush_wal = DurableConnection.flush_wal

    def noted(self: DurableConnection) -> None:
        flush_wal(self)
        flushed.append(_rows(sqlite_engine))

    monkeypatch.setattr(DurableConnection, "flush_wal", noted)
    writes = KeptWriteConnection(sqlite_engine)
    try:
        with writes.transaction() as conn:
            conn.executemany("INSERT INTO driver_probe VALUES (?, ?)", [("a", 1), ("b", 2)])
            assert flushed == []
        assert flushed == [[("a", 1), ("b", 2)]]  # visible, and flushed, before the return
        assert _rows(sqlite_engine) == [("a", 1), ("b", 2)]
        with pytest.raises(RuntimeError), writes.transaction() as conn:
            conn.execute("DELETE FROM driver_probe")
            raise RuntimeError("the batch fails after its statement")
        with pytest.raises(sqlite3.IntegrityError), writes.transaction() as conn:
            conn.execute("INSERT INTO driver_probe VALUES ('c', 3)")
            conn.execute("INSERT INTO driver_probe VALUES ('a', 9)")  # primary key taken
        assert _rows(sqlite_engine) == [("a", 1), ("b", 2)]  # neither left anything
        with writes.transaction() as conn:
            conn.execute("INSERT INTO driver_probe VALUES ('d', 4)")
        assert _rows(sqlite_engine)[-1] == ("d", 4)
    finally:
        writes.close()


def test_a_kept_write_connection_waits_for_the_write_lock_and_leaves_the_pool_as_it_was(
    sqlite_engine: Engine,
) -> None:
    """Another writer holding SQLite's write lock delays the kept connection's transaction
    (polled, as every writer's BEGIN IMMEDIATE is), it does not fail it; and the kept
    connection (busy time-out 0) never goes back to the pool: the pool's connections keep
    the busy time-out every other statement relies on."""
    pooled = sqlite_engine.pool.checkedin()  # type: ignore[attr-defined]
    writes = KeptWriteConnection(sqlite_engine)
    other = sqlite3.connect(str(sqlite_engine.url.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        done = threading.Event()

        def write() -> None:
            with writes.transaction() as conn:
                conn.execute("INSERT INTO driver_probe VALUES ('w', 1)")
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3)  # waits for the lock...
        other.execute("ROLLBACK")
        assert done.wait(10)  # ...and takes it once free
        writer.join()
        writes.close()
        with contextlib.ExitStack() as stack:  # every connection the pool holds, and one more
            conns = [stack.enter_context(read_connection(sqlite_engine)) for _ in range(pooled + 1)]
            timeouts = {c.exec_driver_sql("PRAGMA busy_timeout").scalar_one() for c in conns}
        assert timeouts == {BUSY_TIMEOUT_SECONDS * 1000}
        assert _rows(sqlite_engine) == [("w", 1)]
    finally:
        other.close()
        writes.close()
