"""Orthanc as a real PACS peer: C-STORE and STOW-RS into hdsvault, C-FIND and QIDO-RS back,
C-MOVE and WADO-RS out to Orthanc; pixel data byte-identical after the round trip."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from imaging_helpers import TENANT, Live, sample_bytes

from hdsvault.config import DicomPeerSettings

from support import orthanc as orthanc_support
from support.components import require_component
from support.orthanc import Orthanc

pytestmark = [pytest.mark.timeout(180)]

BY_DIMSE = ["CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm"]
BY_STOW = ["MR_small.dcm", "examples_jpeg2k.dcm"]


def _pixels(data: bytes) -> bytes:
    import io

    return bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)


@pytest.fixture
def peer(live: Live, tmp_path: Path) -> Iterator[Orthanc]:
    problem = orthanc_support.missing_requirements()
    if problem:
        require_component("orthanc", problem)
    d = live.dimse
    o = Orthanc(
        tmp_path / "orthanc",
        modalities={"hdsvault": (d.ae_title, d.host, d.port)},
        dicomweb_servers={
            "hdsvault": {
                "Url": f"{live.url}/dicomweb/{TENANT}/",
                "HttpHeaders": {"Authorization": f"Bearer {live.token}"},
            }
        },
    )
    # Orthanc is a peer of the tenant, and the C-MOVE destination "ORTHANC" is Orthanc itself.
    d.server.peers = type(d.server.peers)(
        d.server.settings.model_copy(
            update={
                "peers": [
                    *d.server.settings.peers,
                    DicomPeerSettings(
                        ae_title="ORTHANC", tenant=TENANT, host="127.0.0.1", port=o.dicom_port
                    ),
                ]
            }
        )
    )
    d.server.ae.require_calling_aet = [*d.server.ae.require_calling_aet, "ORTHANC"]
    with o:
        yield o


def _qido(o: Orthanc, uri: str, args: dict[str, str]) -> list[dict]:
    body = {"Uri": uri, "Arguments": args}
    r = o.rest.post("/dicom-web/servers/hdsvault/get", content=json.dumps(body))
    assert r.status_code == 200, r.text
    return json.loads(r.content) if r.content else []


def test_orthanc_round_trip(peer: Orthanc, live: Live) -> None:
    o = peer
    originals: dict[str, bytes] = {}
    ids_dimse, ids_stow = [], []
    for name in BY_DIMSE + BY_STOW:
        data = sample_bytes(name)
        oid = o.upload(data)
        sop = str(
            pydicom.dcmread(__import__("io").BytesIO(data), stop_before_pixels=True).SOPInstanceUID
        )
        originals[sop] = _pixels(data)
        (ids_dimse if name in BY_DIMSE else ids_stow).append(oid)

    # 1. Orthanc pushes by C-STORE and by STOW-RS
    pushed = o.post_json(
        "/modalities/hdsvault/store", {"Resources": ids_dimse, "Synchronous": True}
    )
    assert pushed["FailedInstancesCount"] == 0, pushed
    stow = o.post_json(
        "/dicom-web/servers/hdsvault/stow", {"Resources": ids_stow, "Synchronous": True}
    )
    assert stow is not None

    # 2. queried back by QIDO-RS (wildcard raw and percent-encoded) and by C-FIND
    studies = _qido(o, "/studies", {"PatientName": "*", "includefield": "00081030"})
    assert len(studies) == len(BY_DIMSE + BY_STOW)
    encoded = _qido(o, "/studies", {"PatientName": "CompressedSamples*"})  # sent as %2A
    # a raw '*' in the query string, as some clients send it
    url = f"{live.url}/dicomweb/{TENANT}/studies?PatientName=CompressedSamples*"
    r = httpx.get(url, headers={"Authorization": f"Bearer {live.token}"})
    assert r.status_code == 200
    raw = r.json()
    assert {s["0020000D"]["Value"][0] for s in encoded} == {s["0020000D"]["Value"][0] for s in raw}
    assert len(raw) >= 2
    q = o.post_json(
        "/modalities/hdsvault/query",
        {
            "Level": "Study",
            "Query": {"PatientName": "CompressedSamples*", "StudyDate": "19000101-20991231"},
        },
    )
    answers = o.rest.get(f"/queries/{q['ID']}/answers?expand").json()
    assert len(answers) == len(raw)
    series = o.post_json(
        "/modalities/hdsvault/query", {"Level": "Series", "Query": {"Modality": "CT"}}
    )
    assert len(o.rest.get(f"/queries/{series['ID']}/answers").json()) == 1

    all_study_uids = [s["0020000D"]["Value"][0] for s in studies]

    # 3. retrieved by C-MOVE (destination: Orthanc), pixel data identical
    o.clear()
    moved = o.post_json(
        "/modalities/hdsvault/move",
        {
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": u} for u in all_study_uids],
            "TargetAet": "ORTHANC",
            "Synchronous": True,
        },
    )
    _assert_identical(o, originals)

    # 4. retrieved by WADO-RS (Orthanc's DICOMweb client), pixel data identical
    o.clear()
    o.post_json(
        "/dicom-web/servers/hdsvault/retrieve",
        {"Resources": [{"Study": u} for u in all_study_uids], "Synchronous": True},
    )
    _assert_identical(o, originals)
    del moved


def _assert_identical(o: Orthanc, originals: dict[str, bytes]) -> None:
    deadline = time.monotonic() + 20
    while len(o.instances()) < len(originals) and time.monotonic() < deadline:
        time.sleep(0.2)
    got = {}
    for iid in o.instances():
        data = o.file(iid)
        ds = pydicom.dcmread(__import__("io").BytesIO(data))
        got[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    assert set(got) == set(originals)
    for sop, pixels in originals.items():
        assert got[sop] == pixels, sop
