"""Fixtures of the imaging tests: an imaging store, a DIMSE listener, test DICOM files.

The DIMSE listener runs in-process on a free loopback port; dcmtk and Orthanc (Debian
packages, started by the tests that need them) talk to it as real peers.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from hdsvault.access.roles import Role  # noqa: E402
from hdsvault.access.tokens import Principal  # noqa: E402
from hdsvault.config import DicomPeerSettings, Settings  # noqa: E402
from hdsvault.dicom.server import DimseServer  # noqa: E402
from hdsvault.imaging.store import ImagingStore  # noqa: E402
from hdsvault.platform import Platform  # noqa: E402
from hdsvault.records.model import Caller  # noqa: E402

from support.components import require_component  # noqa: E402

TENANT = "750712184"
SAMPLES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "MR_small_implicit.dcm",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def sample_bytes(name: str) -> bytes:
    return sample(name).read_bytes()


@pytest.fixture
def caller(tenant: str) -> Caller:
    return Caller(
        Principal("test:radiology", tenant, Role.RADIOLOGY), tenant, source_address="127.0.0.1"
    )


@pytest.fixture
def imaging(platform: Platform, tenant: str) -> Iterator[ImagingStore]:
    store = ImagingStore(platform)
    try:
        yield store
    finally:
        store.close()


@dataclass
class Dimse:
    server: DimseServer
    host: str
    port: int
    ae_title: str
    move_port: int  # where the MOVEDEST peer (movescu / a test SCP) listens


@pytest.fixture
def dimse(platform: Platform, tenant: str, settings: Settings) -> Iterator[Dimse]:
    move_port = free_port()
    settings.dicom.port = free_port()
    settings.dicom.peers = [
        DicomPeerSettings(ae_title="DCMTK", tenant=tenant),
        DicomPeerSettings(ae_title="MOVEDEST", tenant=tenant, host="127.0.0.1", port=move_port),
        DicomPeerSettings(
            ae_title="OTHERTENANT", tenant="130786049", host="127.0.0.1", port=move_port
        ),
    ]
    store = ImagingStore(platform)
    server = DimseServer(store)
    host, port = server.start()
    try:
        yield Dimse(server, host, port, settings.dicom.ae_title, move_port)
    finally:
        server.stop()
        store.close()


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


@pytest.fixture
def live(platform: Platform, tenant: str, dimse: Dimse) -> Iterator[Live]:
    import threading
    import time
    from datetime import timedelta

    import uvicorn

    from hdsvault.access.tokens import create_token
    from hdsvault.api.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(platform), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    token = create_token(
        platform.engine, tenant=tenant, role=Role.RADIOLOGY, ttl=timedelta(days=1), by="test"
    ).token
    try:
        yield Live(f"http://127.0.0.1:{port}", token, dimse, platform)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
