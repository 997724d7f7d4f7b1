"""Periodic background work of a process, each task in its own daemon thread.

Used for the journal sequencer (every ``journal.integrate_interval_seconds``) and the expiry
of bulk ``$export`` files. Each worker process runs its own tasks; the work must be safe to
run concurrently (the sequencer takes the log's row lock, expiry deletes idempotently). A
failure is logged and retried at the next tick: a background task never takes a server down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("hdsvault.background")


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
        """Stop the loop; with ``final_run``, run the work once more (nothing left behind)."""
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
