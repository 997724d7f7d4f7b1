"""The process caches of sealed blobs (blobs/cache.py), inline and of the backend: what they
serve, what they keep, and what they do not see (a blob altered in the database or on disk
after it was cached: the retrieval serves the authentic bytes first read, and ``verify`` names
the alteration); and that what they hold is the sealed bytes as stored, never plaintext."""

from __future__ import annotations

import pytest
from imaging_helpers import alter_inline_blob, opened, study_files
from sqlalchemy import delete

from hdsvault.blobs import inline
from hdsvault.blobs.cache import SealedBlobCache
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import blob_chunks
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.store import ImagingStore
from hdsvault.integrity.blob_hashes import check_blobs
from hdsvault.platform import Platform
from hdsvault.records.model import Caller


def _blobs(platform: Platform, tenant: str, sizes: list[int]) -> dict[str, bytes]:
    blobs = {inline.inline_key(tenant, f"b{i}"): bytes([i]) * n for i, n in enumerate(sizes)}
    with platform.engine.begin() as conn:
        inline.put_in(conn, list(blobs.items()))
    return blobs


def _fetch(platform: Platform, cache: SealedBlobCache, keys: list[str]) -> dict[str, bytes]:
    with read_connection(platform.engine) as conn:
        return cache.fetch(conn, keys)


def test_served_from_memory_once_read_and_bounded(platform: Platform, tenant: str) -> None:
    blobs = _blobs(platform, tenant, [1000, 1000, 1000, 5000])
    keys = list(blobs)
    cache = SealedBlobCache(max_bytes=2500)
    assert _fetch(platform, cache, keys[:2]) == {k: blobs[k] for k in keys[:2]}
    with platform.engine.begin() as conn:  # the rows go: what is held is served
        conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_key.in_(keys[:2])))
    assert _fetch(platform, cache, keys[:2]) == {k: blobs[k] for k in keys[:2]}
    cache.discard([keys[0]])
    assert _fetch(platform, cache, keys[:2]) == {keys[1]: blobs[keys[1]]}  # gone from both
    # Least recently used out first: b1 was just used, b2 comes in, the bound is 2,500 bytes.
    assert _fetch(platform, cache, [keys[2]]) == {keys[2]: blobs[keys[2]]}
    assert len(cache) == 2
    assert _fetch(platform, cache, [keys[3]]) == {keys[3]: blobs[keys[3]]}  # over the bound
    assert len(cache) == 2  # read, not kept
    off = SealedBlobCache(max_bytes=0)
    assert _fetch(platform, off, [keys[2]]) == {keys[2]: blobs[keys[2]]}
    assert len(off) == 0


def _alter_file(platform: Platform, key: str, offset: int) -> None:
    """Flip one bit of a blob file, on disk, behind hdsvault's back."""
    from hdsvault.blobs.factory import blobs_dir

    path = blobs_dir(platform.settings) / key
    sealed = bytearray(path.read_bytes())
    sealed[offset] ^= 0x01
    path.write_bytes(bytes(sealed))


@pytest.mark.parametrize("cache_bytes", [64 << 20, 0], ids=["cached", "uncached"])
@pytest.mark.parametrize("where", ["inline", "file"])
def test_a_blob_altered_after_it_was_cached(
    platform: Platform, caller: Caller, cache_bytes: int, where: str
) -> None:
    """Cached: the next retrieval serves the authentic bytes first read (never the altered
    ones) and ``verify`` names the altered blob. Without the cache: the retrieval fails. The
    same for an inline blob (altered in the database) and a file (altered on disk)."""
    blobs = platform.settings.blobs
    if where == "inline":
        blobs.inline_cache_bytes = cache_bytes
        alter = alter_inline_blob
    else:
        blobs.inline_max_bytes = 0  # every instance a file of the backend
        blobs.file_cache_bytes = cache_bytes
        alter = _alter_file
    store = ImagingStore(platform)
    try:
        study, files = study_files(3)
        store.store_many(caller, files, source="test")
        first, first_files = opened(store, caller, [study])
        assert first_files is not None and sorted(first_files) == sorted(files)
        alter(platform, first.refs[1].blob_key, 100)
        if cache_bytes:
            assert opened(store, caller, [study])[1] == first_files
        else:
            with pytest.raises(ImagingError) as failed:
                opened(store, caller, [study])
            assert failed.value.kind is Kind.UNAVAILABLE
        report = check_blobs(platform)
        assert [f.problem for f in report.findings] == ["content differs from its SHA-256"]
    finally:
        store.close()


def test_backend_blobs_are_read_once_then_served_from_memory(
    platform: Platform, tenant: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.settings.blobs.inline_max_bytes = 0  # every instance a file of the backend
    platform.settings.blobs.file_cache_bytes = 1 << 20
    store = ImagingStore(platform)
    reads: list[str] = []
    get = store.blobs.get

    def counted(key: str) -> bytes:
        reads.append(key)
        return get(key)

    monkeypatch.setattr(store.blobs, "get", counted)
    try:
        study, files = study_files(3)
        store.store_many(caller, files, source="test")
        for _ in range(3):
            found, opened_files = opened(store, caller, [study])
            assert opened_files is not None and sorted(opened_files) == sorted(files)
        assert sorted(reads) == sorted(r.blob_key for r in found.refs)  # each read once
        store.file_cache.discard([found.refs[0].blob_key])
        opened(store, caller, [study])
        assert reads.count(found.refs[0].blob_key) == 2
    finally:
        store.close()


@pytest.mark.parametrize("where", ["inline", "file"])
def test_the_caches_hold_ciphertext_only(platform: Platform, caller: Caller, where: str) -> None:
    """What a retrieval leaves in memory is each blob exactly as stored (sealed): no file
    header, no pixel data, no patient name (encryption is not undone by the caches)."""
    if where == "file":
        platform.settings.blobs.inline_max_bytes = 0  # every instance a file of the backend
    store = ImagingStore(platform)
    cache = store.inline_cache if where == "inline" else store.file_cache
    try:
        study, files = study_files(3)
        store.store_many(caller, files, source="test")
        found, _files = opened(store, caller, [study])
        assert len(cache) == len(found.refs)

        def not_held(key: str) -> bytes:
            raise AssertionError(f"{key} was not cached by the retrieval")

        for ref in found.refs:
            held = cache.get(ref.blob_key, not_held)
            assert held == store.blobs.get(ref.blob_key)  # the sealed bytes, as stored
            assert b"DICM" not in held and b"CompressedSamples" not in held
            assert not any(f[200:264] in held or f[-64:] in held for f in files)
    finally:
        store.close()
