"""ImagingStudy syncs after C-STORE associations: each study once, when the listener is quiet.

Why: the end of each association re-derived the ImagingStudy of every study it added to,
in the association's thread: every instance's sealed attributes of the study opened again
and the resource written through the records service (12.6 ms for a study of 40 instances,
in-process). Associations that send parts of one study (a modality's series, a sender that
splits a study) each paid it for the whole study, and while other associations were open
that work took the one interpreter from their C-STOREs: at concurrency 4 in the bench,
each association of 25 instances ended with ~13 ms of it, ~0.5 ms per instance.

Here the studies of each ended association are kept, each once, and one thread syncs them
when no association is open, or at the latest :data:`MAX_DELAY` seconds after the first
was kept (a listener that is never idle still gets its studies in step). Derived data: each
C-STORE was acknowledged once durable; until its study is synced the FHIR API shows the
study as it was, and a crash in between is caught up by ``sync_pending`` at the listener's
next start. :meth:`StudySyncs.close` syncs what is left before the listener stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import structlog

from hdsvault.records.model import Caller

log = structlog.get_logger("hdsvault.dicom")

MAX_DELAY = 5.0
"""Seconds a kept study may wait for the listener to be quiet."""
QUIET_POLL = 0.02
"""How often the sync thread looks whether the listener is quiet while studies wait."""


class StudySyncs:
    """``sync(caller, study_id)`` for the studies :meth:`add` keeps, from a thread of its own."""

    def __init__(
        self, sync: Callable[[Caller, str], object], open_associations: Callable[[], int]
    ) -> None:
        self._sync = sync
        self._open = open_associations
        self._pending: dict[tuple[str, str], Caller] = {}
        self._first_kept: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="imagingstudy-sync", daemon=True)
        self._thread.start()

    def add(self, caller: Caller, study_ids: Iterable[str]) -> None:
        """Keep the studies an association added to (each once, however many add it)."""
        with self._lock:
            for sid in study_ids:
                self._pending[(caller.tenant, sid)] = caller
            if self._pending and self._first_kept is None:
                self._first_kept = time.monotonic()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, then sync what is still kept (before the listener stops)."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=60)
        self._sync_kept()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait()
            self._wake.clear()
            while not self._closing and self._open() > 0 and not self._overdue():
                time.sleep(QUIET_POLL)
            if not self._closing:
                self._sync_kept()

    def _overdue(self) -> bool:
        first = self._first_kept
        return first is not None and time.monotonic() - first >= MAX_DELAY

    def _sync_kept(self) -> None:
        with self._lock:
            kept, self._pending, self._first_kept = self._pending, {}, None
        for (_tenant, sid), caller in kept.items():
            try:
                self._sync(caller, sid)
            except Exception as exc:  # left for sync_pending at the next start
                log.warning("imagingstudy.sync-deferred", error=str(exc)[:200])
