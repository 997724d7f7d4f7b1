"""Engine creation with the durability settings invariant 4 needs.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed (acknowledged) write
survives a power loss, ``secure_delete`` so that deleted rows (e.g. shredded wrapped keys) are
overwritten in the file, and a busy timeout so that several worker processes can share the file.
PostgreSQL keeps its defaults (``fsync=on``, ``synchronous_commit=on``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from hdsvault.db import driver

BUSY_TIMEOUT_SECONDS = 30
"""How long a SQLite statement waits for a lock held by another connection."""

_BUSY_TIMEOUT = f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}"

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",
    _BUSY_TIMEOUT,
    "PRAGMA cache_size=-65536",  # 64 MiB page cache per connection: index inserts stay in memory
)


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy drive transactions (BEGIN is emitted by the "begin" hook below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cur.execute(pragma)
    cur.close()


READ_ONLY = "hdsvault_read_only"
"""Execution option marking a connection that only reads (see :func:`read_connection`)."""


WRITE_LOCK_POLL = 0.001
"""Seconds between two attempts of a writer at SQLite's write lock (see :func:`_begin_write`)."""


def _on_sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): two writers never deadlock on a
    # lock upgrade, they queue for it instead. Readers use a deferred BEGIN: in WAL mode they
    # never wait for a writer, nor make one wait.
    if conn.get_execution_options().get(READ_ONLY):
        driver.execute(conn, "BEGIN", autobegin=False)
    else:
        _begin_write(conn)


def _begin_write(conn: Any) -> None:
    """BEGIN IMMEDIATE, trying again every :data:`WRITE_LOCK_POLL` while another writer holds
    the lock, up to the busy time-out.

    Why not SQLite's busy handler: it sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
    between attempts, and nothing tells it when the lock is free, so under contention the lock
    went to whoever asked at the right moment while earlier writers slept on. With two DIMSE
    worker processes at concurrency 4, 2 % of C-STOREs took over 50 ms (36 % of the time spent
    storing) and 3-4 % 20-50 ms, for a lock held ~2 ms at a time. Trying every millisecond:
    0.1-0.3 % over 50 ms, mean time per C-STORE -6 to -8 %, +5 to +9 % instances/s (A/B, two
    alternations). A waiting writer costs one failed attempt per millisecond; the busy
    time-out stays what it was, and every other statement keeps SQLite's own handler.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    driver.execute(conn, "PRAGMA busy_timeout=0", autobegin=False)
    try:
        while True:
            try:
                driver.execute(conn, "BEGIN IMMEDIATE", autobegin=False)
                return
            except OperationalError as exc:
                busy = getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline or conn.invalidated:
                    raise
            time.sleep(WRITE_LOCK_POLL)
    finally:
        if not conn.invalidated:
            driver.execute(conn, _BUSY_TIMEOUT, autobegin=False)


def marker(conn: Connection) -> str:
    """The driver's positional parameter marker (``?`` for sqlite3, ``%s`` for psycopg), for
    the few hot statements written as SQL text."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def read_connection(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it neither takes nor waits for the write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the engine for ``url`` with the platform's durability settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, pool_pre_ping=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
