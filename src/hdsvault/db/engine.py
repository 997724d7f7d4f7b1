"""Engine creation with the durability settings invariant 4 needs.

SQLite runs in WAL mode, and a write transaction's commit returns only once the WAL holding it
is flushed to disk (:class:`DurableConnection`), so that a committed (acknowledged) write
survives a power loss; ``secure_delete`` so that deleted rows (e.g. shredded wrapped keys) are
overwritten in the file, and a busy timeout so that several worker processes can share the file.
PostgreSQL keeps its defaults (``fsync=on``, ``synchronous_commit=on``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from hdsvault.db import driver

BUSY_TIMEOUT_SECONDS = 30
"""How long a SQLite statement waits for a lock held by another connection."""

_BUSY_TIMEOUT = f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}"

SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",
    _BUSY_TIMEOUT,
    "PRAGMA cache_size=-65536",  # 64 MiB page cache per connection: index inserts stay in memory
)


class DurableConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions are on disk when ``commit`` returns, but
    whose flush does not hold the database's write lock.

    Why: SQLite has one write lock per database, and with ``synchronous=FULL`` each commit
    flushes the WAL while holding it. On this project's test machines the flush took 0.16-2.3 ms,
    more than the ~0.9 ms of the transaction's statements, so under concurrent writers (DIMSE
    worker processes, HTTP workers) the lock, not the CPU, set the pace: a 39 KB C-STORE held
    it ~2 ms, and it was busy ~60 % of the time at concurrency 4.

    How: the connection runs ``synchronous=NORMAL``, under which SQLite's commit appends the
    transaction's frames to the WAL and releases the lock without flushing; then, before
    ``commit`` returns to its caller, :meth:`commit` flushes the WAL file (``fdatasync``). The
    WAL is append-only between checkpoints and SQLite flushes it before each checkpoint (and the
    database after), so once that flush returns the transaction's frames, and every frame
    before them, are on disk exactly as ``synchronous=FULL`` would have left them: a
    power loss then keeps the transaction. Concurrent writers' flushes overlap, and the file
    system folds them into shared journal commits (group commit across processes). Measured
    with every ``fsync``/``fdatasync`` made 1 ms longer (an ``LD_PRELOAD`` shim, as a slower
    disk): four processes writing small transactions, 511 -> 1,305-1,407 per second; one
    process, unchanged (573 -> 598); C-STORE of 39 KB at concurrency 4, 244-247 -> 322-373
    instances/s. On the bare disk (0.16 ms flushes), +4 %.

    What differs from ``synchronous=FULL``: another connection may read a transaction in the
    ~1 ms between its commit and its flush. Nothing leaves the server on such a read alone:
    a read of health data is journaled first by a write transaction, whose flush covers every
    earlier frame (the WAL is sequential); the SIEM export calls :func:`flush_wal` before it
    sends. Only connections in WAL mode on a file work this way; any other (an in-memory
    database, a file system without WAL support) keeps ``synchronous=FULL``.
    """

    wrote: bool = False
    """A write transaction (``BEGIN IMMEDIATE``) is open: its commit must flush the WAL."""

    wal_path: str | None = None
    """The WAL file this connection flushes after its commits; ``None``: it runs
    ``synchronous=FULL`` instead."""

    _wal_fd: int | None = None  # closed when the connection is collected
    _flushed_changes = 0

    def commit(self) -> None:
        # ``total_changes`` also catches rows written in a deferred (read) transaction.
        wrote, self.wrote = self.wrote, False
        super().commit()
        if self.wal_path is not None and (wrote or self.total_changes != self._flushed_changes):
            self._flushed_changes = self.total_changes
            self.flush_wal()

    def rollback(self) -> None:
        self.wrote = False
        super().rollback()

    def flush_wal(self) -> None:
        """Flush the WAL file to disk (the first time, its directory too: a new WAL's entry)."""
        assert self.wal_path is not None
        if self._wal_fd is None:
            self._wal_fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
            weakref.finalize(self, os.close, self._wal_fd)
            _flush_directory(os.path.dirname(self.wal_path))
        os.fdatasync(self._wal_fd)


def _flush_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_wal(engine: Engine) -> None:
    """Make every write transaction committed so far durable, before something that was read
    leaves the server without a journaled write of its own (see :class:`DurableConnection`).
    Nothing to do off SQLite, or when the database runs ``synchronous=FULL``."""
    if not is_sqlite(engine):
        return
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        if isinstance(dbapi_conn, DurableConnection) and dbapi_conn.wal_path is not None:
            dbapi_conn.flush_wal()


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy drive transactions (BEGIN is emitted by the "begin" hook below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    main = next(row[2] for row in cur.execute("PRAGMA database_list") if row[1] == "main")
    if isinstance(dbapi_conn, DurableConnection) and mode == "wal" and main:
        dbapi_conn.wal_path = main + "-wal"
        cur.execute("PRAGMA synchronous=NORMAL")
    else:
        cur.execute("PRAGMA synchronous=FULL")
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

    def busy(exc: Exception) -> bool:
        return isinstance(exc, OperationalError) and _busy(exc.orig) and not conn.invalidated

    driver.execute(conn, "PRAGMA busy_timeout=0", autobegin=False)
    try:
        _polled(lambda: driver.execute(conn, "BEGIN IMMEDIATE", autobegin=False), busy)
        dbapi_conn = conn.connection.dbapi_connection
        if isinstance(dbapi_conn, DurableConnection):
            dbapi_conn.wrote = True
    finally:
        if not conn.invalidated:
            driver.execute(conn, _BUSY_TIMEOUT, autobegin=False)


def _busy(exc: BaseException | None) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _polled(begin: Callable[[], object], busy: Callable[[Exception], bool]) -> None:
    """``begin()`` again every :data:`WRITE_LOCK_POLL` while it fails with ``busy``, up to the
    busy time-out (:func:`_begin_write`)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            begin()
            return
        except Exception as exc:
            if not busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(WRITE_LOCK_POLL)


class KeptWriteConnection:
    """SQLite: one connection kept by one thread (the journal's group-commit writer) for its
    write transactions, driven through the driver alone: ``BEGIN IMMEDIATE`` (polled as
    :func:`_begin_write` does, the busy time-out of this connection set to 0 once), the
    statements, then :meth:`DurableConnection.commit`, which flushes the WAL before it returns.

    Why: through SQLAlchemy, the transaction object, its ``begin`` hook (three statements: two
    to switch the busy time-out off and on around ``BEGIN IMMEDIATE``) and its commit cost
    ~45 us of CPU per transaction (78 against 33 us without the flush, measured in-process);
    for a writer that commits once per single-instance WADO-RS retrieval, the server's CPU per
    request went down 1-9 % in 5 of 6 A/B pairs (docs/imaging-bench.md). Errors are the driver's
    (``sqlite3.Error``); a failed transaction is rolled back, and :meth:`close` then gives the
    next one a fresh connection."""

    def __init__(self, engine: Engine) -> None:
        if not is_sqlite(engine):
            raise ValueError("KeptWriteConnection is for SQLite")
        self.engine = engine
        self._proxy: Any = None  # the pool's proxy, detached: closing it closes the connection
        self._conn: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and flushed) at the end of the block, rolled back
        if it raises."""
        conn = self._connection()
        _polled(lambda: conn.execute("BEGIN IMMEDIATE"), _busy)
        if isinstance(conn, DurableConnection):
            conn.wrote = True
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        conn.commit()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            proxy = self.engine.raw_connection()
            proxy.detach()  # ours until closed: never back in the pool with its busy time-out 0
            conn = proxy.dbapi_connection
            assert isinstance(conn, sqlite3.Connection)
            conn.execute("PRAGMA busy_timeout=0")
            self._proxy, self._conn = proxy, conn
        return self._conn

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = self._conn = None


def marker(conn: Connection) -> str:
    """The driver's positional parameter marker (``?`` for sqlite3, ``%s`` for psycopg), for
    the few hot statements written as SQL text."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def read_connection(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it neither takes nor waits for the write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})


@contextlib.contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read transaction on a read connection of the pool, ended with the block."""
    with read_connection(engine) as conn, conn.begin():
        yield conn


class KeptReadConnection:
    """A read connection kept for the successive read transactions of one thread (an event
    loop's): no pool check-out and return for each, and so no pool to wait for when its
    connections are all taken by worker threads (a wait that would hold the whole loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One read transaction, ended with the block: no snapshot is kept between uses (on
        SQLite it would hold back checkpoints). A database error closes the connection, and
        the next use opens a fresh one."""
        if self._conn is None:
            self._conn = read_connection(self.engine)
        try:
            with self._conn.begin():
                yield self._conn
        except DBAPIError:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def create_db_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the engine for ``url`` with the platform's durability settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "factory": DurableConnection}
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, pool_pre_ping=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
