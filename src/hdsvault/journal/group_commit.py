"""Group commit: many concurrent durable appends share one transaction and one fsync.

A read must be journaled durably before its data leaves the server (invariant 2), and a
durable commit costs an fsync (~1 ms on common disks): one transaction per read caps a server
at about a thousand journaled reads per second, whatever its CPU. Here request threads hand
their entry to one writer thread and wait; the writer commits everything that arrived while
the previous commit was being flushed, then wakes every waiter. Each caller still returns
only after *its* entry is durable, and a failed commit fails every caller of that batch.

Writes do not come here: their entry must commit in the write's own transaction
(invariant 1), so they call :func:`hdsvault.journal.store.append` with their connection.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Engine

from hdsvault.journal.entry import JournalEntry
from hdsvault.journal.store import append_many

MAX_BATCH = 2000


@dataclass
class _Pending:
    entry: JournalEntry
    done: Future[None]


class GroupCommitJournal:
    """Durable appends with group commit; one instance (and one writer thread) per process."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal-group-commit", daemon=True)
        self._closed = False
        self._thread.start()

    def record(self, entry: JournalEntry, timeout: float | None = 30.0) -> None:
        """Return once ``entry`` is committed durably; raise what the commit raised."""
        if self._closed:
            raise RuntimeError("the journal writer is closed")
        pending = _Pending(entry, Future())
        self._queue.put(pending)
        pending.done.result(timeout)

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                with self._engine.begin() as conn:
                    append_many(conn, (p.entry for p in batch))
            except BaseException as exc:  # every waiter of the batch learns it failed
                for p in batch:
                    p.done.set_exception(exc)
            else:
                for p in batch:
                    p.done.set_result(None)
