"""DIMSE served by worker processes (``[dicom] workers = 2``): the listening process accepts and
hands each connection to the least busy worker, restarts a worker that dies, stops them all
when it stops (:mod:`hdsvault.dicom.handoff`, :mod:`hdsvault.dicom.worker`). Real processes,
real sockets; dcmtk and pynetdicom as peers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from imaging_helpers import Dimse, dcmtk, sample
from pydantic import SecretStr
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from hdsvault.config import Settings
from hdsvault.db.schema import imaging_instances, journal_entries
from hdsvault.dicom import handoff
from hdsvault.dicom.handoff import ConnectionHandOff, WorkerStartError
from hdsvault.imaging import index as ix
from hdsvault.platform import Platform

from support.ports import free_port

pytestmark = pytest.mark.timeout(180)
through_workers = pytest.mark.parametrize("workers", [2])


def _handoff(server: Any) -> ConnectionHandOff:
    found = server._handoff
    assert found is not None, "the listener did not start worker processes"
    return found


def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _associate(dimse: Dimse, *contexts: str) -> object:
    ae = AE(ae_title="DCMTK")
    for cx in contexts or (Verification,):
        ae.add_requested_context(cx)
    assoc = ae.associate(dimse.host, dimse.port, ae_title=dimse.ae_title)
    assert assoc.is_established
    return assoc


def _ct(i: int, study: str, series: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = i
    return ds


@through_workers
def test_connections_go_to_the_least_busy_worker(dimse: Dimse) -> None:
    hand = _handoff(dimse.server)
    pids = {w.proc.pid for w in hand.workers if w.proc is not None}
    assert len(pids) == 2 and os.getpid() not in pids
    first = _associate(dimse)
    _until(lambda: sorted(w.open for w in hand.workers) == [0, 1])
    second = _associate(dimse)
    _until(lambda: [w.open for w in hand.workers] == [1, 1])  # not both on one worker
    for assoc in (first, second):
        assert assoc.send_c_echo().Status == 0x0000  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    _until(lambda: hand.open_associations() == 0)  # each end reported by its worker


@through_workers
def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
    dimse: Dimse, platform: Platform, tenant: str
) -> None:
    """SIGKILL the worker serving an association mid-stream: every instance the peer was told
    is stored is stored and journaled; the rest were never acknowledged (the peer resends
    them). The listener starts the worker again and serves the next association."""
    hand = _handoff(dimse.server)
    assoc = _associate(dimse, CTImageStorage)
    _until(lambda: any(w.open for w in hand.workers))
    victim = next(w for w in hand.workers if w.open)
    old_pid = victim.proc.pid  # type: ignore[union-attr]
    study, series = generate_uid(), generate_uid()
    acknowledged: list[str] = []
    for i in range(200):
        ds = _ct(i, study, series)
        if i == 20:
            os.kill(old_pid, signal.SIGKILL)
        if not assoc.is_established:  # type: ignore[attr-defined]
            break
        status = assoc.send_c_store(ds)  # type: ignore[attr-defined]
        if not status or status.Status != 0x0000:  # the connection closed under it
            break
        acknowledged.append(str(ds.SOPInstanceUID))
    assert 20 <= len(acknowledged) < 200
    it, je = imaging_instances.c, journal_entries.c
    with platform.engine.connect() as conn:
        index = platform.keyring.blind_index(conn, tenant)
        rows = conn.execute(select(it.uid_token, it.id).where(it.tenant_id == tenant))
        stored = {bytes(token): iid for token, iid in rows}
        journaled = " ".join(
            conn.execute(select(je.objects).where(je.event_type == "dicom.store")).scalars()
        )
    for uid in acknowledged:
        token = ix.uid_token(index, "instance", uid)
        assert token in stored
        assert f"DicomInstance/{stored[token]}" in journaled  # its trace, with it
    _until(lambda: victim.ready and victim.proc is not None and victim.proc.pid != old_pid)
    out = subprocess.run(
        [dcmtk("storescu"), "-aet", "DCMTK", "-aec", dimse.ae_title, dimse.host,
         str(dimse.port), str(sample("MR_small.dcm"))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def _started(platform: Platform, settings: Settings, tenant: str) -> tuple[Any, Any]:
    """A listener with two worker processes, started here (not by the ``dimse`` fixture)."""
    from hdsvault.config import DicomPeerSettings
    from hdsvault.dicom.server import DimseServer
    from hdsvault.imaging.store import ImagingStore

    settings.dicom.port, settings.dicom.workers = free_port(), 2
    settings.dicom.peers = [DicomPeerSettings(ae_title="DCMTK", tenant=tenant)]
    store = ImagingStore(platform)
    return DimseServer(store), store


def test_stop_ends_every_worker_and_closes_the_port(
    platform: Platform, settings: Settings, tenant: str
) -> None:
    server, store = _started(platform, settings, tenant)
    try:
        host, port = server.start()
        procs = [w.proc for w in _handoff(server).workers]
        assert all(p is not None and p.poll() is None for p in procs)
    finally:
        server.stop()
        store.close()
    assert all(p is not None and p.poll() is not None for p in procs)
    with socket.socket() as s:
        assert s.connect_ex((host, port)) != 0


def test_workers_get_the_settings_through_the_socket_only(
    platform: Platform, settings: Settings, tenant: str
) -> None:
    """Settings may hold secrets: a worker gets them whole, and its command line and
    environment carry none of them."""
    secret = "s3cr3t-" + generate_uid()[-12:]
    settings.blobs.s3_secret_key = SecretStr(secret)
    server, store = _started(platform, settings, tenant)
    try:
        server.start()
        for worker in _handoff(server).workers:
            assert worker.proc is not None
            pid = worker.proc.pid
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:3] == [b"-m", b"hdsvault.dicom.worker"]
            assert len([a for a in argv if a]) == 4  # python -m module FD
            env = Path(f"/proc/{pid}/environ").read_bytes()
            assert secret.encode() not in env + b"".join(argv)
    finally:
        server.stop()
        store.close()
    assert Settings(**settings.with_secrets()) == settings  # what a worker rebuilds


def test_a_worker_that_cannot_start_fails_the_start(
    platform: Platform, settings: Settings, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that exits before it is ready fails the listener's start, loudly, and leaves
    nothing listening (not a listener that accepts connections nobody will serve)."""
    server, store = _started(platform, settings, tenant)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    try:
        with pytest.raises(WorkerStartError):
            server.start()
    finally:
        store.close()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", settings.dicom.port)) != 0


@through_workers
def test_garbage_on_the_control_socket_is_ignored(dimse: Dimse) -> None:
    """A connection message without its descriptor, or an unknown one, changes nothing."""
    hand = _handoff(dimse.server)
    for worker in hand.workers:
        assert worker.control is not None
        worker.control.send(handoff.CONNECTION)
        worker.control.send(b"\xffgarbage")
    hand.reported(hand.workers[0], b"\xffgarbage")
    hand.reported(hand.workers[0], handoff.ENDED + b"{not json")
    assert all(w.proc is not None and w.proc.poll() is None for w in hand.workers)
    for _ in range(2):
        assoc = _associate(dimse)
        assert assoc.send_c_echo().Status == 0x0000  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
