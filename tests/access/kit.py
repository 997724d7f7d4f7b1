"""Helpers shared by the access tests (fixtures are in conftest.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hdsvault.access.roles import Role
from hdsvault.access.tokens import create_token
from hdsvault.platform import Platform

from support.loopback import OidcIssuer, Pki

TENANT = "750712184"
OTHER_TENANT = "130783293"  # another establishment (valid FINESS)


def issuer_settings(issuer: OidcIssuer, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "tenant": TENANT,
        "issuer": issuer.url,
        "audience": f"hdsvault-{TENANT}",
        "min_acr": "eidas1",
    }
    cfg.update(overrides)
    return {"issuers": [cfg]}


def tls_settings(pki: Pki) -> dict[str, Any]:
    """``[tls]`` with the test CA's server certificate, client certificates verified, and the
    LIS gateway's certificate (``DNS:lis.chu.example``) mapped to a service identity."""
    return {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca_file),
        "clients": [
            {
                "san": "DNS:lis.chu.example",
                "tenant": TENANT,
                "role": "service",
                "name": "lis-gateway",
            }
        ],
    }


def local_token(platform: Platform, role: Role, tenant: str | None = TENANT) -> str:
    return create_token(
        platform.engine, tenant=tenant, role=role, ttl=timedelta(hours=1), by="test"
    ).token
