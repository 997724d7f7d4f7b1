"""ImagingStudy syncs after associations (hdsvault.dicom.study_syncs): each study once, when
no association is open (at the latest after MAX_DELAY), and what is left before stopping."""

from __future__ import annotations

import threading
import time

import pytest

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.dicom import study_syncs
from hdsvault.dicom.study_syncs import StudySyncs
from hdsvault.records.model import Caller

TENANT = "750712184"
CALLER = Caller(Principal("dicom:MODALITY", TENANT, Role.SERVICE), TENANT)


class _Listener:
    """Open associations, and the syncs run (tenant, study), in order."""

    def __init__(self) -> None:
        self.open = 0
        self.synced: list[tuple[str, str]] = []
        self.done = threading.Event()

    def sync(self, caller: Caller, study_id: str) -> None:
        if study_id == "broken":
            raise RuntimeError("database unavailable")
        self.synced.append((caller.tenant, study_id))
        self.done.set()


def _settled(listener: _Listener, seconds: float = 5) -> None:
    assert listener.done.wait(seconds)
    time.sleep(0.1)  # any other sync of the same pass


def test_studies_wait_for_the_last_association_and_are_synced_once() -> None:
    listener = _Listener()
    syncs = StudySyncs(listener.sync, lambda: listener.open)
    try:
        listener.open = 2
        syncs.add(CALLER, {"s1", "s2"})  # a first association ended, two still open
        listener.open = 1
        syncs.add(CALLER, {"s2", "s3"})
        time.sleep(0.3)
        assert listener.synced == []  # the listener is not quiet yet
        listener.open = 0
        syncs.add(CALLER, {"s1"})  # the last one ended
        _settled(listener)
        assert sorted(listener.synced) == [(TENANT, "s1"), (TENANT, "s2"), (TENANT, "s3")]
    finally:
        syncs.close()


def test_a_listener_never_quiet_still_gets_its_studies_synced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(study_syncs, "MAX_DELAY", 0.3)
    listener = _Listener()
    listener.open = 3  # never quiet
    syncs = StudySyncs(listener.sync, lambda: listener.open)
    try:
        started = time.monotonic()
        syncs.add(CALLER, {"s1"})
        _settled(listener)
        assert listener.synced == [(TENANT, "s1")]
        assert 0.25 < time.monotonic() - started < 3
    finally:
        syncs.close()


def test_a_failed_sync_is_left_and_the_others_run() -> None:
    listener = _Listener()
    syncs = StudySyncs(listener.sync, lambda: listener.open)
    try:
        syncs.add(CALLER, ["broken", "s1"])  # "broken" is left to sync_pending
        _settled(listener)
        assert listener.synced == [(TENANT, "s1")]
    finally:
        syncs.close()


def test_what_is_kept_is_synced_before_the_listener_stops() -> None:
    listener = _Listener()
    listener.open = 1  # an association still open: nothing synced yet
    syncs = StudySyncs(listener.sync, lambda: listener.open)
    syncs.add(CALLER, {"s1"})
    time.sleep(0.1)
    assert listener.synced == []
    syncs.close()
    assert listener.synced == [(TENANT, "s1")]
