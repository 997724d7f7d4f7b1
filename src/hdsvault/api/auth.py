"""Authentication: nothing anonymous except health probes and metrics.

A caller proves who it is with a bearer credential (a local API token, or an OpenID Connect JWT
from a configured issuer such as Pro Santé Connect) or, on a TLS listener that asks for one,
with a client certificate mapped in ``[[tls.clients]]``. A bearer credential, when present, wins.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status

from hdsvault.access.identity import CredentialRejected, authenticate_credential
from hdsvault.access.mtls import principal_from_certificate
from hdsvault.access.oidc import OidcVerifier
from hdsvault.access.tokens import Principal
from hdsvault.journal.entry import PLATFORM_LOG, Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.service import record
from hdsvault.platform import Platform

log = structlog.get_logger("hdsvault.auth")


async def get_platform(request: Request) -> Platform:
    """The opened platform (``async``: a plain attribute read needs no worker thread)."""
    platform: Platform = request.app.state.platform
    return platform


def bearer_token(request: Request) -> str | None:
    """The request's bearer credential (``Authorization: Bearer ...``), if it presents one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_principal(
    request: Request, platform: Annotated[Platform, Depends(get_platform)]
) -> Principal:
    """The authenticated caller, or 401 with ``WWW-Authenticate: Bearer``."""
    token = bearer_token(request)
    if token is None:
        cert = (request.scope.get("extensions") or {}).get("tls", {}).get("client_cert")
        if cert and not request.headers.get("authorization", ""):
            principal = principal_from_certificate(cert, platform.settings.tls)
            if principal is not None:
                return principal
        journal_denial(platform, request, "missing-token")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required",
            headers={"WWW-Authenticate": 'Bearer realm="hdsvault"'},
        )
    verifier: OidcVerifier | None = getattr(request.app.state, "oidc_verifier", None)
    try:
        return authenticate_credential(platform.engine, verifier, token)
    except CredentialRejected as exc:
        journal_denial(platform, request, exc.reason)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or expired token",
            headers={"WWW-Authenticate": 'Bearer realm="hdsvault", error="invalid_token"'},
        ) from None


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]


def journal_denial(platform: Platform, request: Request, reason: str) -> None:
    """Every refused authentication is journaled (durably, before the 401 leaves)."""
    log.warning("auth.denied", reason=reason)
    entry = JournalEntry(
        log_id=PLATFORM_LOG,
        time=datetime.now(UTC),
        event_type=f"auth.denied:{reason}"[:64],
        category=Category.ACCESS,
        action=Action.EXECUTE,
        outcome=Outcome.MINOR_FAILURE,
        severity=Severity.WARNING,
        actor="anonymous",
        source_address=request.client.host if request.client else None,
        zone=request.scope.get("state", {}).get("zone"),
        request_id=request.scope.get("state", {}).get("request_id"),
        objects=(f"{request.method} {request.url.path}"[:200],),
    )
    with platform.engine.begin() as conn:
        record(conn, entry)
