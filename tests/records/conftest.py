"""Fixtures of the record-store tests (helpers live in ``fhir_helpers``).

``fhir`` is a FastAPI TestClient on the real application (lifespan included) for each
database backend (SQLite file, real PostgreSQL cluster), authenticated as a clinician of
establishment 750712184. ``live_server`` runs the same application under uvicorn on a free
loopback port, for real FHIR clients (fhirpy, fhirclient).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fhir_helpers import TENANT, Fhir, LiveServer, token_for  # noqa: E402

from hdsvault.access.roles import Role  # noqa: E402
from hdsvault.api.app import create_app  # noqa: E402
from hdsvault.platform import Platform  # noqa: E402

from support.ports import free_port  # noqa: E402


@pytest.fixture(autouse=True)
def _small_bundle_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the oversized-bundle test cheap: 50 entries at most (settings are built per test)."""
    monkeypatch.setenv("HDSVAULT_FHIR__MAX_BUNDLE_ENTRIES", "50")


@pytest.fixture
def fhir(platform: Platform, tenant: str) -> Iterator[Fhir]:
    app = create_app(platform)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Fhir(client, platform, token_for(platform, tenant, Role.CLINICIAN))


@pytest.fixture
def live_server(platform: Platform, tenant: str) -> Iterator[LiveServer]:
    """The real application under uvicorn in a thread, on a free loopback port."""
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
    try:
        yield LiveServer(
            f"http://127.0.0.1:{port}/fhir/{TENANT}",
            token_for(platform, tenant, Role.CLINICIAN),
            platform,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
