"""Engine creation with the durability settings invariant 4 needs.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed (acknowledged) write
survives a power loss, ``secure_delete`` so that deleted rows (e.g. shredded wrapped keys) are
overwritten in the file, and a busy timeout so that several worker processes can share the file.
PostgreSQL keeps its defaults (``fsync=on``, ``synchronous_commit=on``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from hdsvault.db import driver

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",
    "PRAGMA busy_timeout=30000",
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


def _on_sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): two writers never deadlock on a
    # lock upgrade, they queue on busy_timeout instead. Readers use a deferred BEGIN: in WAL
    # mode they never wait for a writer, nor make one wait.
    read_only = conn.get_execution_options().get(READ_ONLY)
    driver.execute(conn, "BEGIN" if read_only else "BEGIN IMMEDIATE", autobegin=False)


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
