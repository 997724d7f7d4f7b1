"""The association loops poll fast while the peer is busy and back off when it is idle."""

from __future__ import annotations

import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from conftest import Dimse
from hdsvault.dicom import reactor

pytestmark = pytest.mark.timeout(60)


def test_the_locked_pynetdicom_is_the_one_reimplemented() -> None:
    # A pynetdicom upgrade that changes its reactor fails here, not silently in production.
    assert reactor.original_source_digest() == reactor.PYNETDICOM_REACTOR_SHA256
    assert reactor.install()
    assert Association._run_reactor is reactor._run_reactor


def test_a_changed_pynetdicom_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Association, "_run_reactor", reactor._original)
    monkeypatch.setattr(reactor, "PYNETDICOM_REACTOR_SHA256", "0" * 64)
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


def _settles(assoc: Association, delay: float) -> bool:
    """The loop updates the delay right after it has answered: allow it a moment."""
    deadline = time.monotonic() + 1
    while assoc.dul._run_loop_delay != delay and time.monotonic() < deadline:
        time.sleep(0.001)
    return bool(assoc.dul._run_loop_delay == delay)


def test_busy_then_idle_then_busy(dimse: Dimse) -> None:
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(Verification)
    assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    try:
        served = _server_association(dimse)
        assert assoc.send_c_echo().Status == 0x0000
        assert _settles(served, reactor.BUSY_DELAY)
        time.sleep(reactor.IDLE_AFTER * 6)  # nothing on the wire: both loops back off
        assert served.dul._run_loop_delay == reactor.IDLE_DELAY
        assert assoc.send_c_echo().Status == 0x0000  # still answers, and speeds up again
        assert _settles(served, reactor.BUSY_DELAY)
    finally:
        assoc.release()
