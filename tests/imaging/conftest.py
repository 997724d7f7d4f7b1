"""Fixtures of the imaging tests: an imaging store, a DIMSE listener, the live application
(plain helpers live in ``imaging_helpers``, which tests import).

The DIMSE listener runs in-process on a free loopback port; dcmtk and Orthanc (Debian
packages, started by the tests that need them) talk to it as real peers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from imaging_helpers import Dimse, Live  # noqa: E402

from hdsvault.access.roles import Role  # noqa: E402
from hdsvault.access.tokens import Principal  # noqa: E402
from hdsvault.config import DicomPeerSettings, Settings  # noqa: E402
from hdsvault.dicom.server import DimseServer  # noqa: E402
from hdsvault.imaging.store import ImagingStore  # noqa: E402
from hdsvault.platform import Platform  # noqa: E402
from hdsvault.records.model import Caller  # noqa: E402

from support.ports import free_port, free_ports  # noqa: E402


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


@pytest.fixture
def workers() -> int:
    """``[dicom] workers`` of the ``dimse`` listener: 1, in this process (tests that put a
    failure in by hand need that); a test parametrizes ``workers`` to run it through worker
    processes (:mod:`hdsvault.dicom.handoff`)."""
    return 1


@pytest.fixture
def dimse(platform: Platform, tenant: str, settings: Settings, workers: int) -> Iterator[Dimse]:
    move_port, settings.dicom.port = free_ports(2)
    settings.dicom.workers = workers
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
