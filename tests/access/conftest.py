"""Fixtures of the access tests: a platform with access settings, a loopback issuer and webhook.

``access_platform`` builds a platform (on each database backend, through ``db_url``) whose
settings are the test's: the builtin policy, the loopback OpenID issuer for tenant 750712184,
the loopback webhook for alerts. Tests that only exercise the perimeter use ``edge_platform``
(SQLite only: the database is not what they test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hdsvault.access.context import register_patient_context
from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan
from hdsvault.config import load_settings
from hdsvault.platform import Platform, init_platform
from hdsvault.tenants.service import add_tenant

from .kit import OTHER_TENANT, TENANT
from support.loopback import OidcIssuer, WebhookReceiver
from support.ports import free_port

PlatformFactory = Callable[..., Platform]


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    server = OidcIssuer()
    yield server
    server.close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def _factory(tmp_path: Path, db_url: str, opened: list[Platform]) -> PlatformFactory:
    def make(**overrides: Any) -> Platform:
        settings = load_settings(data_dir=tmp_path / "var", database={"url": db_url}, **overrides)
        init_platform(settings)
        platform = Platform.open(settings)
        opened.append(platform)
        for finess, name in ((TENANT, "CHU de test"), (OTHER_TENANT, "Clinique voisine")):
            add_tenant(platform, finess, name, by="test")
        return platform

    return make


@pytest.fixture
def make_platform(db_url: str, tmp_path: Path) -> Iterator[PlatformFactory]:
    """Build a platform with these settings overrides (each database backend)."""
    opened: list[Platform] = []
    yield _factory(tmp_path, db_url, opened)
    for p in opened:
        p.close()


@pytest.fixture
def make_edge_platform(tmp_path: Path) -> Iterator[PlatformFactory]:
    """Same, SQLite only (perimeter tests: the database is not what they exercise)."""
    opened: list[Platform] = []
    yield _factory(tmp_path, f"sqlite:///{tmp_path}/edge.db", opened)
    for p in opened:
        p.close()


@pytest.fixture(autouse=True)
def _no_patient_context() -> Iterator[None]:
    """Every test starts and ends with the no-op patient context."""
    register_patient_context(None)
    yield
    register_patient_context(None)


@pytest.fixture
def client_for() -> Iterator[Callable[[Platform], TestClient]]:
    """An in-process client of a platform's app (lifespan run: the access engine installed)."""
    clients: list[TestClient] = []

    def make(platform: Platform) -> TestClient:
        client = TestClient(create_app(platform), client=("127.0.0.9", 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def serve() -> Iterator[Callable[[Platform], ListenerGroup]]:
    """Serve a platform's app on real loopback listeners (the ``hdsvault serve`` machinery)."""
    groups: list[ListenerGroup] = []

    def start(platform: Platform) -> ListenerGroup:
        settings = platform.settings
        group = ListenerGroup(
            create_app(platform), settings, plan(settings, "127.0.0.1", free_port())
        )
        group.start_in_thread()
        groups.append(group)
        return group

    yield start
    for g in groups:
        g.join()
