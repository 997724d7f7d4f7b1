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
def test_the_dul_clock_wakes_on_its_events(wake_by: str) -> None:
    peer, transport = socket.socketpair()
    waker, wake = socket.socketpair()
    queue = reactor._WakingQueue(wake)
    dul = _FakeDul(transport, waker, seconds=30)  # far longer than the test may take
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
