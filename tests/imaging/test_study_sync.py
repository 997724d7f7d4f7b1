"""Two syncs of the same study never leave its ImagingStudy behind the index.

Two associations adding to one study each sync it when they close. Here the first sync is
held after reading the study (one instance), a second instance is stored and a second sync
starts: the first must not write its older resource and revision over the second's. With
syncs of a study serialised, the second waits, then reads both instances.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from imaging_helpers import sample_bytes
from pydicom import dcmread
from sqlalchemy import select

from hdsvault.db.schema import imaging_studies
from hdsvault.imaging import fhir
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

pytestmark = pytest.mark.timeout(60)


def _instance(n: int) -> bytes:
    ds = dcmread(io.BytesIO(sample_bytes("CT_small.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.7{n}"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _hold_first_build(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The first ImagingStudy built from now on waits, after its sync has read the index:
    ``entered`` is set then; it goes on once ``release`` is."""
    entered, release = threading.Event(), threading.Event()
    build = fhir.imaging_study

    def held_once(*args: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(20)
        return build(*args)

    monkeypatch.setattr(fhir, "imaging_study", held_once)
    return entered, release


def _revisions(platform: Platform, study_id: str) -> tuple[int, int]:
    """The study's index revision and the revision its ImagingStudy shows."""
    st = imaging_studies.c
    with platform.engine.connect() as conn:
        revision, synced = conn.execute(
            select(st.revision, st.fhir_revision).where(st.id == study_id)
        ).one()
    return int(revision), int(synced)


class Written(fhir.RecordsFhirWriter):
    """The records writer, remembering the last ImagingStudy written."""

    last: Any = None

    def update(
        self,
        caller: Caller,
        resource_type: str,
        resource_id: str,
        resource: Any,
        *,
        if_match: int | None = None,
    ) -> Any:
        self.last = resource
        return super().update(caller, resource_type, resource_id, resource, if_match=if_match)


def test_a_held_sync_does_not_overwrite_a_later_one(
    platform: Platform, tenant: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Written(platform)
    store = ImagingStore(platform, fhir=writer)
    try:
        first = store.store(caller, _instance(1), source="test")
        assert first.status == "stored" and first.study_id
        sid = first.study_id

        entered, release = _hold_first_build(monkeypatch)
        t1 = threading.Thread(target=fhir.sync_studies, args=(store, caller, [sid]))
        t1.start()
        assert entered.wait(20)  # the first sync has read the study: one instance
        assert store.store(caller, _instance(2), source="test").study_id == sid
        t2 = threading.Thread(target=fhir.sync_studies, args=(store, caller, [sid]))
        t2.start()
        t2.join(0.5)  # serialised: it waits for the first (without the lock it would finish)
        release.set()
        t1.join(20)
        t2.join(20)
        assert not t1.is_alive() and not t2.is_alive()

        revision, synced = _revisions(platform, sid)
        assert synced == revision
        assert writer.last["numberOfInstances"] == 2
    finally:
        store.close()


@pytest.mark.parametrize("existing", [False, True], ids=["first version", "later version"])
def test_a_sync_overtaken_by_another_process_does_not_write_its_older_view(
    platform: Platform,
    tenant: str,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
    existing: bool,
) -> None:
    """Two processes (HTTP workers' STOW-RS, the DIMSE listener) share no lock: here the
    second sync runs while the first is held, as another process's would (no per-process
    lock between them). The first, having read the older index, must not stay last: its
    write requires the version it saw and fails (later version), or, creating the first
    version, finds it was not the first and writes again from the newest index."""
    writer = Written(platform)
    store = ImagingStore(platform, fhir=writer)
    try:
        first = store.store(caller, _instance(1), source="test")
        sid = first.study_id
        assert sid
        if existing:
            assert fhir.sync_study(store, caller, sid)  # version 1, one instance
            assert store.store(caller, _instance(3), source="test").study_id == sid
        entered, release = _hold_first_build(monkeypatch)
        older = threading.Thread(target=fhir.sync_study, args=(store, caller, sid))
        older.start()
        assert entered.wait(20)  # it has read the index: one instance
        assert store.store(caller, _instance(2), source="test").study_id == sid
        assert fhir._sync_study(store, caller, sid)  # "another process": two instances
        release.set()
        older.join(20)
        assert not older.is_alive()

        revision, synced = _revisions(platform, sid)
        assert synced == revision
        current = fhir.RecordsFhirWriter(platform)
        from hdsvault.records import reads

        shown = reads.read(current.records, caller, "ImagingStudy", sid).resource
        assert shown is not None and shown["numberOfInstances"] == (3 if existing else 2)
    finally:
        store.close()


def test_the_listener_loads_the_sync_models_as_it_starts(platform: Platform, tenant: str) -> None:
    """The first study's sync must not pay the import of the FHIR models it validates (~60 ms
    on the bench machine, competing with the associations still running): the DIMSE listener
    loads them when it starts."""
    from hdsvault.config import DicomPeerSettings
    from hdsvault.dicom.server import DimseServer
    from hdsvault.records import validation

    validation._model_class.cache_clear()
    platform.settings.dicom.port, platform.settings.dicom.workers = 0, 1
    platform.settings.dicom.peers = [DicomPeerSettings(ae_title="DCMTK", tenant=tenant)]
    store = ImagingStore(platform)
    server = DimseServer(store)
    try:
        server.start()
        loaded = validation._model_class.cache_info().currsize
        misses = validation._model_class.cache_info().misses
        validation._model_class("ImagingStudy")
        validation._model_class("Patient")
        assert loaded >= 2 and validation._model_class.cache_info().misses == misses
    finally:
        server.stop()
        store.close()


def test_the_listener_creates_its_peers_blob_directories_as_it_starts(
    platform: Platform, tenant: str
) -> None:
    """A fresh establishment's blob fan-out (256 directories, each parent flushed) is made
    when the listener starts, not by the first C-STORE while other associations wait."""
    from hdsvault.blobs.factory import blobs_dir
    from hdsvault.config import DicomPeerSettings
    from hdsvault.dicom.server import DimseServer

    if platform.settings.blobs.backend != "filesystem":
        pytest.skip("the fan-out is the filesystem backend's")
    platform.settings.dicom.port, platform.settings.dicom.workers = 0, 1
    platform.settings.dicom.peers = [DicomPeerSettings(ae_title="DCMTK", tenant=tenant)]
    store = ImagingStore(platform)
    root = blobs_dir(platform.settings) / tenant
    server = DimseServer(store)
    try:
        assert not root.exists() or len(list(root.iterdir())) < 256
        server.start()
        assert len([d for d in root.iterdir() if d.is_dir()]) == 256
    finally:
        server.stop()
        store.close()
