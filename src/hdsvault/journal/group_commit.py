"""Group commit: many concurrent durable appends share one transaction and one fsync.

A read must be journaled durably before its data leaves the server (invariant 2), and a
durable commit costs an fsync (~1 ms on common disks): one transaction per read caps a server
at about a thousand journaled reads per second, whatever its CPU. Here request threads add
their entry to the *open batch* and wait; one writer thread takes the whole open batch as soon
as the previous commit is flushed, commits it in one transaction, then wakes its waiters with
a single event. Each caller still returns only after *its* entry is durable, and a failed
commit fails every caller of that batch.

A batch is everything that arrived during the previous commit, so batches grow with load by
themselves; the per-entry cost for a caller is one list append under a lock and one wait,
which is what lets many request threads share one writer (no per-entry future or queue item).

Writes do not come here: their entry must commit in the write's own transaction
(invariant 1), so they call :func:`hdsvault.journal.store.append` with their connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hdsvault.db.engine import KeptWriteConnection, is_sqlite
from hdsvault.journal.entry import JournalEntry
from hdsvault.journal.store import append_many

log = structlog.get_logger("hdsvault.journal")


class JournalUnavailable(RuntimeError):
    """Entries could not be made durable: the writer is closed, their commit failed, or it
    did not finish in time. A read that gets this must not return its data (invariant 2)."""


UNWOKEN_LIMIT = 0.05
"""Seconds entries queued without waking the writer (``submit(..., wake=False)``) wait at most
for the caller's :meth:`GroupCommitJournal.wake`: the writer looks at the open batch this
often even when nobody wakes it, so that a wake-up never made costs a delay, not a reader's
time-out."""


class _Batch:
    """Entries committed together, and how their callers learn the outcome."""

    __slots__ = ("_callbacks", "_lock", "done", "entries", "error", "since", "woken")

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self.woken = False  # a caller asked for the commit (else: UNWOKEN_LIMIT after since)
        self.since = 0.0  # when the first entry came (time.monotonic)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] | None = []  # None once finished

    def wait(self, timeout: float | None = 30.0) -> None:
        """Return once the batch is committed durably; else :class:`JournalUnavailable`
        (from what the commit raised)."""
        if not self.done.wait(timeout):
            raise JournalUnavailable("the journal entry was not committed in time")
        if self.error is not None:
            raise JournalUnavailable(f"the journal commit failed: {self.error}") from self.error

    def add_done_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the batch is committed or failed (then :meth:`wait`
        returns at once): from the writer thread, or here if that is the case already.

        Why: an event loop waits for its entries without a thread blocked in :meth:`wait`
        (``callback`` wakes the loop). It must be quick and must not raise."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(callback)
                return
        callback()

    def finish(self) -> None:
        """The writer's: the outcome is known (``error`` set if it failed); wake the waiters."""
        self.done.set()
        with self._lock:
            callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the writer must go on for the other batches
                log.exception("journal.batch-callback-failed")


Pending = _Batch
"""What :meth:`GroupCommitJournal.submit` returns: ``wait()`` until the entries are durable."""


class GroupCommitJournal:
    """Durable appends with group commit; one instance (and one writer thread) per process."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._open = _Batch()
        self._closed = False
        # the writer thread's (:meth:`_run`): on SQLite the driver's own connection, else
        # SQLAlchemy's
        self._kept = KeptWriteConnection(engine) if is_sqlite(engine) else None
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="journal-group-commit", daemon=True)
        self._thread.start()

    def record(self, entry: JournalEntry, timeout: float | None = 30.0) -> None:
        """Return once ``entry`` is committed durably; else :class:`JournalUnavailable`."""
        self.submit((entry,)).wait(timeout)

    def submit(self, entries: Sequence[JournalEntry], *, wake: bool = True) -> Pending:
        """Queue ``entries`` for the next commit (all in the same one) and return at once.

        Why: a retrieval can read and decrypt its files while its trace is being flushed,
        and send them only after ``wait()`` returned (invariant 2 holds: nothing leaves
        before the entry is durable); the flush no longer adds to the response time.

        ``wake`` false: the writer is not woken for them; the caller calls :meth:`wake` once
        it has queued what it will queue soon (an event loop, once it has nothing else ready:
        :class:`hdsvault.api.loop_calls.IdleWake`), so that one commit and one flush carry
        them all. A writer busy committing takes them when it is done, woken or not; one
        never woken takes them after :data:`UNWOKEN_LIMIT`.
        """
        if not entries:
            raise ValueError("nothing to journal")
        with self._lock:
            if self._closed:
                raise JournalUnavailable("the journal writer is closed")
            batch = self._open
            if not batch.entries:
                batch.since = time.monotonic()
            batch.entries.extend(entries)
            if wake and not batch.woken:
                batch.woken = True
                self._arrived.notify()
        return batch

    def wake(self) -> None:
        """Commit what is queued (:meth:`submit` with ``wake`` false) without waiting more."""
        with self._lock:
            batch = self._open
            if batch.entries and not batch.woken:
                batch.woken = True
                self._arrived.notify()

    def close(self) -> None:
        """Commit what is waiting, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._arrived.notify()
        self._thread.join(timeout=30)

    def _take(self, committed: bool) -> _Batch | None:
        """Hand over the open batch and open a new one, once it holds entries to commit: at
        once after a commit (``committed``: what arrived meanwhile), else once woken or
        queued :data:`UNWOKEN_LIMIT` ago."""
        with self._lock:
            while not self._closed:
                batch = self._open
                left = batch.since + UNWOKEN_LIMIT - time.monotonic()
                if batch.entries and (committed or batch.woken or left <= 0):
                    break
                committed = False
                self._arrived.wait(left if batch.entries else UNWOKEN_LIMIT)
            batch = self._open
            if not batch.entries:
                return None  # closed, nothing left to commit
            self._open = _Batch()
            return batch

    def _run(self) -> None:
        """Commit batch after batch on one connection, kept between batches.

        Why kept: a pooled connection per batch costs a check-out, a reset on return and the
        pool's events; with WADO-RS served ahead of the router, the two took a single-instance
        request from 1.29-1.32 to 1.22-1.24 ms of server CPU (docs/imaging-bench.md). A batch whose
        commit fails closes it, so that the next batch starts on a fresh connection: a failed
        commit fails its own callers only.
        """
        try:
            committed = False
            while (batch := self._take(committed)) is not None:
                committed = True
                try:
                    self._commit(batch.entries)
                except BaseException as exc:  # every waiter of the batch learns it failed
                    batch.error = exc
                    self._disconnect()
                batch.finish()
        finally:
            self._disconnect()

    def _commit(self, entries: list[JournalEntry]) -> None:
        """Commit ``entries`` in one transaction on the kept connection.

        On SQLite, through the driver alone (:class:`KeptWriteConnection`: ~45 us of CPU
        less per batch). On PostgreSQL, the connection may have been cut while idle (a
        restart, a failover), which the pool's pre-ping used to catch at check-out: a batch
        whose statements find it cut, before any commit was sent, runs once more on a fresh
        connection."""
        if self._kept is not None:
            with self._kept.transaction() as raw:
                append_many(raw, entries)
            return
        try:
            conn = self._connection()
            transaction = conn.begin()
            append_many(conn, entries)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._disconnect()
            conn = self._connection()
            transaction = conn.begin()
            append_many(conn, entries)
        transaction.commit()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _disconnect(self) -> None:
        if self._kept is not None:
            self._kept.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
