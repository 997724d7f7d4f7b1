"""The write path under failure: blobs written while the index is prepared, nothing half-written.

A blob that cannot be stored fails its own instance only (the batch is indexed again without
it); a transaction that fails leaves no blob behind; a committed row always names a blob.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from conftest import sample_bytes
from hdsvault.blobs import BlobError, BlobInfo, BlobStore, open_blob_store
from hdsvault.blobs.base import Payload
from hdsvault.db.schema import imaging_instances
from hdsvault.imaging import retrieve
from hdsvault.imaging.errors import ImagingError
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

NAMES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"]


class FlakyBlobs:
    """The real blob store, but puts of payloads of one size fail (like a full disk)."""

    def __init__(self, inner: BlobStore, fail_size: int) -> None:
        self.inner, self.fail_size = inner, fail_size
        self.name = inner.name

    def put(self, key: str, data: Payload) -> BlobInfo:
        if isinstance(data, bytes | bytearray) and len(data) == self.fail_size:
            raise BlobError(f"cannot write blob {key}: No space left on device")
        return self.inner.put(key, data)

    def open(self, key: str) -> Iterator[bytes]:
        return self.inner.open(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.iter_keys(prefix)

    def close(self) -> None:
        self.inner.close()


def _instances(platform: Platform) -> int:
    with platform.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(imaging_instances)).scalar_one())


def test_a_failed_blob_fails_only_its_instance(
    platform: Platform, tenant: str, caller: Caller
) -> None:
    files = [sample_bytes(n) for n in NAMES]
    inner = open_blob_store(platform.settings, platform.engine)
    store = ImagingStore(platform, blobs=FlakyBlobs(inner, len(files[1]) + 16 + 33))
    try:
        outcomes = store.store_many(caller, files, source="test")
        assert [o.status for o in outcomes] == ["stored", "failed", "stored"]
        assert outcomes[1].error is not None and "storage failed" in outcomes[1].error.message
        assert _instances(platform) == 2
        keys = retrieve.data_keys(store, tenant)
        with platform.engine.connect() as conn:
            refs = retrieve.find(
                conn, store, tenant, [o.study_uid for o in outcomes if o.study_uid]
            )
        assert sorted(retrieve.read(store, tenant, r, keys) for r in refs) == sorted(
            [files[0], files[2]]
        )
        assert len(list(inner.iter_keys(f"{tenant}/"))) == 2  # no blob without its row
    finally:
        store.close()


def test_a_failed_transaction_leaves_no_blob(
    platform: Platform, tenant: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImagingStore(platform)
    try:

        def broken(*_args: object, **_kw: object) -> None:
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))

        monkeypatch.setattr("hdsvault.imaging.journaling.record", broken)
        with pytest.raises(ImagingError, match="database unavailable"):
            store.store_many(caller, [sample_bytes(n) for n in NAMES], source="test")
        assert _instances(platform) == 0
        assert list(store.blobs.iter_keys(f"{tenant}/")) == []
    finally:
        store.close()
