"""``keys rewrap`` moves instance blobs to the current data key, crash-safely and resumably."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from imaging_helpers import sample_bytes
from sqlalchemy import select, update

from hdsvault.blobs import BlobInfo, BlobStore
from hdsvault.blobs.base import Payload
from hdsvault.db.schema import imaging_instances
from hdsvault.imaging import retrieve, sealing
from hdsvault.imaging.rewrap import count_old_blobs, rewrap_blobs
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller
from hdsvault.tenants.keys import count_on_old_versions, rewrap, rotate_keys

NAMES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm"]


@pytest.fixture(autouse=True, params=["inline", "backend"])
def blob_home(request: pytest.FixtureRequest, platform: Platform) -> str:
    """Each test twice: small blobs kept in the index database (the default for these
    samples) and every blob in the backend (files)."""
    if request.param == "backend":
        platform.settings.blobs.inline_max_bytes = 0
    return str(request.param)


class Crash(Exception):
    """Stands for the process dying at that point."""


class CrashingBlobs:
    """The real blob store, dying after the ``after``-th durable put or before a delete."""

    def __init__(self, inner: BlobStore, *, puts: int | None = None, deletes: bool = False):
        self.inner, self.puts, self.deletes = inner, puts, deletes
        self.name = inner.name

    def put(self, key: str, data: Payload) -> BlobInfo:
        info = self.inner.put(key, data)
        if self.puts is not None:
            self.puts -= 1
            if self.puts == 0:
                raise Crash(key)  # the new blob is durable, the row not switched yet
        return info

    def delete(self, key: str) -> None:
        if self.deletes:
            raise Crash(key)  # the row is switched, the old blob not deleted yet
        self.inner.delete(key)

    def open(self, key: str) -> Iterator[bytes]:
        return self.inner.open(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.iter_keys(prefix)

    def close(self) -> None:
        pass


def _rows(platform: Platform, tenant: str) -> list[tuple[str, str, int | None]]:
    it = imaging_instances.c
    with platform.engine.connect() as conn:
        return [
            (r.id, r.blob_key, r.blob_key_version)
            for r in conn.execute(
                select(it.id, it.blob_key, it.blob_key_version).where(it.tenant_id == tenant)
            )
        ]


def _assert_identical(imaging: ImagingStore, caller: Caller, stale: list[retrieve.InstanceRef]):
    """Every instance reads back byte for byte, even through refs located before the rewrap."""
    keys = retrieve.data_keys(imaging, caller.tenant)
    by_sop = {}
    for name in NAMES:
        data = sample_bytes(name)
        by_sop[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = (
            data
        )
    for ref in stale:
        data = retrieve.read(imaging, caller.tenant, ref, keys)
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        assert data == by_sop.pop(sop)
        assert b"".join(retrieve.stream(imaging, caller.tenant, ref, keys)) == data
    assert by_sop == {}


def test_rewrap_moves_blobs_resumes_after_crashes(
    platform: Platform, tenant: str, imaging: ImagingStore, caller: Caller
) -> None:
    imaging.chunk = 16 * 1024  # several AEAD segments per blob
    files = [sample_bytes(n) for n in NAMES]
    assert {o.status for o in imaging.store_many(caller, files, source="test")} == {"stored"}
    uids = [
        str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).StudyInstanceUID) for f in files
    ]
    stale = retrieve.locate(imaging, caller, uids)
    legacy = _rows(platform, tenant)[0][0]
    with platform.engine.begin() as conn:  # stored before blob key versions were recorded
        conn.execute(
            update(imaging_instances)
            .where(imaging_instances.c.id == legacy)
            .values(blob_key_version=None)
        )
    assert rotate_keys(platform, tenant, by="test") == 2
    with platform.engine.connect() as conn:
        assert count_old_blobs(conn, tenant, 2) == len(NAMES)
    before = count_on_old_versions(platform, tenant)
    old_keys = {k for _, k, _ in _rows(platform, tenant)}

    # Crash after the second new blob is durable, before its row is switched.
    with pytest.raises(Crash):
        rewrap_blobs(platform, tenant, CrashingBlobs(imaging.blobs, puts=2))
    with platform.engine.connect() as conn:
        assert count_old_blobs(conn, tenant, 2) == len(NAMES) - 1
    _assert_identical(imaging, caller, stale)

    # Crash after a row is switched, before the old blob is deleted: an orphan, nothing lost.
    with pytest.raises(Crash):
        rewrap_blobs(platform, tenant, CrashingBlobs(imaging.blobs, deletes=True))
    _assert_identical(imaging, caller, stale)

    report = rewrap(platform, tenant, by="test")
    assert report.remaining_on_old_versions == 0
    assert count_on_old_versions(platform, tenant) == 0
    assert report.blobs_rewrapped == len(NAMES) - 2
    assert report.rewrapped == before - 2  # the crashed runs had moved two blobs already
    rows = _rows(platform, tenant)
    assert {v for _, _, v in rows} == {2}
    for _, key, _ in rows:
        assert key not in old_keys
        assert sealing.key_version(imaging.blobs.open(key)) == 2
    left = set(imaging.blobs.iter_keys(f"{tenant}/")) & old_keys
    assert len(left) == 1  # the orphan of the second crash: nothing refers to it
    _assert_identical(imaging, caller, stale)
    with platform.engine.connect() as conn:
        assert count_old_blobs(conn, tenant, 2) == 0
