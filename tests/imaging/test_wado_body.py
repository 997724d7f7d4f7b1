"""WADO-RS bodies: the multipart framing byte for byte, the streamed path (studies over the
in-memory limit) identical to the whole-body path, and the producer that reads a streamed
body ahead of the sender (order, errors, early stop, memory bound)."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from imaging_helpers import (
    ACCEPT,
    TENANT,
    alter_inline_blob,
    assert_withheld,
    identity_of,
    radiologist_auth,
    rows_in,
    stow_study,
    study_files,
)
from prometheus_client import REGISTRY
from sqlalchemy import select

from hdsvault.api import dicomweb
from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan
from hdsvault.blobs import inline
from hdsvault.crypto.errors import DecryptionError
from hdsvault.db.schema import journal_entries
from hdsvault.imaging import multipart, retrieve, sealing
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.store import ImagingStore
from hdsvault.journal import group_commit
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

from support.ports import free_port


def test_frame_is_byte_exact() -> None:
    items = [("application/dicom; transfer-syntax=1.2.3", [b"AB", b"", b"C"]), ("a/b", [b""])]
    body = b"".join(multipart.frame(items, "XYZ"))
    assert body == (
        b"--XYZ\r\nContent-Type: application/dicom; transfer-syntax=1.2.3\r\n\r\nABC\r\n"
        b"--XYZ\r\nContent-Type: a/b\r\n\r\n\r\n"
        b"--XYZ--\r\n"
    )
    assert multipart.framed_length([(items[0][0], 3), (items[1][0], 0)], "XYZ") == len(body)
    parts = multipart.parse(body, "XYZ")
    assert [p.body for p in parts] == [b"ABC", b""]


def test_frame_into_leaves_each_part_its_place() -> None:
    """Filled in, the body of ``frame_into`` is what ``frame`` yields, byte for byte."""
    items = [("application/dicom; transfer-syntax=1.2.3", b"ABC"), ("a/b", b""), ("c/d", b"xy")]
    body, slots = multipart.frame_into([(t, len(b)) for t, b in items], "XYZ")
    assert [slot.nbytes for slot in slots] == [3, 0, 2]
    for slot, (_t, data) in zip(slots, items, strict=True):
        slot[:] = data
    assert bytes(body) == b"".join(multipart.frame(((t, [b]) for t, b in items), "XYZ"))
    empty, none = multipart.frame_into([], "XYZ")
    assert bytes(empty) == b"--XYZ--\r\n" and none == []


def test_open_blob_into_refuses_tampering_and_leaves_no_plaintext(
    platform: Platform, tenant: str
) -> None:
    """Decrypted in place, as a retrieval does: a segment that fails leaves the output zeroed
    (no unauthenticated or earlier plaintext), and a blob whose size is not the indexed one is
    refused before anything is written."""
    with platform.engine.connect() as conn:
        keys = platform.keyring.data_keys(conn, tenant)
    data = bytes(range(256)) * 300  # 76,800 bytes: three segments of 32 KiB
    blob = sealing.seal(keys, tenant, "i1", data, 32 * 1024)
    out = bytearray(len(data) + 5)
    assert sealing.open_blob_into(keys, tenant, "i1", bytes(blob), out) == len(data)
    assert out[: len(data)] == data and out[len(data) :] == bytes(5)
    tampered = bytearray(blob)
    tampered[-3] ^= 0x01  # last segment's tag: the first two open, then it fails
    out = bytearray(len(data))
    with pytest.raises(DecryptionError):
        sealing.open_blob_into(keys, tenant, "i1", bytes(tampered), out)
    assert out == bytes(len(data))
    with pytest.raises(ValueError):
        sealing.open_blob_into(keys, tenant, "i1", bytes(blob), bytearray(len(data) - 1))
    store = ImagingStore(platform)
    try:
        ref = retrieve.InstanceRef("i1", "s", "se", "1.2", "1.2.840.10008.1.2.1", 10, "k", None)
        shorter = memoryview(bytearray(10))
        with pytest.raises(ImagingError) as caught:
            retrieve.read_into(store, tenant, ref, keys, shorter, bytes(blob))
        assert caught.value.kind is Kind.UNAVAILABLE and shorter == bytes(10)
    finally:
        store.close()


def test_coalesce_joins_small_pieces_and_passes_large_ones() -> None:
    big = b"x" * 100
    pieces = [b"a", b"bc", big, b"d" * 60, b"e" * 50, b"f"]
    out = list(multipart.coalesce(iter(pieces), 100))
    assert b"".join(out) == b"".join(pieces)
    assert out[0] == b"abc" + big and out[1] == b"d" * 60 + b"e" * 50 and out[2] == b"f"
    alone = list(multipart.coalesce(iter([big]), 100))
    assert alone[0] is big  # a piece of the size or more is not copied


def _enlarged(data: bytes) -> bytes:
    """``data`` with its image tiled 2 x 2 (a file about four times larger)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    width = ds.Columns * 2  # 16-bit pixels
    rows = [ds.PixelData[r * width : (r + 1) * width] * 2 for r in range(ds.Rows)]
    ds.PixelData = b"".join(rows * 2)
    ds.Rows, ds.Columns = ds.Rows * 2, ds.Columns * 2
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("chunk", "large", "cached", "made"),
    [
        (None, (), True, "on the loop"),
        (None, (), False, "by a thread"),
        (16 * 1024, (), True, "on the loop"),  # small: inline, each read whole
        (64 * 1024, (1, 4, 6), True, "by a thread"),
        (64 * 1024, (0, 1, 3), True, "by a thread"),
    ],
    ids=[
        "one-segment",
        "one-segment-read",
        "segmented",
        "mixed-ending-segmented",
        "mixed-ending-whole",
    ],
)
def test_streamed_retrieval_is_the_whole_body(
    platform: Platform,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int | None,
    large: tuple[int, ...],
    cached: bool,
    made: str,
) -> None:
    """A study over the in-memory limit is streamed: the same body byte for byte as when sent
    whole (every instance, its pixel data as sent, in the same order), with the declared
    Content-Length, whether its instances are sealed in one AEAD segment (opened in place in
    runs), in several (opened segment by segment), or both, in any order, in pieces holding
    one instance or several, its pieces made on the event loop (every blob in the caches) or
    by a thread of their own (a blob to read); and nothing of it leaves when its read cannot
    be journaled."""
    app = create_app(platform)
    store = ImagingStore(platform)
    if chunk is not None:
        store.chunk = chunk  # instances sealed in several segments, opened segment by segment
    if large:
        store.inline_max = 0  # files: a large one is then sealed in several segments
    if not cached:
        store.inline_cache.max_bytes = store.file_cache.max_bytes = 0  # every blob read
    app.state.imaging_store = store
    chosen: list[str] = []
    for name, how in (("made_here", "on the loop"), ("prefetched", "by a thread")):
        monkeypatch.setattr(dicomweb, name, _noted(getattr(dicomweb, name), how, chosen))
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(7)
    files = [_enlarged(f) if i in large else f for i, f in enumerate(files)]
    base = f"/dicomweb/{TENANT}"
    pieces = ((dicomweb.IN_MEMORY, dicomweb.STREAM_PIECE), (0, 10_000), (0, 100_000))
    try:
        with TestClient(app) as client:
            stow_study(client, auth, files)
            bodies = []
            for limit, piece in pieces:
                monkeypatch.setattr(dicomweb, "IN_MEMORY", limit)
                monkeypatch.setattr(dicomweb, "STREAM_PIECE", piece)
                r = client.get(f"{base}/studies/{study}", headers={**auth, **ACCEPT})
                assert r.status_code == 200, r.text
                assert r.headers["content-length"] == str(len(r.content))
                _media, params = multipart.content_type_params(r.headers["content-type"])
                parts = multipart.parse(r.content, params["boundary"])
                assert sorted(identity_of(p.body) for p in parts) == sorted(map(identity_of, files))
                bodies.append(r.content.replace(params["boundary"].encode(), b"B"))
            assert bodies[1:] == bodies[:1] * 2  # byte for byte, but for the random boundary
            assert chosen == [made, made]  # the two streamed retrievals

            # Invariant 2 on the streamed path: no trace, no byte of the study.
            platform.durable_journal().close()
            r = client.get(f"{base}/studies/{study}", headers={**auth, **ACCEPT})
            assert_withheld(r, files)
    finally:
        store.close()


def test_wado_served_ahead_of_the_router_keeps_the_apps_layers(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WADO-RS is served ahead of FastAPI's router (HotRoutes) but still behind everything a
    route is behind: the perimeter's headers and limits, the request id, the application's
    rendering of a refused credential (with its challenge), the 500 of
    the server-error middleware for a fault; and STOW-RS on a retrieval's path still reaches
    its route."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(2)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    with TestClient(app, raise_server_exceptions=False) as client:
        boundary = multipart.new_boundary()
        stow = client.post(  # POST on the retrieval's own path: the router's STOW-RS route
            url,
            content=b"".join(
                multipart.frame((("application/dicom", [f]) for f in files), boundary)
            ),
            headers={
                **auth,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
        )
        assert stow.status_code == 200, stow.text
        ok = client.get(url, headers={**auth, **ACCEPT, "X-Request-ID": "wado-request-0001"})
        assert ok.status_code == 200 and ok.content.count(b"DICM") == 2
        assert ok.headers["x-request-id"] == "wado-request-0001"
        assert ok.headers["x-content-type-options"] == "nosniff"  # the perimeter's
        refused = client.get(url, headers={"Authorization": "Bearer nope", **ACCEPT})
        assert refused.status_code == 401
        assert refused.json() == {"detail": "invalid or expired token"}  # as on every route
        assert "invalid_token" in refused.headers["www-authenticate"]
        assert refused.headers["x-content-type-options"] == "nosniff"

        def fault(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a fault inside the retrieval")

        monkeypatch.setattr(retrieve, "open_body", fault)  # either path: the loop or a thread
        failed = client.get(url, headers={**auth, **ACCEPT})
        assert failed.status_code == 500 and b"DICM" not in failed.content
        # Not a retrieval's path: left to the router.
        assert client.get(f"/dicomweb/{TENANT}/nothing-here", headers=auth).status_code == 404


def test_wado_refusals(platform: Platform, tenant: str) -> None:
    """The WADO-RS endpoint (outside FastAPI's dependencies) refuses as the rest of the API:
    401 journaled without a valid token, 404 for an unknown establishment or study, 406 for
    a type it does not serve; and an instance whose blob was tampered with fails the whole
    retrieval (503) without a byte of any instance in the answer (once read from the
    database, not from the process cache of sealed blobs)."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    base = f"/dicomweb/{TENANT}"
    with TestClient(app) as client:
        stow_study(client, auth, files)
        url = f"{base}/studies/{study}"
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            r = client.get(url, headers={**headers, **ACCEPT})
            assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
            assert b"DICM" not in r.content
        with platform.engine.connect() as conn:
            denials = conn.execute(
                select(journal_entries.c.event_type).where(
                    journal_entries.c.event_type.like("auth.denied:%")
                )
            ).all()
        assert len(denials) == 2
        assert client.get(f"/dicomweb/abc/studies/{study}", headers=auth).status_code == 404
        assert client.get(f"/dicomweb/130786049/studies/{study}", headers=auth).status_code == 403
        assert client.get(f"{base}/studies/1.2.3.4", headers={**auth, **ACCEPT}).status_code == 404
        r = client.get(url, headers={**auth, "Accept": "application/json"})
        assert r.status_code == 406
        served = {"method": "GET", "route": "/dicomweb/{finess}/studies/{study}", "status": "200"}
        before = REGISTRY.get_sample_value("hdsvault_http_requests_total", served) or 0
        assert client.get(url, headers={**auth, **ACCEPT}).status_code == 200
        assert REGISTRY.get_sample_value("hdsvault_http_requests_total", served) == before + 1

        store: ImagingStore = app.state.imaging_store
        with platform.engine.connect() as conn:
            refs = retrieve.find(conn, store, tenant, [study])
        assert all(inline.is_inline(r.blob_key) for r in refs)  # 39 KB: in the index database
        alter_inline_blob(platform, refs[1].blob_key, 200)
        # The study was retrieved above: its sealed blobs are in the process cache, which
        # would serve the authentic bytes (test_inline_cache.py). Dropped, they are read again.
        store.inline_cache.discard([r.blob_key for r in refs])
        r = client.get(url, headers={**auth, **ACCEPT})
        assert_withheld(r, files)


def test_no_trace_no_byte_on_the_in_place_path(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 2 where a study is decrypted into its body (within IN_MEMORY): the entry is
    queued, the instances are opened while it is being flushed, and the flush fails. The
    answer is 503 and holds no byte of any instance."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    with TestClient(app) as client:
        stow_study(client, auth, files)
        assert client.get(url, headers={**auth, **ACCEPT}).status_code == 200  # cached, too

        def failed_flush(*_args: object) -> int:
            raise OSError("disk full")

        monkeypatch.setattr(group_commit, "append_many", failed_flush)
        r = client.get(url, headers={**auth, **ACCEPT})
        assert_withheld(r, files)


def _noted(
    make: Callable[..., AsyncIterator[bytes | memoryview]], how: str, chosen: list[str]
) -> Callable[..., AsyncIterator[bytes | memoryview]]:
    """``make``, noting ``how`` in ``chosen`` at each call."""

    def noted(*args: Any) -> AsyncIterator[bytes | memoryview]:
        chosen.append(how)
        return make(*args)

    return noted


def _source(n: int, produced: list[int], closed: threading.Event) -> Iterator[bytes]:
    try:
        for i in range(n):
            produced.append(i)
            yield bytes([i]) * 10
    finally:
        closed.set()


@pytest.mark.parametrize("ahead", [1, 2, 5])
def test_prefetched_keeps_order_and_its_memory_bound(ahead: int) -> None:
    produced: list[int] = []
    closed = threading.Event()

    async def consume() -> list[bytes]:
        got = []
        async for piece in dicomweb.prefetched(_source(40, produced, closed), ahead):
            got.append(piece)
            await asyncio.sleep(0.001)  # a slow sender: the producer must wait for it
            # consumed + waiting in the queue + one produced and waiting to be queued
            assert len(produced) <= len(got) + ahead + 1
        return got

    assert asyncio.run(consume()) == [bytes([i]) * 10 for i in range(40)]
    assert closed.is_set()


def test_prefetched_stops_the_producer_when_the_sender_stops() -> None:
    produced: list[int] = []
    closed = threading.Event()

    async def first_only() -> None:
        body = dicomweb.prefetched(_source(1000, produced, closed), 2)
        async for _piece in body:
            break
        await body.aclose()  # what the server does when the client goes away

    asyncio.run(first_only())
    assert closed.is_set()  # the source was closed (its files) before aclose returned
    assert len(produced) <= 4


@pytest.mark.parametrize("cached", [True, False], ids=["made-on-the-loop", "made-by-a-thread"])
def test_a_client_gone_mid_stream_stops_the_retrieval(
    platform: Platform, tenant: str, caller: Caller, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    """On a real listener (``hdsvault serve``'s): a client that leaves after the first bytes of
    a streamed study stops its decryption, whichever way its pieces are made, and the server
    goes on serving. Without a turn of the loop between pieces made on it, the whole study
    was decrypted for nobody."""
    store = ImagingStore(platform)
    if not cached:
        store.inline_cache.max_bytes = store.file_cache.max_bytes = 0
    study, files = study_files(200)
    files = [_enlarged(f) for f in files]  # 200 x ~150 KB: more than the sockets' buffers
    assert all(o.status == "stored" for o in store.store_many(caller, files, source="test"))
    app = create_app(platform)
    app.state.imaging_store = store
    monkeypatch.setattr(dicomweb, "IN_MEMORY", 0)
    opened = _counted_reads(monkeypatch)
    group = ListenerGroup(app, platform.settings, plan(platform.settings, "127.0.0.1", free_port()))
    group.start_in_thread()
    try:
        port = group.listeners[0].port
        auth = radiologist_auth(platform, tenant)
        path = f"/dicomweb/{TENANT}/studies/{study}"
        if cached:  # a first retrieval fills the caches
            whole = httpx.get(f"http://127.0.0.1:{port}{path}", headers={**auth, **ACCEPT})
            assert whole.status_code == 200
            opened.clear()
        head = "".join(f"{k}: {v}\r\n" for k, v in {**auth, **ACCEPT}.items())
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
            got = 0
            while got < 200_000:
                got += len(s.recv(65536))
        time.sleep(1.5)  # the server's turn to notice
        assert 0 < len(opened) < 150, len(opened)  # the buffers' worth, not the 200
        again = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert again.status_code == 200
    finally:
        group.stop()
        group.join()
        store.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_head_answers_what_get_would_without_reading(
    platform: Platform, tenant: str, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """HEAD on WADO-RS: GET's status, type and length, no body, no blob read or decrypted;
    journaled as the retrieval it describes. Refused the same way without a token."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(5)
    url = f"/dicomweb/{TENANT}/studies/{study}"
    if streamed:
        monkeypatch.setattr(dicomweb, "IN_MEMORY", 0)
    opened = _counted_reads(monkeypatch)
    with TestClient(app) as client:
        stow_study(client, auth, files)
        got = client.get(url, headers={**auth, **ACCEPT})
        assert got.status_code == 200 and len(opened) == 5
        opened.clear()
        entries = rows_in(platform, journal_entries)
        head = client.head(url, headers={**auth, **ACCEPT})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
        assert (
            head.headers["content-type"].split(";")[:2]
            == got.headers["content-type"].split(";")[:2]
        )
        assert opened == []  # nothing read, nothing decrypted
        assert rows_in(platform, journal_entries) == entries + 1
        assert client.head(url, headers=ACCEPT).status_code == 401
        # Invariant 2: no answer (the sizes are data too) when the access cannot be journaled.
        platform.durable_journal().close()
        refused = client.head(url, headers={**auth, **ACCEPT})
        assert refused.status_code == 503
        assert refused.headers["content-length"] != got.headers["content-length"]


def _counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the instances ``retrieve.read_into`` opens from now on, in order."""
    opened: list[str] = []
    read_into = retrieve.read_into

    def counted(*args: Any) -> None:
        opened.append(args[2].id)
        read_into(*args)

    monkeypatch.setattr(retrieve, "read_into", counted)
    return opened


def test_made_here_closes_its_pieces_when_the_sender_stops() -> None:
    produced: list[int] = []
    closed = threading.Event()

    async def first_only() -> None:
        body = dicomweb.made_here(_source(1000, produced, closed))
        async for _piece in body:
            break
        await body.aclose()  # what the server does when the client goes away

    asyncio.run(first_only())
    assert closed.is_set() and produced == [0]  # nothing made ahead of the sender


def test_prefetched_raises_the_producers_error_in_the_sender() -> None:
    def failing() -> Iterator[bytes]:
        yield b"one"
        yield b"two"
        raise ValueError("blob missing")

    got: list[bytes] = []

    async def run() -> None:
        async for piece in dicomweb.prefetched(failing(), 2):
            got.append(piece)

    with pytest.raises(ValueError, match="blob missing"):
        asyncio.run(run())
    assert got == [b"one", b"two"]  # what was produced before the error was sent first


def test_a_retrieval_is_journaled_with_its_request(platform: Platform, tenant: str) -> None:
    """The retrieval is prepared in a thread of its own (``dicomweb._in_thread``): the
    request's context goes with it, so its journal entry names the request and the address
    it came from (lost, the entry would carry neither)."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    study, files = study_files(3)
    with TestClient(app) as client:
        stow_study(client, auth, files)
        got = client.get(
            f"/dicomweb/{TENANT}/studies/{study}",
            headers={**auth, **ACCEPT, "X-Request-ID": "wado-context-0001"},
        )
        assert got.status_code == 200
    platform.durable_journal().close()  # what was accepted is written
    je = journal_entries.c
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(je.request_id, je.source_address).where(je.request_id == "wado-context-0001")
        ).all()
    assert rows, "the retrieval's journal entry lost its request"
    assert all(r.source_address for r in rows)


def test_the_application_closes_its_imaging_store_at_shutdown(
    platform: Platform, tenant: str
) -> None:
    """The imaging store the first DICOMweb request made (its blob-put threads, its blob
    store) is closed with the application, not left to the process's exit."""
    app = create_app(platform)
    auth = radiologist_auth(platform, tenant)
    _study, files = study_files(2)
    with TestClient(app) as client:
        stow_study(client, auth, files)
        store: ImagingStore = app.state.imaging_store
        threads = list(store.pool._threads)  # the store's own blob-put threads
        assert threads and all(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):  # shut down
        store.pool.submit(lambda: None)
    assert not any(t.is_alive() for t in threads)
