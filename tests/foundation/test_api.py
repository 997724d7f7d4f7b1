"""The HTTP face of the foundation: probes, metrics, and nothing anonymous."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hdsvault.access.roles import Role
from hdsvault.access.tokens import create_token, revoke_token
from hdsvault.api.app import create_app
from hdsvault.config import load_settings
from hdsvault.db.schema import api_tokens, journal_entries
from hdsvault.platform import Platform, init_platform


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as c:
        yield c


def bearer(platform: Platform, tenant: str | None, role: Role = Role.CLINICIAN) -> str:
    issued = create_token(
        platform.engine, tenant=tenant, role=role, ttl=timedelta(days=1), by="test"
    )
    return issued.token


def test_probes_and_metrics_are_open(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200
    client.get("/healthz")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'hdsvault_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text
    )
    client.get("/fhir/750712184/metadata")
    labels = client.get("/metrics").text
    assert 'route="/fhir/*"' in labels  # the FHIR sub-application, one bounded label
    client.get("/dicomweb/750712184/studies/1.2.3")  # a router included with a prefix
    client.get("/no/such/page")
    labels = client.get("/metrics").text
    assert 'route="/dicomweb/{finess}/studies/{study}",status="401"' in labels
    assert 'route="unmatched",status="404"' in labels
    assert 'route="?"' not in labels


def test_readyz_fails_when_the_database_is_gone(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var")
    init_platform(settings)
    platform = Platform.open(settings)
    with TestClient(create_app(platform)) as client:
        assert client.get("/readyz").status_code == 200
        platform.engine.dispose()
        for f in settings.data_dir.glob("hdsvault.db*"):
            f.unlink()
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # alive, not ready


def test_everything_else_requires_a_token(
    platform: Platform, tenant: str, client: TestClient
) -> None:
    assert client.get("/api/whoami").status_code == 401
    assert client.get("/api/whoami").headers["www-authenticate"].startswith("Bearer")
    assert client.get("/nope").status_code == 404  # unknown route, still no data
    token = bearer(platform, tenant)
    r = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["tenant"] == tenant and r.json()["role"] == "clinician"
    assert r.headers["x-request-id"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer hdsv_000000000000000000000000_bogus",
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer hdsv_" + "a" * 5000,
    ],
)
def test_bad_tokens_get_401_and_are_journaled(
    platform: Platform, client: TestClient, header: str
) -> None:
    r = client.get("/api/whoami", headers={"Authorization": header})
    assert r.status_code == 401
    with platform.engine.connect() as conn:
        events = conn.execute(select(journal_entries.c.event_type, journal_entries.c.outcome)).all()
    assert any(e.startswith("auth.denied") and o == "4" for e, o in events)


def test_expired_and_revoked_tokens(platform: Platform, tenant: str, client: TestClient) -> None:
    token = bearer(platform, tenant)
    token_id = token.split("_")[1]
    with platform.engine.begin() as conn:
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (
        client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    token2 = bearer(platform, tenant)
    assert (
        client.get("/api/whoami", headers={"Authorization": f"Bearer {token2}"}).status_code == 200
    )
    assert revoke_token(platform.engine, token2.split("_")[1], by="test")
    assert (
        client.get("/api/whoami", headers={"Authorization": f"Bearer {token2}"}).status_code == 401
    )


def test_token_secret_is_not_stored(platform: Platform, tenant: str) -> None:
    token = bearer(platform, tenant)
    secret = token.split("_", 2)[2]
    with platform.engine.connect() as conn:
        rows = conn.execute(select(api_tokens)).all()
    assert all(
        secret.encode() not in bytes(r.secret_hash) and secret not in str(tuple(r)) for r in rows
    )


def test_request_id_is_echoed_when_well_formed(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abcdef12-3456"})
    assert r.headers["x-request-id"] == "abcdef12-3456"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"[:10]})
    assert r.headers["x-request-id"] != "bad id\nwit"


def test_fastapi_opentelemetry_stays_off(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's built-in OpenTelemetry would trace every request (URLs, errors) to whatever
    providers the process has, or auto-configures them from the environment: off for
    hdsvault, even with providers that look configured and the auto-configuration variable
    set; a plain FastAPI application would turn it on."""
    from fastapi import FastAPI
    from fastapi.telemetry import _asgi

    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    monkeypatch.setattr(_asgi, "_unconfigured", lambda _provider: False)
    assert FastAPI()._native_telemetry.enabled()  # the default, in these conditions
    assert not create_app(platform)._native_telemetry.enabled()
