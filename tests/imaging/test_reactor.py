"""The association loops wake on what they wait for, and keep pynetdicom's behaviour otherwise."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from imaging_helpers import Dimse
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from hdsvault.dicom import reactor

pytestmark = pytest.mark.timeout(60)


def test_the_locked_pynetdicom_is_the_one_reimplemented() -> None:
    # A pynetdicom upgrade that changes either loop fails here, not silently in production.
    assert reactor.original_source_digests() == (
        reactor.PYNETDICOM_REACTOR_SHA256,
        reactor.PYNETDICOM_DUL_SHA256,
    )
    assert reactor.install()
    assert Association._run_reactor is reactor._run_reactor


def test_a_changed_pynetdicom_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Association, "_run_reactor", reactor._original)
    monkeypatch.setattr(reactor, "PYNETDICOM_DUL_SHA256", "0" * 64)
    assert not reactor.install()
    assert Association._run_reactor is reactor._original


def _server_association(d: Dimse) -> Association:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        active = d.server.ae.active_associations if d.server.ae else []
        if active:
            return active[0]
        time.sleep(0.01)
    raise AssertionError("the server never saw the association")


def test_served_associations_wait_for_events_and_still_release(dimse: Dimse) -> None:
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(Verification)
    assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    served = _server_association(dimse)
    assert isinstance(served.dimse.msg_queue, reactor._ArrivalQueue)
    assert isinstance(served.dul.to_provider_queue, reactor._WakingQueue)
    for _ in range(20):  # requests and responses cross both loops, many times
        assert assoc.send_c_echo().Status == 0x0000
    time.sleep(0.05)  # idle: nothing signalled, the loops still answer afterwards
    assert assoc.send_c_echo().Status == 0x0000
    wakers = (served.dul._hds_waker, served.dul.to_provider_queue._wake)
    assoc.release()  # a release request is seen by the reactor's bounded wait
    assert assoc.is_released
    deadline = time.monotonic() + 5
    while served.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not served.is_alive()
    while any(s.fileno() != -1 for s in wakers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [s.fileno() for s in wakers] == [-1, -1]  # closed with the connection, not by GC


class _FakeDul(threading.Thread):
    """A thread shaped like pynetdicom's DUL for the clock: a transport and a waker."""

    def __init__(self, transport: socket.socket, waker: socket.socket, seconds: float) -> None:
        super().__init__(daemon=True)
        self.socket: Any = type("Transport", (), {"socket": transport})()
        self._hds_waker = waker
        self.seconds = seconds
        self.slept = -1.0

    def run(self) -> None:
        start = time.monotonic()
        reactor._DulClock.sleep(self.seconds)
        self.slept = time.monotonic() - start


@pytest.mark.parametrize("wake_by", ["peer bytes", "a primitive to send"])
def test_the_dul_clock_wakes_on_its_events(wake_by: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor, "SIGNALLED_WAIT", 30)  # far longer than the test may take
    peer, transport = socket.socketpair()
    waker, wake = socket.socketpair()
    queue = reactor._WakingQueue(wake)
    dul = _FakeDul(transport, waker, seconds=reactor.WAIT)
    dul.start()
    time.sleep(0.05)
    assert dul.is_alive()  # waiting, not returning at once
    if wake_by == "peer bytes":
        peer.send(b"PDU")
    else:
        queue.put("P-DATA")
    dul.join(10)
    assert not dul.is_alive() and 0 <= dul.slept < 10
    for s in (peer, transport, waker, wake):
        s.close()


def test_other_threads_sleep_as_before() -> None:
    start = time.monotonic()
    reactor._DulClock.sleep(0.02)  # the test's thread has no waker: a plain sleep
    assert time.monotonic() - start >= 0.02
    assert reactor._DulClock().monotonic is time.monotonic  # the rest is the time module


def test_requested_associations_poll_fast_while_busy(dimse: Dimse) -> None:
    """An association hdsvault opens (a C-MOVE's sub-association) has no wake-up wiring:
    its loops poll fast while it moves data and back off when idle, as before."""
    assert reactor.install()
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(Verification)
    assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        assert not hasattr(assoc.dimse.msg_queue, "arrived")
        assert assoc.send_c_echo().Status == 0x0000
        assert _settles(assoc, reactor.BUSY_POLL)
        time.sleep(reactor.IDLE_AFTER * 6)  # nothing on the wire: both loops back off
        assert _settles(assoc, reactor.WAIT)
        assert assoc.send_c_echo().Status == 0x0000
        assert _settles(assoc, reactor.BUSY_POLL)
    finally:
        assoc.release()


def _settles(assoc: Association, delay: float) -> bool:
    """The loop updates the delay right after it has answered: allow it a moment."""
    deadline = time.monotonic() + 1
    while assoc.dul._run_loop_delay != delay and time.monotonic() < deadline:
        time.sleep(0.001)
    return bool(assoc.dul._run_loop_delay == delay)


def test_release_is_signalled_not_polled(dimse: Dimse, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the loops' bound at 30 s, an association still releases and ends at once: the
    release request wakes the reactor (the DUL's primitives for the user share its flag), and
    the DUL, its connection closed, stops. Polled, the release would wait the 30 s."""
    monkeypatch.setattr(reactor, "SIGNALLED_WAIT", 30)
    for _ in range(2):
        ae = AE(ae_title="DCMTK")
        ae.add_requested_context(Verification)
        started = time.monotonic()
        assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
        assert assoc.is_established
        served = _server_association(dimse)
        assert served.dul.to_user_queue.arrived is served.dimse.msg_queue.arrived
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
        served.join(10)
        assert not served.is_alive() and not served.dul.is_alive()
        assert time.monotonic() - started < 10


class _PausedInTheWindow(threading.Event):
    """The loop's pause checkpoint, cleared by a "sender" right after the loop's wait on it
    returned: the window in which pynetdicom's loop went on to take a message."""

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self.armed = True

    def wait(self, timeout: float | None = None) -> bool:
        passed = super().wait(timeout)
        if self.armed:
            self.armed = False
            self.clear()  # send_c_echo(): clear, then go on as soon as the loop looks paused
        return passed


class _PausableAssociation:
    """What the loop uses of an association, recording every message it takes and whether
    it was paused when it took it."""

    def __init__(self) -> None:
        self._kill = False
        self._reactor_checkpoint = _PausedInTheWindow()
        self._is_paused = False
        self.is_established = True
        self.taken_while_paused: list[bool] = []
        queue = reactor._ArrivalQueue()
        queue.put((1, "C-ECHO-RSP"))  # the sender's response, already there

        def get_msg(block: bool = False) -> tuple[Any, Any]:
            try:
                item = queue.get_nowait()
            except Exception:
                return None, None
            self.taken_while_paused.append(not self._reactor_checkpoint.is_set())
            return item

        self.dimse: Any = type(
            "Dimse", (), {"msg_queue": queue, "get_msg": staticmethod(get_msg)}
        )()
        acse = type("Acse", (), {"is_release_requested": lambda _s: False})()
        acse.is_aborted = lambda *_a: False
        self.acse: Any = acse
        dul = type("Dul", (), {"is_alive": lambda _s: True})()
        dul.idle_timer_expired = lambda: False
        self.dul: Any = dul

    def _serve_request(self, msg: Any, context_id: Any) -> None:
        pass


def test_a_paused_loop_leaves_the_response_to_its_sender() -> None:
    """A sender that pauses the loop just after it passed its checkpoint sees it paused, sends
    its request and waits for the response: the loop must not take that response (it did in
    pynetdicom's loop: the sender then failed on a DIMSE timeout, seen in this suite)."""
    assoc = _PausableAssociation()
    loop = threading.Thread(target=reactor._run_reactor, args=(assoc,), daemon=True)
    loop.start()
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:  # the loop is now paused
        time.sleep(0.001)
    time.sleep(0.05)
    assert assoc.taken_while_paused == []  # nothing taken while the sender holds the pause
    assoc._reactor_checkpoint.set()  # the sender is done (here: it never took its response)
    while not assoc.taken_while_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    assoc._kill = True
    loop.join(5)
    assert assoc.taken_while_paused == [False]  # taken once unpaused, and only then
