"""pynetdicom's association loops, woken by what they wait for instead of polling.

pynetdicom 3.0 runs two loops per association: the DUL thread (socket <-> PDUs) and the
acceptor's reactor (decoded DIMSE messages -> handlers). Each sleeps a fixed 1 ms whenever it
finds nothing to do, so a C-STORE waited up to ~2 ms doing nothing between its last PDU and its
response. An earlier version made both sleep 0.1 ms while the association was busy (263 ->
461 instances/s from dcmtk's ``storescu``, 39 KB files, no-op SCP); each short sleep still
cost a wake-up, and the VM's idle vCPUs wake late.

Here each loop waits for its own events, bounded by :data:`SIGNALLED_WAIT`:

- the reactor waits on a flag raised by every put into the association's DIMSE message queue
  and into its DUL's queue of primitives for the user (release and abort requests, the peer
  gone: :class:`_ArrivalQueue`), then looks exactly as pynetdicom does (pause checkpoint, a
  non-blocking get), so the pause protocol of user threads is unchanged;
- the DUL thread's idle sleep becomes a ``select`` on the peer's socket and on a wake-up
  socket written by every put into its queue of primitives to send (:class:`_WakingQueue`,
  :class:`_DulClock`): a PDU or a response is acted on as soon as it exists. Once the
  connection is closed (the only state in which ``stop_dul`` stops it) the DUL thread sleeps
  pynetdicom's 1 ms again, so its stop is seen at once.

What nothing signals is seen within :data:`SIGNALLED_WAIT`: the timers (ARTIM, the network
time-out, seconds long), a DUL that died on an error, a kill from another thread. Until
session 9 the bound was pynetdicom's 1 ms, because a release request was polled: each idle
association thread woke 1,000 times a second and took the interpreter lock from the busy
ones. The queues are swapped by :func:`wake_on_events` at ``EVT_CONN_OPEN``, before an
accepted association's DUL thread starts, so nothing can be put in the old ones.
Associations hdsvault requests (a C-MOVE's sub-association: their DUL thread is already
running at ``EVT_CONN_OPEN``) keep polling, fast while busy (:data:`BUSY_POLL`), as before.

The association loop is pynetdicom's ``Association._run_reactor`` with its sleep changed, and
one race closed: a ``send_*`` call that pauses the loop just after the loop passed its pause
checkpoint could see it paused while it was about to take a message, and lose its response to
it (a "DIMSE timeout"); the loop now looks again at the checkpoint before taking one;
:func:`install` refuses to replace a version it was not written against (the test suite checks
that it applies to the locked pynetdicom, and the DUL loop the clock is written for), so an
upgrade cannot silently run a stale copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import queue
import select
import socket
import threading
import time
from typing import Any

import structlog
from pynetdicom import dul as pynetdicom_dul
from pynetdicom import evt
from pynetdicom.association import LOGGER, Association
from pynetdicom.dul import DULServiceProvider

log = structlog.get_logger("hdsvault.dicom")

WAIT = 0.001
"""pynetdicom's own fixed sleep: associations without the wake-up wiring, once idle."""
SIGNALLED_WAIT = 0.05
"""Longest wait of either loop of an association with the wake-up wiring (see module)."""
BUSY_POLL = 0.0001
"""Associations opened without :func:`wake_on_events` (those hdsvault requests, e.g. a C-MOVE's
sub-association): both loops poll this often while the association moved data in the last
:data:`IDLE_AFTER` seconds, :data:`WAIT` once idle (the previous scheme, kept for them)."""
IDLE_AFTER = 0.05

PYNETDICOM_REACTOR_SHA256 = "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"
"""SHA-256 of the source of the ``Association._run_reactor`` this module re-implements."""
PYNETDICOM_DUL_SHA256 = "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"
"""SHA-256 of the ``DULServiceProvider.run_reactor`` whose idle sleep :class:`_DulClock` turns
into a wait (its only use of ``time``)."""

_original = Association._run_reactor


def _idle_for(assoc: Any) -> float:
    """Seconds since the association's DUL last moved data (its network idle timer)."""
    started = getattr(assoc.dul._idle_timer, "_start_time", None)
    return time.time() - started if started is not None else 0.0


class _ArrivalQueue(queue.Queue[Any]):
    """A queue the reactor reads (DIMSE messages, the DUL's primitives for the user), raising
    a flag on every put so the reactor wakes at once; both queues of an association share it."""

    def __init__(self, arrived: threading.Event | None = None) -> None:
        super().__init__()
        self.arrived = arrived or threading.Event()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.arrived.set()


def _run_reactor(self: Any) -> None:
    """pynetdicom 3.0.4 ``Association._run_reactor``, waking on a message's arrival instead of
    sleeping a fixed time, and never taking a message once paused (see module)."""
    self._is_paused = False
    arrived: threading.Event | None = getattr(self.dimse.msg_queue, "arrived", None)
    msg = None
    while not self._kill:
        # Wait for a message (or WAIT, for the other checks below), unless the last look
        # found one (another may be queued); the flag is cleared before looking, so a message
        # put after the look raises it again.
        if arrived is None:
            delay = BUSY_POLL if msg or _idle_for(self) < IDLE_AFTER else WAIT
            self.dul._run_loop_delay = delay
            time.sleep(delay)
        else:
            if not msg:
                arrived.wait(SIGNALLED_WAIT)
            arrived.clear()

        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():
            # A sender (send_c_store, send_c_echo...) paused the loop after the wait above had
            # returned, and saw it paused: the response it waits for is its own. pynetdicom's
            # loop takes it here if it arrives in that window (the sender then times out on
            # a "DIMSE timeout"); seen with in-process peers. Look again once unpaused.
            msg = None
            continue

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, context_id)

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


class _WakingQueue(queue.Queue[Any]):
    """The DUL's queue of primitives to send, waking the DUL thread on every put."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):  # full (it is already awake) or closed
            self._wake.send(b"\0")


class _DulClock:
    """``time`` as pynetdicom's DUL module sees it: the DUL thread's idle sleep becomes a wait
    for the peer's next bytes or the next primitive to send, bounded by the same delay.

    pynetdicom's DUL loop sleeps ``_run_loop_delay`` whenever it found nothing to do, so a
    PDU arriving (or a response queued by the reactor) waits for the sleep to end. Every other
    thread (``stop_dul``) sleeps as before.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        dul = threading.current_thread()
        waker: socket.socket | None = getattr(dul, "_hds_waker", None)
        transport = getattr(getattr(dul, "socket", None), "socket", None)
        if waker is None or transport is None:
            time.sleep(seconds)
            return
        try:
            ready, _, _ = select.select([transport, waker], [], [], SIGNALLED_WAIT)
        except (OSError, ValueError):  # the connection closed under us: pynetdicom sees it next
            time.sleep(seconds)
            return
        if waker in ready:
            with contextlib.suppress(OSError):
                waker.recv(4096)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        s.close()


def original_source_digests() -> tuple[str, str]:
    """SHA-256 of the installed pynetdicom's association reactor and DUL loop sources."""
    return (
        hashlib.sha256(inspect.getsource(_original).encode()).hexdigest(),
        hashlib.sha256(inspect.getsource(DULServiceProvider.run_reactor).encode()).hexdigest(),
    )


def install() -> bool:
    """Use the event-driven loops for every association of this process; False (and a
    warning) if the installed pynetdicom is not the one they were written for."""
    if Association._run_reactor is _run_reactor:
        return True
    if original_source_digests() != (PYNETDICOM_REACTOR_SHA256, PYNETDICOM_DUL_SHA256):
        log.warning("dicom.reactor-not-tuned", reason="pynetdicom's reactor changed")
        return False
    Association._run_reactor = _run_reactor  # type: ignore[method-assign]
    pynetdicom_dul.time = _DulClock()  # type: ignore[attr-defined,assignment]
    return True


def wake_on_events(event: Any) -> None:
    """EVT_CONN_OPEN: both loops of the new association wait for their events (see module).

    Runs before the association (and its DUL thread) starts: nothing has been put in the
    queues it swaps.
    """
    assoc = event.assoc
    messages = _ArrivalQueue()
    assoc.dimse.msg_queue = messages
    dul = assoc.dul
    dul.to_user_queue = _ArrivalQueue(messages.arrived)
    waker, wake = socket.socketpair()
    waker.setblocking(False)
    wake.setblocking(False)
    dul._hds_waker = waker
    dul.to_provider_queue = _WakingQueue(wake)
    # Closed with the connection: the association and its DUL reference each other, so
    # leaving it to the garbage collector would hold two descriptors per past association
    # until a full collection (a modality sending one association per image runs out).
    assoc.bind(evt.EVT_CONN_CLOSE, lambda _event: _close(waker, wake))
