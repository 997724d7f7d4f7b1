"""Administration-zone endpoints of access control: policy, explain, break-the-glass review.

Served under ``/admin/access`` (the administration listener when zones are configured). Each
endpoint asks :func:`~hdsvault.access.decision.authorize` like any service does, so the
separation of duties holds here too: the platform operator sees which policy is in force, the
DPO reviews break-the-glass grants and explains decisions of its establishment, nobody else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from hdsvault.access import breakglass
from hdsvault.access.control import active_control
from hdsvault.access.decision import AccessRequest, Decision, Operation, authorize
from hdsvault.access.explain import parse_request_line
from hdsvault.access.journaling import journal_decision
from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.api.auth import CurrentPrincipal, get_platform
from hdsvault.journal.entry import format_time
from hdsvault.platform import Platform

router = APIRouter(prefix="/admin/access")
PlatformDep = Annotated[Platform, Depends(get_platform)]


def _require(platform: Platform, request: AccessRequest) -> Decision:
    decision = authorize(request)
    if not decision.allowed:
        with platform.engine.begin() as conn:
            journal_decision(conn, request, decision)
        raise HTTPException(403, f"denied by {decision.rule}: {decision.reason}")
    return decision


@router.get("/policy")
def policy(principal: CurrentPrincipal, platform: PlatformDep) -> dict[str, Any]:
    """The policy in force (id, version, source, rule ids): for the platform operator."""
    _require(platform, AccessRequest(principal, Operation.ADMIN, principal.tenant or "-"))
    control = active_control()
    p = control.policy if control is not None else None
    return {
        "policy": p.name if p else "baseline",
        "source": p.source if p else "built-in baseline",
        "rules": [r.id for r in p.rules] if p else [],
        "break_glass_roles": sorted(p.break_glass_roles) if p else [],
    }


@router.get("/{tenant}/break-glass")
def grants(
    tenant: str,
    principal: CurrentPrincipal,
    platform: PlatformDep,
    active: Annotated[bool, Query(description="Only grants in force now")] = False,
) -> list[dict[str, Any]]:
    """Break-the-glass grants of an establishment, newest first: for its DPO."""
    _require(platform, AccessRequest(principal, Operation.AUDIT, tenant))
    now = datetime.now(UTC)
    return [
        {
            "id": g.id,
            "subject": g.subject,
            "professional_id": g.professional_id,
            "role": g.role,
            "patient": g.patient,
            "created_at": format_time(g.created_at),
            "expires_at": format_time(g.expires_at),
            "active": g.active(now),
        }
        for g in breakglass.list_grants(platform.engine, tenant, active_at=now if active else None)
    ]


class ExplainBody(BaseModel):
    """A hypothetical request to explain (nothing is read, no grant is opened)."""

    subject: str = Field(max_length=255)
    role: Role
    request: str = Field(max_length=2000, description='e.g. "GET /fhir/750712184/Patient/123"')
    care_units: list[str] = Field(default_factory=list, max_length=50)
    professional_id: str | None = None
    labels: list[str] = Field(default_factory=list, max_length=50)
    break_glass_reason: str | None = Field(default=None, max_length=2000)


@router.post("/{tenant}/explain")
def explain(
    tenant: str, body: ExplainBody, principal: CurrentPrincipal, platform: PlatformDep
) -> dict[str, Any]:
    """The decision path of a hypothetical request in ``tenant``: for its DPO."""
    _require(platform, AccessRequest(principal, Operation.AUDIT, tenant))
    who = Principal(
        subject=body.subject,
        tenant=tenant,
        role=body.role,
        professional_id=body.professional_id,
        care_units=tuple(body.care_units),
    )
    try:
        parsed = parse_request_line(body.request)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if parsed.tenant is not None and parsed.tenant != tenant:
        raise HTTPException(422, "the request names another tenant")
    request = parsed.to_access_request(who, tenant, tuple(body.labels), body.break_glass_reason)
    control = active_control()  # dry run: an explanation never opens a grant
    decision = control.decide(request, dry_run=True) if control is not None else authorize(request)
    return {
        "allowed": decision.allowed,
        "rule": decision.rule,
        "reason": decision.reason,
        "policy": decision.policy,
        "break_glass": decision.break_glass,
        "trace": [
            {"rule": t.rule, "matched": t.matched, "effect": t.effect, "note": t.note}
            for t in decision.trace
        ],
    }
