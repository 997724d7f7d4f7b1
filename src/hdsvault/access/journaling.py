"""Journal entries of access decisions: denials, and break-the-glass grants.

Services call :func:`journal_decision` right after :func:`~hdsvault.access.decision.authorize`
with the connection of the transaction that does (or refuses) the act:

- a denial becomes an ``access.denied`` entry (category access, outcome 4 minor failure,
  severity warning) naming the principal, the patient and the resource;
- an allowed decision needs no entry of its own (None is returned): the service journals the
  access itself and uses ``decision.purpose_of_use`` (``ETREAT`` under break-the-glass). A
  break-the-glass grant is journaled by the engine when it opens it (severity ``alert``).

What could reveal something about the patient (the rule and reason of a denial name
sensitivity labels; a break-the-glass reason may be clinical) goes into ``detail_sealed``:
AEAD under the tenant's data key, context :func:`hdsvault.crypto.sealed.journal_detail_context`
(tenant, request id) like every other journal detail; :func:`open_detail` reads it back.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from hdsvault.access.context import RequestMeta, current_request_meta
from hdsvault.access.decision import AccessRequest, Decision, Operation
from hdsvault.crypto.errors import KekError
from hdsvault.crypto.keyring import Keyring
from hdsvault.crypto.sealed import journal_detail_context
from hdsvault.journal.entry import (
    PLATFORM_LOG,
    Action,
    Category,
    JournalEntry,
    Outcome,
    Severity,
)
from hdsvault.journal.service import record

_ACTIONS = {
    Operation.CREATE: Action.CREATE,
    Operation.UPDATE: Action.UPDATE,
    Operation.DELETE: Action.DELETE,
    Operation.ADMIN: Action.EXECUTE,
}
_FINESS = re.compile(r"^[0-9AB]{9}$")

DENIED = "access.denied"
BREAK_GLASS = "access.break-glass"


def access_entry(
    request: AccessRequest,
    meta: RequestMeta,
    event_type: str,
    *,
    outcome: Outcome,
    severity: Severity,
    purpose: str | None = None,
    time: datetime | None = None,
    extra_objects: tuple[str, ...] = (),
) -> JournalEntry:
    """An access entry for ``request`` in the tenant's log (request id always set)."""
    p = request.principal
    if request.resource_type and request.resource_id:
        objects: tuple[str, ...] = (f"{request.resource_type}/{request.resource_id}",)
    elif request.resource_type:
        objects = (request.resource_type,)
    else:
        objects = ()
    return JournalEntry(
        log_id=request.tenant if _FINESS.match(request.tenant) else PLATFORM_LOG,
        time=time or datetime.now(UTC),
        event_type=event_type,
        category=Category.ACCESS,
        action=_ACTIONS.get(request.operation, Action.READ),
        outcome=outcome,
        severity=severity,
        actor=p.subject[:255],
        actor_role=str(p.role),
        professional_id=p.professional_id,
        objects=(*extra_objects, *objects),
        patient=request.patient,
        purpose_of_use=purpose,
        source_address=meta.source_address,
        zone=meta.zone,
        request_id=meta.request_id or uuid.uuid4().hex,
    )


def seal_detail(
    keyring: Keyring | None, conn: Connection, entry: JournalEntry, detail: dict[str, Any]
) -> JournalEntry | None:
    """``entry`` with ``detail`` sealed under its tenant's key; None if the tenant has none."""
    if keyring is None or entry.log_id == PLATFORM_LOG or entry.request_id is None:
        return None
    try:
        keys = keyring.data_keys(conn, entry.log_id)
    except KekError:
        return None
    ctx = journal_detail_context(entry.log_id, entry.request_id)
    blob = keys.seal(json.dumps(detail, sort_keys=True).encode(), ctx)
    return replace(entry, detail_sealed=bytes(blob))


def open_detail(keyring: Keyring, conn: Connection, entry: JournalEntry) -> dict[str, Any]:
    """The clear detail of an entry (for the DPO; needs the tenant's keys)."""
    if entry.detail_sealed is None or entry.request_id is None:
        return {}
    keys = keyring.data_keys(conn, entry.log_id)
    ctx = journal_detail_context(entry.log_id, entry.request_id)
    data: dict[str, Any] = json.loads(keys.open(entry.detail_sealed, ctx))
    return data


def journal_decision(
    conn: Connection,
    request: AccessRequest,
    decision: Decision,
    request_meta: RequestMeta | None = None,
) -> JournalEntry | None:
    """Journal a denial in the transaction of ``conn``; returns the entry (None if allowed)."""
    if decision.allowed:
        return None
    from hdsvault.access.control import active_control  # the engine imports this module

    meta = request_meta or current_request_meta() or RequestMeta()
    control = active_control()
    keyring = control.keyring if control is not None and control.engine is conn.engine else None
    entry = access_entry(
        request, meta, DENIED, outcome=Outcome.MINOR_FAILURE, severity=Severity.WARNING
    )
    detail = {
        "rule": decision.rule,
        "reason": decision.reason,
        "policy": decision.policy,
        "operation": str(request.operation),
        "labels": sorted(request.security_labels),
    }
    sealed = seal_detail(keyring, conn, entry, detail)
    if sealed is None:
        # No tenant key at hand (unknown tenant, or no engine installed): keep the rule id only,
        # which names no sensitivity when no policy engine is installed (baseline rules).
        suffix = decision.rule if control is None else "unsealed"
        sealed = replace(entry, event_type=f"{DENIED}:{suffix}"[:64])
    record(conn, sealed)
    return sealed
