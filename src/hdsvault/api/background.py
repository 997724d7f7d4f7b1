"""Background work of a server process: periodic tasks in daemon threads.

- the journal sequencer integrates pending entries every ``journal.integrate_interval_seconds``;
- expired bulk ``$export`` files are deleted every minute (``fhir.export_retention_hours``).

Each worker process runs its own; the work is safe to run concurrently (the sequencer takes
the log's row lock, expiry deletes idempotently). A failure is logged and retried at the
next tick: a background task never takes the server down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from hdsvault.blobs import open_blob_store
from hdsvault.journal import service as journal
from hdsvault.platform import Platform
from hdsvault.records import bulk_export
from hdsvault.records.store import RecordStore

log = structlog.get_logger("hdsvault.background")

EXPORT_EXPIRY_INTERVAL_SECONDS = 60.0


class PeriodicTask:
    """Runs ``work`` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(
        self, name: str, interval: float, work: Callable[[], object], *, final_run: bool = False
    ) -> None:
        self.name = name
        self._interval = interval
        self._work = work
        self._final_run = final_run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._final_run:
            self._once()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._once()

    def _once(self) -> None:
        try:
            self._work()
        except Exception as exc:
            log.error(f"{self.name}.failed", error=type(exc).__name__, message=str(exc)[:200])


class JournalSequencerThread(PeriodicTask):
    """Integrates pending journal entries; one last run at a clean shutdown leaves none."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(
            "journal-sequencer",
            platform.settings.journal.integrate_interval_seconds,
            lambda: journal.integrate(platform),
            final_run=True,
        )


def export_expiry(platform: Platform) -> PeriodicTask:
    """Deletes bulk ``$export`` jobs (sealed files, then rows) past their expiry."""
    store = RecordStore(platform)
    blobs = open_blob_store(platform.settings, platform.engine)
    return PeriodicTask(
        "bulk-export-expiry",
        EXPORT_EXPIRY_INTERVAL_SECONDS,
        lambda: bulk_export.expire(store, blobs),
    )
