"""The imaging store on both databases: chunked sealing, QIDO semantics, DICOMweb errors,
and no clear patient name or id from DICOM headers in blobs or database."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from imaging_helpers import TENANT, sample_bytes

from hdsvault.access.roles import Role
from hdsvault.access.tokens import create_token
from hdsvault.api.app import create_app
from hdsvault.blobs import inline
from hdsvault.crypto.errors import DecryptionError
from hdsvault.imaging import multipart, queries, retrieve, sealing
from hdsvault.imaging.attributes import Level
from hdsvault.imaging.attributes import parse_attribute as T
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

NAMES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "examples_jpeg2k.dcm",
]


def test_chunked_sealing_detects_tampering(platform: Platform, tenant: str) -> None:
    with platform.engine.connect() as conn:
        keys = platform.keyring.data_keys(conn, tenant)
    data = os.urandom(300_000)
    blob = sealing.seal(keys, tenant, "i1", data, 64 * 1024)
    assert sealing.open_blob(keys, tenant, "i1", bytes(blob)) == data
    assert (
        b"".join(sealing.open_stream(keys, tenant, "i1", [bytes(blob[:1000]), bytes(blob[1000:])]))
        == data
    )
    streamed = b"".join(
        sealing.seal_stream(keys, tenant, "i1", [data[:5], data[5:]], len(data), 64 * 1024)
    )
    assert sealing.open_blob(keys, tenant, "i1", streamed) == data

    def flipped(offset: int) -> bytes:
        # One bit flipped at a fixed place. (The former bytes.replace of blob[100] by NUL hit
        # the header's first NUL and changed nothing whenever blob[100] was itself NUL: a
        # 1-in-256 failure that reddened CI.)
        out = bytearray(blob)
        out[offset] ^= 0x01
        return bytes(out)

    for bad in (
        blob[:-1],
        blob[:16] + blob[16 + 65569 :],
        flipped(100),  # ciphertext of segment 0
        flipped(16 + 65569 + 40),  # ciphertext of segment 1
        flipped(7),  # the header's chunk size
        flipped(15),  # the header's total size
    ):
        with pytest.raises(DecryptionError):
            sealing.open_blob(keys, tenant, "i1", bytes(bad))
    with pytest.raises(DecryptionError):
        sealing.open_blob(keys, tenant, "other-instance", bytes(blob))


def test_query_semantics(imaging: ImagingStore, caller: Caller) -> None:
    outcomes = imaging.store_many(caller, [sample_bytes(n) for n in NAMES], source="test")
    assert [o.status for o in outcomes] == ["stored"] * len(NAMES)

    def run(level, **f):
        return queries.run(
            imaging, caller, queries.Query(level, {T(k): v for k, v in f.items()})
        ).hits

    assert len(run(Level.STUDY)) == len(NAMES)
    assert len(run(Level.STUDY, PatientName="compressedsamples^ct1")) == 1  # case-insensitive
    assert len(run(Level.STUDY, PatientName="*SAMPLES^M*")) == 1  # leading wildcard: scan + match
    assert len(run(Level.STUDY, ModalitiesInStudy="MR\\CT")) == 2
    ct = pydicom.dcmread(io.BytesIO(sample_bytes("CT_small.dcm")), stop_before_pixels=True)
    assert len(run(Level.STUDY, StudyDate=f"{ct.StudyDate}")) >= 1
    assert len(run(Level.STUDY, StudyDate=f"{ct.StudyDate}-")) >= 1
    assert run(Level.STUDY, StudyDate="19000101-19000102") == []
    assert len(run(Level.SERIES, StudyInstanceUID=str(ct.StudyInstanceUID))) == 1
    assert len(run(Level.IMAGE, SOPInstanceUID=str(ct.SOPInstanceUID))) == 1
    page = queries.run(imaging, caller, queries.Query(Level.STUDY, limit=2, offset=1)).hits
    assert len(page) == 2
    # duplicate instance: acknowledged, not stored twice
    assert imaging.store(caller, sample_bytes("CT_small.dcm"), source="t").status == "duplicate"
    refs = retrieve.locate(imaging, caller, [str(ct.StudyInstanceUID)])
    keys = retrieve.data_keys(imaging, caller.tenant)
    assert retrieve.read(imaging, caller.tenant, refs[0], keys) == sample_bytes("CT_small.dcm")
    frames, ctype = retrieve.frames(sample_bytes("SC_rgb_rle_2frame.dcm"), [2])
    assert ctype == "image/dicom-rle" and len(frames) == 1


def _client(
    platform: Platform, tenant: str, role: Role = Role.RADIOLOGY
) -> tuple[TestClient, dict[str, str]]:
    from datetime import timedelta

    token = create_token(
        platform.engine, tenant=tenant, role=role, ttl=timedelta(days=1), by="t"
    ).token
    return TestClient(create_app(platform), raise_server_exceptions=False), {
        "Authorization": f"Bearer {token}"
    }


def _stow_body(files: list[bytes]) -> tuple[bytes, str]:
    boundary = multipart.new_boundary()
    body = b"".join(multipart.frame((("application/dicom", [f]) for f in files), boundary))
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_dicomweb_errors_and_rendering(platform: Platform, tenant: str) -> None:
    client, auth = _client(platform, tenant)
    with client:
        base = f"/dicomweb/{TENANT}"
        assert client.get(base + "/studies").status_code == 401
        body, ctype = _stow_body([sample_bytes("CT_small.dcm"), b"not dicom" * 30])
        r = client.post(base + "/studies", content=body, headers={**auth, "Content-Type": ctype})
        assert r.status_code == 202, r.text
        out = r.json()
        assert len(out["00081199"]["Value"]) == 1 and out["00081198"]["Value"][0]["00081197"][
            "Value"
        ] == [0xC000]
        r = client.post(
            base + "/studies", content=b"x", headers={**auth, "Content-Type": "application/json"}
        )
        assert r.status_code == 415
        r = client.post(
            base + "/studies",
            content=b"--nope",
            headers={
                **auth,
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=zz',
            },
        )
        assert r.status_code == 400
        assert client.get(base + "/studies?limit=x", headers=auth).status_code == 400
        assert client.get(base + "/studies?NoSuchAttribute=1", headers=auth).status_code == 400
        studies = client.get(
            base + "/studies?PatientName=Compressed%2A&includefield=all", headers=auth
        )
        assert studies.status_code == 200 and len(studies.json()) == 1
        uid = studies.json()[0]["0020000D"]["Value"][0]
        assert studies.json()[0]["00081190"]["Value"][0].endswith(f"/studies/{uid}")
        meta = client.get(f"{base}/studies/{uid}/metadata", headers=auth)
        assert (
            meta.status_code == 200
            and meta.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"
        )
        wado = client.get(
            f"{base}/studies/{uid}",
            headers={**auth, "Accept": 'multipart/related; type="application/dicom"'},
        )
        assert wado.status_code == 200
        _media, params = multipart.content_type_params(wado.headers["content-type"])
        parts = multipart.parse(wado.content, params["boundary"])
        assert [p.body for p in parts] == [sample_bytes("CT_small.dcm")]
        assert wado.headers["content-length"] == str(len(wado.content))  # declared, not chunked
        assert client.get(f"{base}/studies/1.2.3", headers=auth).status_code == 404
        assert client.get("/dicomweb/123/studies", headers=auth).status_code == 404
        # another establishment's token: refused (and journaled)
        _other_client, other = _client(platform, tenant, Role.DPO)
        assert client.get(base + "/studies", headers=other).status_code == 403


@pytest.mark.parametrize("how", ["one batch", "one C-STORE each, as files"])
def test_no_clear_identity_at_rest(
    platform: Platform,
    tenant: str,
    imaging: ImagingStore,
    caller: Caller,
    request: pytest.FixtureRequest,
    how: str,
) -> None:
    """Nothing of the patients' identities in the blobs or the database, whether the instances
    come as one batch (blobs written by the pool, small ones inline) or one at a time stored
    as files (from the second on, each blob written ahead by its head start)."""
    if how == "one batch":
        imaging.store_many(caller, [sample_bytes(n) for n in NAMES], source="test")
    else:
        imaging.inline_max = 0
        for n in NAMES:
            assert imaging.store(caller, sample_bytes(n), source="test").status == "stored"
    from hdsvault.imaging.fhir import sync_studies

    secrets: set[bytes] = set()
    for n in NAMES:
        ds = pydicom.dcmread(io.BytesIO(sample_bytes(n)), stop_before_pixels=True)
        for v in (
            str(ds.get("PatientName", "")),
            str(ds.get("PatientID", "")),
            str(ds.get("StudyInstanceUID", "")),
        ):
            if len(v) >= 4:
                secrets.add(v.encode())
    assert secrets
    blob_root = platform.settings.data_dir / "blobs"
    files = [p for p in blob_root.rglob("*") if p.is_file()]
    keys = list(imaging.blobs.iter_keys(f"{tenant}/"))  # files, and small ones in the database
    assert len(keys) == len(NAMES) and len(files) == sum(not inline.is_inline(k) for k in keys)
    url = platform.settings.database_url
    if url.startswith("sqlite"):
        db = Path(url.removeprefix("sqlite:///"))
        files += [db, *db.parent.glob(db.name + "-wal")]
        dumps = [b""]
    else:
        cluster = request.getfixturevalue("pg_cluster")
        dumps = [cluster.pg_dump(url.rsplit("/", 1)[1])]
    for f in files:
        data = f.read_bytes()
        for s in secrets:
            assert s not in data, (f, s)
    for dump in dumps:
        for s in secrets:
            assert s not in dump, s
    del sync_studies


def test_framed_length_is_what_frame_yields() -> None:
    items = [("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", b"x" * 1001), ("a/b", b"")]
    boundary = multipart.new_boundary()
    body = b"".join(multipart.frame(((c, [d]) for c, d in items), boundary))
    assert multipart.framed_length(((c, len(d)) for c, d in items), boundary) == len(body)


def test_stow_bodies_over_the_limit_are_refused_and_store_nothing(
    platform: Platform, tenant: str
) -> None:
    """``dicom.max_stow_bytes``: a declared ``Content-Length`` over it gets 413 at once; a
    chunked body (no length) is counted as it streams and cut at the limit: 413, nothing
    stored, never a 500."""
    body, ctype = _stow_body([sample_bytes("CT_small.dcm")])
    platform.settings.dicom.max_stow_bytes = len(body) - 1
    client, auth = _client(platform, tenant)
    headers = {**auth, "Content-Type": ctype}
    with client:
        base = f"/dicomweb/{TENANT}"
        declared = client.post(base + "/studies", content=body, headers=headers)
        assert declared.status_code == 413 and "max_stow_bytes" in declared.text

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        streamed = client.post(base + "/studies", content=chunks(), headers=headers)
        assert streamed.status_code == 413 and "max_stow_bytes" in streamed.text
        assert client.get(base + "/studies", headers=auth).json() == []
        platform.settings.dicom.max_stow_bytes = len(body)  # at the limit: accepted
        assert client.post(base + "/studies", content=chunks(), headers=headers).status_code == 200


def test_multipart_parts_and_their_malformations() -> None:
    """Parts come out byte for byte (with or without headers); every malformation is INVALID
    with what was expected, never a crash."""
    from hdsvault.imaging.errors import ImagingError, Kind

    body = (
        b"preamble\r\n--B\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n\r\n"
        b"--B\r\n\r\nsecond\r\n--B--\r\n"
    )
    parts = multipart.parse(body, "B")
    assert [(p.content_type, p.body) for p in parts] == [
        ("application/dicom", b"first\r\n"),
        ("", b"second"),
    ]
    for bad, expected in (
        (b"no delimiter at all", "does not contain its boundary"),
        (b"--B\r\nContent-Type: x\r\n\r\nbody without its end", "truncated"),
        (b"--B\r\nContent-Type: x\r\nno blank line\r\n--B--", "header/body separator"),
    ):
        with pytest.raises(ImagingError, match=expected) as caught:
            multipart.parse(bad, "B")
        assert caught.value.kind == Kind.INVALID
    with pytest.raises(ImagingError, match="boundary"):
        multipart.parse(body, "")
