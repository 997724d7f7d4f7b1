"""Break-the-glass grants: time-bounded access to one patient, opened by a declared reason.

A professional whom the policy denies (no care relationship, sensitive patient) may still open
a record in an emergency by declaring why. The decision creates a :class:`BreakGlassGrant` for
(principal, patient) that lasts ``[access] break_glass_seconds`` (4 hours by default); while it
lasts, further requests on that patient are allowed without repeating the reason, and each one
is journaled with purpose of use ``ETREAT``. The reason itself may contain clinical information:
it is sealed in the journal under the tenant's data key (never stored here in clear), and the
DPO is alerted (see :mod:`hdsvault.access.alerts`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, insert, select, update

from hdsvault.access.decision import AccessRequest
from hdsvault.db.engine import read_connection
from hdsvault.db.schema import break_glass_grants

MIN_REASON_CHARS = 10
MAX_REASON_CHARS = 2000


class BreakGlassRefused(Exception):
    """A declared reason that cannot open a grant (too short, too long)."""


@dataclass(frozen=True)
class BreakGlassGrant:
    """One open glass: who, which patient, until when."""

    id: str
    tenant: str
    subject: str
    professional_id: str | None
    role: str
    patient: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.created_at <= now < self.expires_at


def check_reason(reason: str | None) -> str:
    """The reason, trimmed, if it is one; else :class:`BreakGlassRefused` saying why."""
    text = " ".join((reason or "").split())
    if len(text) < MIN_REASON_CHARS:
        raise BreakGlassRefused(
            f"a break-the-glass reason of at least {MIN_REASON_CHARS} characters is required"
        )
    if len(text) > MAX_REASON_CHARS:
        raise BreakGlassRefused(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return text


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _from_row(row: object) -> BreakGlassGrant:
    r = row._mapping  # type: ignore[attr-defined]
    return BreakGlassGrant(
        id=r["id"],
        tenant=r["tenant_id"],
        subject=r["subject"],
        professional_id=r["professional_id"],
        role=r["role"],
        patient=r["patient"],
        created_at=_utc(r["created_at"]),
        expires_at=_utc(r["expires_at"]),
        revoked_at=_utc(r["revoked_at"]) if r["revoked_at"] else None,
    )


def active_grant(
    engine: Engine, tenant: str, subject: str, patient: str, now: datetime
) -> BreakGlassGrant | None:
    """The grant in force for (subject, patient), if any (a read: never takes a write lock)."""
    with read_connection(engine) as conn:
        row = conn.execute(
            select(break_glass_grants)
            .where(
                break_glass_grants.c.tenant_id == tenant,
                break_glass_grants.c.subject == subject,
                break_glass_grants.c.patient == patient,
                break_glass_grants.c.expires_at > now,
                break_glass_grants.c.revoked_at.is_(None),
            )
            .order_by(break_glass_grants.c.expires_at.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    grant = _from_row(row)
    return grant if grant.active(now) else None


def create_grant(
    conn: Connection, request: AccessRequest, *, now: datetime, duration: timedelta
) -> BreakGlassGrant:
    """Open a grant in the caller's transaction (its journal entry commits with it)."""
    if request.patient is None:
        raise BreakGlassRefused("break-the-glass opens one patient's record: no patient given")
    p = request.principal
    grant = BreakGlassGrant(
        id=secrets.token_hex(12),
        tenant=request.tenant,
        subject=p.subject,
        professional_id=p.professional_id,
        role=str(p.role),
        patient=request.patient,
        created_at=now,
        expires_at=now + duration,
    )
    conn.execute(
        insert(break_glass_grants).values(
            id=grant.id,
            tenant_id=grant.tenant,
            subject=grant.subject,
            professional_id=grant.professional_id,
            role=grant.role,
            patient=grant.patient,
            created_at=grant.created_at,
            expires_at=grant.expires_at,
        )
    )
    return grant


def list_grants(
    engine: Engine, tenant: str | None = None, *, active_at: datetime | None = None
) -> list[BreakGlassGrant]:
    """Grants, newest first (of one tenant; only those active at ``active_at`` if given)."""
    stmt = select(break_glass_grants).order_by(break_glass_grants.c.created_at.desc())
    if tenant is not None:
        stmt = stmt.where(break_glass_grants.c.tenant_id == tenant)
    if active_at is not None:
        stmt = stmt.where(
            break_glass_grants.c.expires_at > active_at, break_glass_grants.c.revoked_at.is_(None)
        )
    with read_connection(engine) as conn:
        return [_from_row(r) for r in conn.execute(stmt)]


def revoke_grant(conn: Connection, grant_id: str, now: datetime) -> bool:
    """Close a grant early (the DPO's decision); True if it was open."""
    result = conn.execute(
        update(break_glass_grants)
        .where(break_glass_grants.c.id == grant_id, break_glass_grants.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1
