"""Background work of a server process: sequencing the journal at a fixed interval."""

from __future__ import annotations

import threading

import structlog

from hdsvault.journal import service as journal
from hdsvault.platform import Platform

log = structlog.get_logger("hdsvault.journal")


class JournalSequencerThread:
    """Integrates pending journal entries every ``journal.integrate_interval_seconds``.

    Each worker process runs one; the sequencer's row lock makes concurrent runs safe.
    A failure (e.g. a tampered log refusing to be checkpointed) is logged and retried.
    """

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._interval = platform.settings.journal.integrate_interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-sequencer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._integrate()  # leave nothing pending at a clean shutdown

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._integrate()

    def _integrate(self) -> None:
        try:
            journal.integrate(self._platform)
        except Exception as exc:
            log.error("journal.integrate_failed", error=type(exc).__name__, message=str(exc)[:200])
