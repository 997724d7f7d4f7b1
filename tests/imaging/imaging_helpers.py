"""Helpers of the imaging tests: test DICOM files, free ports, the peers' binaries, and the
shapes of the ``dimse`` and ``live`` fixtures (defined in this directory's conftest).

Why a module of its own: every test directory has a ``conftest``, and which one ``from
conftest import`` finds depends on what pytest collected last (a test that imported one of
these inside its body failed in the full suite). This name is unique, like
``records/fhir_helpers``.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import Table, func, select, update

from hdsvault.access.roles import Role
from hdsvault.access.tokens import create_token
from hdsvault.db.schema import blob_chunks
from hdsvault.dicom.server import DimseServer
from hdsvault.imaging import multipart, retrieve
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller

from support.components import require_component

TENANT = "750712184"
SAMPLES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "MR_small_implicit.dcm",
]


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def sample_bytes(name: str) -> bytes:
    return sample(name).read_bytes()


@dataclass
class Dimse:
    server: DimseServer
    host: str
    port: int
    ae_title: str
    move_port: int  # where the MOVEDEST peer (movescu / a test SCP) listens


def rows_in(platform: Platform, table: Table) -> int:
    """How many rows ``table`` holds (what a store wrote, or did not)."""
    with platform.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def alter_inline_blob(platform: Platform, key: str, offset: int) -> None:
    """Flip one bit of an inline blob's sealed bytes, in the database, behind hdsvault's back."""
    where = blob_chunks.c.blob_key == key
    with platform.engine.begin() as conn:
        sealed = bytearray(conn.execute(select(blob_chunks.c.data).where(where)).scalar_one())
        sealed[offset] ^= 0x01
        conn.execute(update(blob_chunks).where(where).values(data=bytes(sealed)))


def opened(
    store: ImagingStore, caller: Caller, study_uids: list[str], in_memory: int = 1 << 20
) -> tuple[retrieve.Retrieval, list[bytes] | None]:
    """``retrieve.retrieve`` with the instances laid out back to back: the retrieval and, if
    it opened them (within ``in_memory``), each instance's file."""
    slots: list[memoryview] = []

    def back_to_back(refs: list[retrieve.InstanceRef]) -> tuple[bytearray, list[memoryview]]:
        body = bytearray(sum(r.size for r in refs))
        pos = 0
        for r in refs:
            slots.append(memoryview(body)[pos : pos + r.size])
            pos += r.size
        return body, list(slots)

    found = retrieve.retrieve(store, caller, study_uids, in_memory=in_memory, layout=back_to_back)
    return found, None if found.body is None else [bytes(s) for s in slots]


def study_files(n: int) -> tuple[str, list[bytes]]:
    """``n`` clones of CT_small.dcm in one new study and series (fresh UIDs, instance numbers
    1..n): the study's UID and the Part 10 files."""
    ds = pydicom.dcmread(io.BytesIO(sample_bytes("CT_small.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    files = []
    for i in range(n):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files.append(buf.getvalue())
    return str(ds.StudyInstanceUID), files


def dcmtk(tool: str) -> str:
    """Full path of a dcmtk tool (pynetdicom installs tools of the same names on PATH)."""
    path = Path("/usr/bin") / tool
    if not path.exists():
        require_component("dcmtk", f"{path} missing: apt-get install dcmtk")
    return str(path)


def orthanc_binary() -> str:
    path = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(path).exists():
        require_component("orthanc", "Orthanc missing: apt-get install orthanc orthanc-dicomweb")
    return path


@dataclass
class Live:
    """The real application under uvicorn (DICOMweb) plus the DIMSE listener."""

    url: str  # http://127.0.0.1:port
    token: str
    dimse: Dimse
    platform: Platform


ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}


def stow_study(client: httpx.Client, auth: dict[str, str], files: list[bytes]) -> None:
    """The files stored by STOW-RS through ``client`` (200 required)."""
    boundary = multipart.new_boundary()
    stow = client.post(
        f"/dicomweb/{TENANT}/studies",
        content=b"".join(multipart.frame((("application/dicom", [f]) for f in files), boundary)),
        headers={
            **auth,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
    )
    assert stow.status_code == 200, stow.text


def radiologist_auth(platform: Platform, tenant: str) -> dict[str, str]:
    """The Authorization header of a new radiologist's token."""
    token = create_token(
        platform.engine, tenant=tenant, role=Role.RADIOLOGY, ttl=timedelta(days=1), by="t"
    ).token
    return {"Authorization": f"Bearer {token}"}


def assert_withheld(r: httpx.Response, files: list[bytes]) -> None:
    """503, and no byte of any instance in the answer: no file header, no pixel data."""
    assert r.status_code == 503, r.text
    assert b"DICM" not in r.content
    assert not any(identity_of(f)[1][:64] in r.content for f in files)


def identity_of(data: bytes) -> tuple[str, bytes]:
    """A Part 10 file's SOP Instance UID and pixel data."""
    ds = pydicom.dcmread(io.BytesIO(data))
    return str(ds.SOPInstanceUID), bytes(ds.PixelData)
