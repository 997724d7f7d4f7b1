"""Bearer-token authentication: nothing anonymous except health probes and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status

from hdsvault.access.tokens import InvalidToken, Principal, authenticate
from hdsvault.journal.entry import PLATFORM_LOG, Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.service import record
from hdsvault.platform import Platform

log = structlog.get_logger("hdsvault.auth")


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def require_principal(
    request: Request, platform: Annotated[Platform, Depends(get_platform)]
) -> Principal:
    """The authenticated caller, or 401 with ``WWW-Authenticate: Bearer``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        journal_denial(platform, request, "missing-token")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required",
            headers={"WWW-Authenticate": 'Bearer realm="hdsvault"'},
        )
    try:
        return authenticate(platform.engine, token.strip())
    except InvalidToken as exc:
        journal_denial(platform, request, str(exc).replace(" ", "-"))
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
        request_id=request.scope.get("state", {}).get("request_id"),
        objects=(f"{request.method} {request.url.path}"[:200],),
    )
    with platform.engine.begin() as conn:
        record(conn, entry)
