"""Turning a request line into an access request, and a decision into readable text.

``hdsvault access explain --request "GET /fhir/750712184/Patient/123"`` and the DPO's explain
endpoint describe a request the way an operator writes it; this module maps it onto the
operation and resource the FHIR face would ask about (read, vread, search, history, create,
update, delete, ``$export``, ``AuditEvent``; ``/admin/...`` is administration).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from hdsvault.access.decision import AccessRequest, Decision, Operation
from hdsvault.access.tokens import Principal

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
_PATIENT_PARAMS = ("patient", "subject", "_id")


@dataclass(frozen=True)
class ParsedRequest:
    """What a request line asks for."""

    method: str
    path: str
    tenant: str | None
    operation: Operation
    resource_type: str | None = None
    resource_id: str | None = None
    patient: str | None = None

    def to_access_request(
        self,
        principal: Principal,
        tenant: str | None = None,
        labels: tuple[str, ...] = (),
        break_glass_reason: str | None = None,
        patient: str | None = None,
    ) -> AccessRequest:
        chosen = self.tenant or tenant or principal.tenant
        if chosen is None:
            raise ValueError("the request names no tenant: give one")
        return AccessRequest(
            principal=principal,
            operation=self.operation,
            tenant=chosen,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            patient=patient or self.patient,
            security_labels=labels,
            break_glass_reason=break_glass_reason,
        )


def parse_request_line(line: str) -> ParsedRequest:
    """``"GET /fhir/<finess>/Patient/123"`` -> a :class:`ParsedRequest`; ValueError if unclear."""
    method, _, target = line.strip().partition(" ")
    method = method.upper()
    if method not in _METHODS or not target.strip().startswith("/"):
        raise ValueError(
            f"expected 'METHOD /path', e.g. 'GET /fhir/750712184/Patient/123': {line!r}"
        )
    url = urlsplit(target.strip())
    parts = [p for p in url.path.split("/") if p]
    query = dict(parse_qsl(url.query))
    if parts and parts[0] == "admin":
        return ParsedRequest(method, url.path, None, Operation.ADMIN)
    if len(parts) < 2 or parts[0] != "fhir":
        raise ValueError(f"not a /fhir/<tenant>/... or /admin/... path: {url.path}")
    tenant, rest = parts[1], parts[2:]
    read = method in ("GET", "HEAD")
    if not rest or rest == ["metadata"]:
        return ParsedRequest(method, url.path, tenant, Operation.SEARCH)
    if rest[-1] == "$export":
        return ParsedRequest(
            method, url.path, tenant, Operation.EXPORT, rest[0] if len(rest) > 1 else None
        )
    rtype = rest[0]
    if rtype == "AuditEvent":
        return ParsedRequest(method, url.path, tenant, Operation.AUDIT, rtype)
    rid = rest[1] if len(rest) > 1 and not rest[1].startswith("_") else None
    patient = f"Patient/{rid}" if rtype == "Patient" and rid else None
    for param in _PATIENT_PARAMS:
        value = query.get(param)
        if patient is None and value:
            if param == "_id" and rtype == "Patient":
                patient = f"Patient/{value}"
            elif value.startswith("Patient/"):
                patient = value
    if len(rest) == 1 or rest[1] == "_search":
        op = Operation.SEARCH if read or (len(rest) > 1) else Operation.CREATE
        return ParsedRequest(method, url.path, tenant, op, rtype, None, patient)
    if rest[1] == "_history":
        return ParsedRequest(method, url.path, tenant, Operation.HISTORY, rtype, None, patient)
    if len(rest) == 2:
        op = {"PUT": Operation.UPDATE, "PATCH": Operation.UPDATE, "DELETE": Operation.DELETE}.get(
            method, Operation.READ
        )
        return ParsedRequest(method, url.path, tenant, op, rtype, rid, patient)
    if rest[2] == "_history":
        op = Operation.READ if len(rest) > 3 else Operation.HISTORY
        return ParsedRequest(method, url.path, tenant, op, rtype, rid, patient)
    # Patient/123/Observation (compartment) or Patient/123/$everything
    target_type = rest[2] if not rest[2].startswith("$") else rtype
    return ParsedRequest(method, url.path, tenant, Operation.SEARCH, target_type, None, patient)


def describe(request: AccessRequest, decision: Decision) -> list[str]:
    """The decision path as lines of text (used by the CLI)."""
    p = request.principal
    lines = [
        f"principal  {p.subject} role={p.role} tenant={p.tenant or '-'}"
        + (f" rpps={p.professional_id}" if p.professional_id else "")
        + (f" units={','.join(p.care_units)}" if p.care_units else ""),
        f"request    {request.operation} {request.resource_type or '-'}"
        + (f"/{request.resource_id}" if request.resource_id else "")
        + f" in {request.tenant}"
        + (f" patient={request.patient}" if request.patient else "")
        + (f" labels={','.join(request.security_labels)}" if request.security_labels else ""),
        f"policy     {decision.policy or '-'}",
        "path:",
    ]
    for step in decision.trace:
        mark = "→" if step.matched else "·"
        lines.append(f"  {mark} {step.rule:<34} {step.effect:<5} {step.note}")
    verdict = "ALLOW" if decision.allowed else "DENY"
    lines.append(f"decision   {verdict} by {decision.rule}: {decision.reason}")
    if decision.break_glass:
        lines.append("           break-the-glass: grant journaled at severity alert, DPO alerted")
    if decision.obligations:
        lines.append(f"obligations {', '.join(decision.obligations)}")
    return lines
