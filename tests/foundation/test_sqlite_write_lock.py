"""SQLite writers wait for the write lock by trying every millisecond (``db.engine``), not
through SQLite's backing-off busy handler; the busy time-out is kept, and every other error
is raised at once. Real SQLite files, real threads."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from hdsvault.db import engine as db_engine
from hdsvault.db.engine import create_db_engine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = create_db_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    return made


def test_a_waiting_writer_gets_the_lock_once_released(engine: Engine) -> None:
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(text("INSERT INTO t VALUES (1)"))
    done = threading.Event()
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (2)"))
                # the busy time-out is back for the statements of the transaction
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=second_writer)
    thread.start()
    assert not done.wait(0.3)  # waiting for the lock
    tx.commit()
    holder.close()
    assert done.wait(10)
    thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [1, 2]


def test_a_writer_still_locked_out_after_the_busy_timeout_fails(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_engine, "BUSY_TIMEOUT_SECONDS", 0.3)
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)  # a writer that is not us
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (3)"))
        assert 0.3 <= time.monotonic() - started < 10
    finally:
        other.execute("ROLLBACK")
        other.close()
    with engine.begin() as conn:  # the connection is usable again, its busy time-out back
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000


def test_another_error_at_begin_is_raised_at_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "busy" is tried again: any other failure of BEGIN is the caller's at once."""
    from hdsvault.db import driver

    real = driver.execute
    calls = {"begin": 0}

    def failing(conn: object, sql: str, *args: object, **kw: object) -> object:
        if sql == "BEGIN IMMEDIATE":
            calls["begin"] += 1
            raise OperationalError(sql, (), sqlite3.OperationalError("disk I/O error"))
        return real(conn, sql, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(driver, "execute", failing)
    with pytest.raises(OperationalError, match="disk I/O"), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (4)"))
    assert calls["begin"] == 1
