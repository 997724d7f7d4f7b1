"""The CapabilityStatement, generated from what is routed and what search supports.

Why generated: a hand-written statement drifts from the code. Interactions come from the
router's table (:data:`hdsvault.api.fhir.routes.ROUTES`), search parameters from the same
R4 definitions the search engine runs on, restricted to the kinds it implements, so the
statement lists exactly what works.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

from hdsvault import __version__
from hdsvault.records.model import Json, storable_types
from hdsvault.records.search.definitions import search_parameters

_SUPPORTED_KINDS = (
    "token",
    "string",
    "date",
    "reference",
    "number",
    "quantity",
    "uri",
    "composite",
)
_RESULT_PARAMS = (
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_offset",
    "_format",
)
_FLAGS = {"conditional-update", "conditional-delete"}
_GENERIC = "{resource_type}"

_BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
_CANONICAL_OPERATIONS = {
    "export": f"{_BULK_DATA}/export",
    "patient-export": f"{_BULK_DATA}/patient-export",
}
"""Operations defined elsewhere: their published canonical URL (Bulk Data Access IG)."""


class RouteLike(Protocol):
    @property
    def level(self) -> str: ...
    @property
    def interaction(self) -> str: ...
    @property
    def path(self) -> str: ...


def _search_params(resource_type: str) -> list[Json]:
    out: list[Json] = [
        {"name": "_id", "type": "token"},
        {"name": "_lastUpdated", "type": "date"},
    ]
    for code, p in sorted(search_parameters(resource_type).items()):
        if code in ("_id", "_lastUpdated"):
            continue
        if p.type in _SUPPORTED_KINDS and (p.path is not None or p.type == "composite"):
            out.append(
                {
                    "name": code,
                    "type": p.type,
                    "definition": f"http://hl7.org/fhir/SearchParameter/{p.id}",
                }
            )
    return out


def capability_statement(base: str, routes: Sequence[Any]) -> Json:
    return _build(base, tuple((r.level, r.interaction, r.path) for r in routes))


@lru_cache(maxsize=32)
def _build(base: str, routes: tuple[tuple[str, str, str], ...]) -> Json:
    generic = {i for lvl, i, p in routes if _GENERIC in p and lvl in ("instance", "type")}
    interactions = sorted(generic - _FLAGS)
    resources: list[Json] = []
    for t in sorted(storable_types()):
        resources.append(
            {
                "type": t,
                "interaction": [{"code": i} for i in interactions],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": "create" in generic,
                "conditionalUpdate": "conditional-update" in generic,
                "conditionalDelete": "single"
                if "conditional-delete" in generic
                else "not-supported",
                "searchInclude": [f"{t}:*"],
                "searchParam": _search_params(t),
            }
        )
    audit = sorted({i for _, i, p in routes if "/AuditEvent" in p})
    if audit:
        resources.append(
            {
                "type": "AuditEvent",
                "documentation": "Read-only view of the tenant's journal, for the DPO/auditor.",
                "interaction": [{"code": i} for i in audit],
                "searchParam": [
                    {"name": "patient", "type": "reference"},
                    {"name": "agent", "type": "reference"},
                    {"name": "date", "type": "date"},
                    {"name": "action", "type": "token"},
                    {"name": "_count", "type": "number"},
                ],
            }
        )
    system = sorted({i for lvl, i, _ in routes if lvl == "system" and i != "capabilities"})
    operations = [
        {
            "name": i,
            "definition": _CANONICAL_OPERATIONS.get(i, f"{base}/OperationDefinition/{i}"),
        }
        for lvl, i, _ in routes
        if lvl == "operation"
    ]
    rest: Json = {
        "mode": "server",
        "documentation": "Tenant-scoped FHIR R4 store; bodies encrypted, search on blind indexes.",
        "security": {
            "cors": False,
            "description": "Bearer token (hdsvault API token) bound to this establishment.",
        },
        "resource": resources,
        "interaction": [{"code": i} for i in system],
        "searchParam": [
            {"name": n, "type": "special" if n != "_count" else "number"} for n in _RESULT_PARAMS
        ],
    }
    if operations:
        rest["operation"] = operations
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "kind": "instance",
        "software": {"name": "hdsvault", "version": __version__},
        "implementation": {"description": "hdsvault FHIR R4 store", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
