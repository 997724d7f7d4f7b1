"""pynetdicom's association loops, polling fast while the peer is busy.

pynetdicom 3.0 runs two polling loops per association: the DUL thread (socket <-> PDUs) and
the acceptor's reactor (decoded DIMSE messages -> handlers). Each sleeps a fixed 1 ms whenever
it finds nothing to do, so a C-STORE waits up to ~2 ms doing nothing between its last PDU and
its response: a no-op pynetdicom SCP took 263 instances/s from dcmtk's ``storescu`` (39 KB
files, this machine) and 461/s with both loops sleeping 0.1 ms, for the same CPU per instance.

Here both loops sleep :data:`BUSY_DELAY` while the association has seen traffic in the last
:data:`IDLE_AFTER` seconds, and pynetdicom's own 1 ms once it has been idle that long, so an
open but idle association (a viewer that keeps it for queries) costs what it did before.

The acceptor loop is pynetdicom's ``Association._run_reactor`` with only its sleep changed;
:func:`install` refuses to replace a version it was not written against (the test suite checks
that it applies to the locked pynetdicom), so an upgrade cannot silently run a stale copy.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from typing import Any

import structlog
from pynetdicom import evt
from pynetdicom.association import LOGGER, Association

log = structlog.get_logger("hdsvault.dicom")

BUSY_DELAY = 0.0001
"""Seconds a loop sleeps when it found nothing to do, while the association is busy."""
IDLE_DELAY = 0.001
"""pynetdicom's own sleep, used once the association has been idle for :data:`IDLE_AFTER`."""
IDLE_AFTER = 0.05

PYNETDICOM_REACTOR_SHA256 = "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"
"""SHA-256 of the source of the ``Association._run_reactor`` this module re-implements."""

_original = Association._run_reactor


def _idle_for(assoc: Any) -> float:
    """Seconds since the association's DUL last moved data (its network idle timer)."""
    started = getattr(assoc.dul._idle_timer, "_start_time", None)
    return time.time() - started if started is not None else 0.0


def _run_reactor(self: Any) -> None:
    """pynetdicom 3.0.4 ``Association._run_reactor``, with an adaptive sleep (see module)."""
    self._is_paused = False
    delay = BUSY_DELAY
    while not self._kill:
        time.sleep(delay)

        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, context_id)
        # Busy or idle: both loops follow the DUL's last traffic.
        delay = BUSY_DELAY if msg or _idle_for(self) < IDLE_AFTER else IDLE_DELAY
        self.dul._run_loop_delay = delay

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            LOGGER.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def original_source_digest() -> str:
    """SHA-256 of the installed pynetdicom's own ``Association._run_reactor`` source."""
    return hashlib.sha256(inspect.getsource(_original).encode()).hexdigest()


def install() -> bool:
    """Use the adaptive loop for every association of this process; False (and a warning)
    if the installed pynetdicom is not the one it re-implements."""
    if Association._run_reactor is _run_reactor:
        return True
    if original_source_digest() != PYNETDICOM_REACTOR_SHA256:
        log.warning("dicom.reactor-not-tuned", reason="pynetdicom's reactor changed")
        return False
    Association._run_reactor = _run_reactor  # type: ignore[method-assign]
    return True


def busy_polling(event: Any) -> None:
    """EVT_CONN_OPEN: the DUL loop starts in busy mode (the peer is about to send)."""
    event.assoc.dul._run_loop_delay = BUSY_DELAY
