"""Zones (one listener each, with allowlists) and TLS (1.2+, ECDHE+AEAD, HSTS, client certs)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from hdsvault.access.roles import Role
from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan
from hdsvault.db.schema import journal_entries

from .kit import TENANT, local_token, tls_settings
from support.loopback import make_pki
from support.ports import free_port, free_ports


def _get(url: str, source: str = "127.0.0.1", **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    with httpx.Client(
        transport=httpx.HTTPTransport(local_address=source), trust_env=False, timeout=10
    ) as c:
        return c.get(url, **kw)


@pytest.fixture
def zoned(make_edge_platform):  # type: ignore[no-untyped-def]
    ports = dict(zip(("clinical", "admin", "metrics"), free_ports(3), strict=True))
    platform = make_edge_platform(
        access={"policy": "builtin"},
        perimeter={
            "zones": [
                {"name": "clinical", "port": ports["clinical"], "allow": ["127.0.0.0/8"]},
                {"name": "admin", "port": ports["admin"], "allow": ["127.0.0.2/32"]},
                {"name": "metrics", "port": ports["metrics"], "allow": ["127.0.0.0/8"]},
            ]
        },
    )
    group = ListenerGroup(create_app(platform), platform.settings, plan(platform.settings))
    group.start_in_thread()
    yield platform, {k: f"http://127.0.0.1:{v}" for k, v in ports.items()}
    group.join()


def test_each_zone_has_its_listener_and_allowlist(zoned) -> None:  # type: ignore[no-untyped-def]
    platform, url = zoned
    operator = {"Authorization": f"Bearer {local_token(platform, Role.PLATFORM_OPERATOR, None)}"}
    # the admin listener refuses an address outside its allowlist, serves one inside it
    assert (
        _get(url["admin"] + "/admin/access/policy", "127.0.0.1", headers=operator).status_code
        == 403
    )
    r = _get(url["admin"] + "/admin/access/policy", "127.0.0.2", headers=operator)
    assert r.status_code == 200 and r.json()["policy"].startswith("hdsvault-default@")
    # administration is not served on the clinical listener, clinical API not on admin
    assert _get(url["clinical"] + "/admin/access/policy", headers=operator).status_code == 404
    assert _get(url["admin"] + "/api/whoami", "127.0.0.2", headers=operator).status_code == 404
    # metrics only on the metrics listener
    assert _get(url["clinical"] + "/metrics").status_code == 404
    assert _get(url["admin"] + "/metrics", "127.0.0.2").status_code == 404
    m = _get(url["metrics"] + "/metrics")
    assert m.status_code == 200 and "hdsvault_http_requests_total" in m.text
    assert _get(url["metrics"] + "/api/whoami").status_code == 404
    # DICOMweb on the clinical listener only, behind its gate and the perimeter like any
    # route (WADO-RS is served ahead of the router: api/hot_routes.py)
    wado = f"/dicomweb/{TENANT}/studies/1.2.3"
    refused = _get(url["clinical"] + wado)
    assert refused.status_code == 401 and refused.headers["x-content-type-options"] == "nosniff"
    assert _get(url["admin"] + wado, "127.0.0.2").status_code == 404
    assert _get(url["metrics"] + wado).status_code == 404
    # probes everywhere; the zone is journaled with refusals
    for name in ("clinical", "metrics"):
        assert _get(url[name] + "/healthz").status_code == 200
    assert _get(url["clinical"] + "/api/whoami").status_code == 401
    with platform.engine.connect() as conn:
        zones = (
            conn.execute(
                select(journal_entries.c.zone).where(
                    journal_entries.c.event_type == "auth.denied:missing-token"
                )
            )
            .scalars()
            .all()
        )
    assert "clinical" in zones


@pytest.fixture
def tls_server(make_edge_platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path)
    platform = make_edge_platform(tls=tls_settings(pki))
    port = free_port()
    group = ListenerGroup(
        create_app(platform), platform.settings, plan(platform.settings, "127.0.0.1", port)
    )
    group.start_in_thread()
    yield platform, pki, f"https://127.0.0.1:{port}"
    group.join()


def _ctx(
    pki,
    *,
    cert: tuple[Path, Path] | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def _tls_get(url: str, ctx: ssl.SSLContext, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    with httpx.Client(verify=ctx, trust_env=False, timeout=10) as c:
        return c.get(url, **kw)


def test_tls_versions_ciphers_and_hsts(tls_server) -> None:  # type: ignore[no-untyped-def]
    _, pki, url = tls_server
    r = _tls_get(url + "/healthz", _ctx(pki))
    assert r.status_code == 200
    assert r.headers["strict-transport-security"].startswith("max-age=63072000")
    r = _tls_get(
        url + "/healthz",
        _ctx(pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"),
    )
    assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):  # CBC suite: not offered
        _tls_get(
            url + "/healthz",
            _ctx(
                pki,
                max_version=ssl.TLSVersion.TLSv1_2,
                ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA",
            ),
        )
    with pytest.raises(httpx.ConnectError):  # TLS 1.1: refused
        _tls_get(
            url + "/healthz",
            _ctx(pki, max_version=ssl.TLSVersion.TLSv1_1, ciphers="ALL:@SECLEVEL=0"),
        )


def test_client_certificates_authenticate_mapped_machines(tls_server) -> None:  # type: ignore[no-untyped-def]
    _, pki, url = tls_server
    r = _tls_get(url + "/api/whoami", _ctx(pki, cert=(pki.client_cert, pki.client_key)))
    assert r.status_code == 200, r.text
    assert r.json() == {"subject": "mtls:lis-gateway", "tenant": TENANT, "role": "service"}
    assert _tls_get(url + "/api/whoami", _ctx(pki)).status_code == 401  # no certificate
    with pytest.raises(httpx.HTTPError):  # a certificate from another CA: handshake refused
        _tls_get(url + "/api/whoami", _ctx(pki, cert=(pki.stranger_cert, pki.stranger_key)))
