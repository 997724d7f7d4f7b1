"""The blob stores: filesystem (atomic, fsynced), database and S3 (against a moto server)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hdsvault.blobs import BlobError, BlobNotFound, BlobStore
from hdsvault.blobs.database import DatabaseBlobStore
from hdsvault.blobs.filesystem import FilesystemBlobStore
from hdsvault.blobs.s3 import S3BlobStore
from hdsvault.platform import Platform

from support.ports import free_port


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["filesystem", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemBlobStore(tmp_path / "blobs")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        store = S3BlobStore(
            f"b-{os.urandom(4).hex()}",
            endpoint_url=endpoint,
            access_key="testing",
            secret_key="testing",
            create_bucket=True,
            prefix="hdsvault/",
        )
        yield store
        store.close()


def test_put_get_stream_delete(blobs: BlobStore) -> None:
    exercise(blobs)


def test_database_backend(platform: Platform) -> None:
    """SQLite and PostgreSQL (the ``platform`` fixture runs on both)."""
    exercise(DatabaseBlobStore(platform.engine))


def exercise(blobs: BlobStore) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    info = blobs.put("750712184/ab/one", big)
    assert info.size == len(big) and info.sha256 == hashlib.sha256(big).digest()
    assert blobs.get("750712184/ab/one") == big
    assert b"".join(blobs.open("750712184/ab/one")) == big
    chunks = [b"a" * 1000, b"b" * 2000]
    info2 = blobs.put("750712184/ab/two", iter(chunks))
    assert info2.sha256 == hashlib.sha256(b"".join(chunks)).digest()
    assert sorted(blobs.iter_keys("750712184/")) == ["750712184/ab/one", "750712184/ab/two"]
    blobs.put("750712184/ab/one", b"replaced")
    assert blobs.get("750712184/ab/one") == b"replaced"
    blobs.delete("750712184/ab/one")
    blobs.delete("750712184/ab/one")  # idempotent
    assert not blobs.exists("750712184/ab/one") and blobs.exists("750712184/ab/two")
    with pytest.raises(BlobNotFound):
        blobs.get("750712184/ab/one")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "", "a/../b"])
def test_unsafe_keys_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(BlobError):
        FilesystemBlobStore(tmp_path).put(key, b"x")


def test_filesystem_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("t/x", b"data")
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["x"]
    assert oct((tmp_path / "t" / "x").stat().st_mode & 0o777) == "0o600"


def test_prepare_creates_private_directories_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    (tmp_path / "blobs" / "t" / "00").mkdir(parents=True)
    store.prepare([f"t/{h:02x}" for h in range(4)])
    made = sorted(p.name for p in (tmp_path / "blobs" / "t").iterdir())
    assert made == ["00", "01", "02", "03"]
    assert oct((tmp_path / "blobs" / "t" / "03").stat().st_mode & 0o777) == "0o700"
    # Prepared directories cost nothing more on the write path: no mkdir, no directory flush
    # for them (the file's own directory flush stays, as POSIX asks).
    flushed: list[Path] = []
    monkeypatch.setattr("hdsvault.blobs.filesystem._fsync_dir", flushed.append)
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: pytest.fail("mkdir on the write path"))
    store.put("t/02/x", b"data")
    assert flushed == [tmp_path / "blobs" / "t" / "02"]
    assert store.get("t/02/x") == b"data"
    with pytest.raises(BlobError):
        store.prepare(["../outside"])


def test_every_new_directory_level_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put under a fresh tenant creates two directories: both new entries must be durable
    (the root's entry for the tenant, the tenant's for the fan-out), then the file's."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    flushed: list[Path] = []
    monkeypatch.setattr("hdsvault.blobs.filesystem._fsync_dir", flushed.append)
    store.put("t/ab/x", b"data")
    root = tmp_path / "blobs"
    assert sorted(flushed) == sorted([root, root / "t", root / "t" / "ab"])


def test_filesystem_get_reads_the_whole_file(tmp_path: Path) -> None:
    """``get`` reads a blob with one read of its size: empty, small and multi-MiB blobs come
    back whole, a missing one is BlobNotFound, an unreadable one a BlobError."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    for key, data in (
        ("t/a/empty", b""),
        ("t/a/small", b"x" * 39),
        ("t/a/big", os.urandom(5 << 20)),
    ):
        store.put(key, data)
        assert store.get(key) == data
    with pytest.raises(BlobNotFound):
        store.get("t/a/missing")
    with pytest.raises(BlobError):
        store.get("t/a")  # a directory, not a blob
