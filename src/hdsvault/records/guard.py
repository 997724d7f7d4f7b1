"""Access decisions for record services: ask ``access.authorize``, journal every refusal.

Why a guard per service call, before any data is touched: the decision seam
(``access.decision``) is where policy lives; the record store supplies the request
(operation, tenant, type, id, patient, security labels) and hands a refusal to
``access.journaling.journal_decision``, which records it (``access.denied``, detail sealed)
in the tenant's log — committed before the 403 leaves (invariant 2 covers attempts too).
"""

from __future__ import annotations

from collections.abc import Sequence

from hdsvault.access.context import RequestMeta, current_request_meta
from hdsvault.access.decision import AccessRequest, Decision, Operation, authorize
from hdsvault.access.journaling import journal_decision
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.model import Caller, Json
from hdsvault.records.store import RecordStore


def security_labels(resource: Json | None) -> tuple[str, ...]:
    """Codes of ``meta.security`` (confidentiality, sensitivity), for the policy."""
    meta = resource.get("meta") if resource else None
    labels = meta.get("security") if isinstance(meta, dict) else None
    if not isinstance(labels, list):
        return ()
    return tuple(
        str(c["code"]) for c in labels if isinstance(c, dict) and isinstance(c.get("code"), str)
    )


def allow(
    store: RecordStore,
    caller: Caller,
    operation: Operation,
    resource_type: str | None = None,
    *,
    resource_id: str | None = None,
    patient: str | None = None,
    labels: Sequence[str] = (),
) -> Decision:
    """The decision if allowed; otherwise journal the refusal and raise FORBIDDEN."""
    request = AccessRequest(
        principal=caller.principal,
        operation=operation,
        tenant=caller.tenant,
        resource_type=resource_type,
        patient=patient,
        security_labels=tuple(labels),
        resource_id=resource_id,
    )
    decision = authorize(request)
    if decision.allowed:
        return decision
    meta = current_request_meta() or RequestMeta(
        source_address=caller.source_address, request_id=caller.request_id
    )
    with store.engine.begin() as conn:
        journal_decision(conn, request, decision, meta)
    raise RecordError(
        Problem.FORBIDDEN,
        f"{operation.value} refused: {decision.reason} (rule {decision.rule})",
    )
