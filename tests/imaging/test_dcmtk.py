"""dcmtk as a real peer: echoscu, storescu, findscu, movescu, getscu against our DIMSE SCP."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from imaging_helpers import Dimse, dcmtk, sample

pytestmark = pytest.mark.timeout(120)
ENV = {**os.environ, "TCP_NODELAY": "1"}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=ENV)
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _net(d: Dimse, aet: str = "DCMTK") -> list[str]:
    return ["-aet", aet, "-aec", d.ae_title, d.host, str(d.port)]


@pytest.mark.parametrize("workers", [1, 2])
def test_echo_and_unknown_peer_refused(dimse: Dimse) -> None:
    assert run(dcmtk("echoscu"), *_net(dimse)).returncode == 0
    refused = run(dcmtk("echoscu"), *_net(dimse, "STRANGER"), check=False)
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()


@pytest.mark.parametrize("workers", [1, 2])
def test_store_find_move_get(dimse: Dimse, tmp_path: Path) -> None:
    # storescu converts to what it proposes: propose each file's own (compressed) syntax
    plain = [str(sample(n)) for n in ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm")]
    out = run(dcmtk("storescu"), "-v", *_net(dimse), *plain)
    assert out.stderr.count("Received Store Response (Success)") == len(plain), out.stderr
    for option, name in (("-xw", "JPEG2000.dcm"), ("-xr", "SC_rgb_rle_2frame.dcm")):
        out = run(dcmtk("storescu"), "-v", option, *_net(dimse), str(sample(name)))
        assert "Received Store Response (Success)" in out.stderr, out.stderr

    # C-FIND, study level (study root), by patient name wildcard and by date range
    found = run(
        dcmtk("findscu"),
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientName=CompressedSamples*",
        "-k",
        "StudyInstanceUID",
        "-k",
        "StudyDate=20000101-20301231",
        *_net(dimse),
    )
    assert found.stderr.count("Find Response:") >= 2, found.stderr
    assert "CompressedSamples^CT1" in found.stderr
    # series level under one study
    ct = pydicom.dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    series = run(
        dcmtk("findscu"),
        "-S",
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={ct.StudyInstanceUID}",
        "-k",
        "SeriesInstanceUID",
        "-k",
        "Modality",
        *_net(dimse),
    )
    assert str(ct.SeriesInstanceUID) in series.stderr and "CT" in series.stderr

    # C-MOVE to MOVEDEST (movescu itself receives, on the configured port)
    dest = tmp_path / "moved"
    dest.mkdir()
    moved = run(
        dcmtk("movescu"),
        "-S",
        "-aem",
        "MOVEDEST",
        "--port",
        str(dimse.move_port),
        "-od",
        str(dest),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={ct.StudyInstanceUID}",
        *_net(dimse),
        check=False,
    )
    assert moved.returncode == 0, moved.stderr
    got = list(dest.iterdir())
    assert len(got) == 1
    assert pydicom.dcmread(got[0]).PixelData == pydicom.dcmread(sample("CT_small.dcm")).PixelData

    # C-GET at series level
    gdir = tmp_path / "got"
    gdir.mkdir()
    fetched = run(
        dcmtk("getscu"),
        "-S",
        "-od",
        str(gdir),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={ct.StudyInstanceUID}",
        "-k",
        f"SeriesInstanceUID={ct.SeriesInstanceUID}",
        *_net(dimse),
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    got = list(gdir.iterdir())
    assert len(got) == 1
    assert pydicom.dcmread(got[0]).PixelData == ct.PixelData if "PixelData" in ct else True


def test_move_to_unknown_or_foreign_destination_refused(dimse: Dimse, tmp_path: Path) -> None:
    run(dcmtk("storescu"), *_net(dimse), str(sample("CT_small.dcm")))
    ct = pydicom.dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    for dest in ("NOWHERE", "OTHERTENANT"):
        moved = run(
            dcmtk("movescu"),
            "-S",
            "-aem",
            dest,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={ct.StudyInstanceUID}",
            *_net(dimse),
            check=False,
        )
        assert "movedestinationunknown" in (moved.stdout + moved.stderr).lower(), moved.stderr


def test_failed_commit_fails_the_store_and_keeps_no_blob(
    dimse: Dimse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C-STORE response follows the commit: a commit that fails answers 0xA700 (the peer
    retries), and the blob written before it is deleted (no instance, no orphan)."""
    from sqlalchemy.exc import OperationalError

    def broken(*_args: object, **_kw: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr("hdsvault.imaging.journaling.record", broken)
    out = run(dcmtk("storescu"), "-v", *_net(dimse), str(sample("CT_small.dcm")), check=False)
    assert "Received Store Response (Refused: OutOfResources)" in out.stderr, out.stderr
    store = dimse.server.store
    assert list(store.blobs.iter_keys("")) == []
    monkeypatch.undo()
    out = run(dcmtk("storescu"), "-v", *_net(dimse), str(sample("CT_small.dcm")))
    assert "Received Store Response (Success)" in out.stderr, out.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_imagingstudy_synced_at_association_end(dimse: Dimse) -> None:
    """ImagingStudy is derived data: synced once the association ends, not per C-STORE."""
    import time

    from sqlalchemy import select

    from hdsvault.db.schema import imaging_studies

    store = dimse.server.store
    files = [str(sample(n)) for n in ("CT_small.dcm", "MR_small.dcm")]
    out = run(dcmtk("storescu"), "-v", *_net(dimse), *files)
    assert out.stderr.count("Received Store Response (Success)") == 2, out.stderr
    st = imaging_studies.c
    deadline = time.monotonic() + 20
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(select(st.revision, st.fhir_revision)).all()
        if rows and all(r.revision == r.fhir_revision for r in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    assert len(rows) == 2 and all(r.revision >= 1 for r in rows)
