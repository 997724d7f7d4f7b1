"""The seam between services and policy: an access request, and the decision about it.

Every service asks :func:`authorize` before touching clinical data and passes the decision to
:func:`hdsvault.access.journaling.journal_decision` in the transaction of the act (denials and
break-the-glass are journaled there). The policy engine (``access.policy``) decides and says
which rule allowed or denied; it is installed by the server when ``[access] policy`` names one.
Until then, :func:`authorize` applies the built-in role baseline below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal


class Operation(StrEnum):
    """What a caller wants to do, in FHIR interaction terms."""

    READ = "read"  # read, vread
    SEARCH = "search"
    HISTORY = "history"
    CREATE = "create"
    UPDATE = "update"  # update, patch
    DELETE = "delete"
    EXPORT = "export"  # bulk export, reversibility
    AUDIT = "audit"  # read the journal (AuditEvent)
    ADMIN = "admin"  # tenants, keys, backups, replication, compliance


@dataclass(frozen=True)
class AccessRequest:
    """One request to decide: who, what operation, on which data."""

    principal: Principal
    operation: Operation
    tenant: str
    resource_type: str | None = None
    patient: str | None = None  # "Patient/<id>" the data belongs to, when known
    security_labels: tuple[str, ...] = ()  # codes from meta.security (e.g. "R", "V", "PSY")
    break_glass_reason: str | None = None
    resource_id: str | None = None  # the resource's id, when one resource is concerned
    # break_glass_reason None: the reason declared on the HTTP request (X-Break-Glass-Reason)


@dataclass(frozen=True)
class RuleTrace:
    """One step of a decision path: a rule looked at, whether it matched, and why (not)."""

    rule: str
    matched: bool
    effect: str  # "allow" | "deny" | "-" (informative step)
    note: str


@dataclass(frozen=True)
class Decision:
    """The answer, explainable: the rule that decided and a human reason."""

    allowed: bool
    rule: str
    reason: str
    break_glass: bool = False
    obligations: tuple[str, ...] = field(default_factory=tuple)
    purpose_of_use: str | None = None  # "TREAT", or "ETREAT" under break-the-glass
    policy: str | None = None  # "<policy id>@<version>" that decided
    trace: tuple[RuleTrace, ...] = field(default=(), compare=False)
    breakable: bool = field(default=False, compare=False)  # a denial break-the-glass may lift


CLINICAL_READERS = frozenset(
    {Role.CLINICIAN, Role.NURSE, Role.PHARMACIST, Role.LAB, Role.RADIOLOGY, Role.ADMISSION}
)
CLINICAL_WRITERS = frozenset(
    {Role.CLINICIAN, Role.NURSE, Role.LAB, Role.RADIOLOGY, Role.ADMISSION, Role.SERVICE}
)


def baseline(request: AccessRequest) -> Decision:
    """The built-in role baseline: tenant isolation and separation of duties.

    - a principal never acts outside its own tenant;
    - the platform operator administers but never reads or writes clinical data;
    - the DPO/auditor reads the journal, not the records;
    - clinical roles read; clinical roles and service accounts write.
    """
    p = request.principal
    if p.tenant is not None and p.tenant != request.tenant:
        return Decision(False, "baseline.tenant-isolation", "principal belongs to another tenant")
    op = request.operation
    if op is Operation.ADMIN:
        ok = p.role is Role.PLATFORM_OPERATOR
        return Decision(ok, "baseline.admin", "administration is the platform operator's")
    if op is Operation.AUDIT:
        ok = p.role in (Role.DPO, Role.PLATFORM_OPERATOR) and (
            p.role is Role.DPO or p.tenant is None
        )
        return Decision(ok, "baseline.audit", "the journal is read by the DPO/auditor")
    if p.role in (Role.PLATFORM_OPERATOR, Role.DPO):
        return Decision(
            False, "baseline.separation-of-duties", f"{p.role} never reads clinical data"
        )
    if p.tenant is None:
        return Decision(
            False, "baseline.tenant-required", "clinical access needs a tenant-bound principal"
        )
    if op in (Operation.READ, Operation.SEARCH, Operation.HISTORY):
        ok = p.role in CLINICAL_READERS or p.role is Role.SERVICE
        return Decision(
            ok, "baseline.clinical-read", f"role {p.role} {'may' if ok else 'may not'} read records"
        )
    if op is Operation.EXPORT:
        ok = p.role is Role.SERVICE
        return Decision(ok, "baseline.export", "bulk export is for service accounts")
    ok = p.role in CLINICAL_WRITERS
    return Decision(
        ok, "baseline.clinical-write", f"role {p.role} {'may' if ok else 'may not'} write records"
    )


Decider = Callable[[AccessRequest], Decision]
_decider: Decider | None = None


def install_decider(decider: Decider | None) -> Decider | None:
    """Make ``decider`` the one :func:`authorize` uses (None: the baseline); returns the previous.

    Called by :mod:`hdsvault.access.control` when a server or command opens the policy engine.
    """
    global _decider
    previous, _decider = _decider, decider
    return previous


def authorize(request: AccessRequest) -> Decision:
    """Decide ``request``. The policy engine replaces the baseline when configured."""
    decider = _decider
    if decider is None:
        return baseline(request)
    return decider(request)
