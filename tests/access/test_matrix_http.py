"""The authorization matrix over the real HTTP API.

- Administration and audit endpoints (``/admin/access/...``): every role, expected answer
  written down.
- FHIR reads (``/fhir/{finess}/Observation/{id}``): the same role x sensitivity table as
  ``test_policy.READ_MATRIX``, through the real FHIR router, the records service and its
  guard. Skipped while the FHIR router is not mounted in the application (it is built
  concurrently); the table through ``authorize()`` runs meanwhile in test_policy.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from hdsvault.access.context import StaticPatientContext, register_patient_context
from hdsvault.access.roles import Role
from hdsvault.db.schema import journal_entries

from .kit import TENANT, issuer_settings, local_token
from .test_policy import CASES, READ_MATRIX, UNITS, _table
from support.loopback import OidcIssuer

# endpoint -> roles allowed (all others: 403)
ADMIN_MATRIX: dict[str, set[Role]] = {
    "GET /admin/access/policy": {Role.PLATFORM_OPERATOR},
    f"GET /admin/access/{TENANT}/break-glass": {Role.DPO, Role.PLATFORM_OPERATOR},
    f"POST /admin/access/{TENANT}/explain": {Role.DPO, Role.PLATFORM_OPERATOR},
}


def _headers(platform, issuer: OidcIssuer, role: Role) -> dict[str, str]:  # type: ignore[no-untyped-def]
    if role is Role.PLATFORM_OPERATOR:
        return {"Authorization": f"Bearer {local_token(platform, role, None)}"}
    token = issuer.token(
        hdsvault_role=str(role),
        SubjectNameID=f"rpps-{role}",
        sub=f"sub-{role}",
        care_units=list(UNITS.get(role, ())),
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(make_platform, client_for, issuer: OidcIssuer):  # type: ignore[no-untyped-def]
    platform = make_platform(
        access={"policy": "builtin"},
        oidc=issuer_settings(issuer),
        perimeter={"per_identity": {"rate": 1000, "burst": 1000}},
    )
    return platform, client_for(platform)


def test_admin_and_audit_endpoints_matrix(api, issuer: OidcIssuer) -> None:  # type: ignore[no-untyped-def]
    platform, client = api
    explain = {"subject": "x", "role": "nurse", "request": f"GET /fhir/{TENANT}/Patient/1"}
    failures = []
    for endpoint, allowed in ADMIN_MATRIX.items():
        method, path = endpoint.split(" ")
        for role in Role:
            kw: dict[str, Any] = {"headers": _headers(platform, issuer, role)}
            if method == "POST":
                kw["json"] = explain
            r = client.request(method, path, **kw)
            expected = 200 if role in allowed else 403
            if r.status_code != expected:
                failures.append(
                    f"{role} {endpoint}: expected {expected}, got {r.status_code} {r.text}"
                )
    assert not failures, "\n".join(failures)
    with platform.engine.connect() as conn:
        denied = (
            conn.execute(
                select(journal_entries.c.detail_sealed).where(
                    journal_entries.c.event_type == "access.denied"
                )
            )
            .scalars()
            .all()
        )
    assert len(denied) == sum(len(Role) - len(a) for a in ADMIN_MATRIX.values())
    assert all(denied)  # every denial detail sealed under the tenant key


def test_fhir_read_matrix_over_http(api, issuer: OidcIssuer) -> None:  # type: ignore[no-untyped-def]
    platform, client = api
    service = {
        "Authorization": f"Bearer {local_token(platform, Role.SERVICE)}",
        "content-type": "application/fhir+json",
    }
    ctx = StaticPatientContext()
    observations: dict[str, str] = {}
    for case, (_, labels, units, in_team, resource_labels, _) in CASES.items():
        r = client.post(
            f"/fhir/{TENANT}/Patient",
            headers=service,
            json={"resourceType": "Patient", "name": [{"family": case}]},
        )
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        key = (TENANT, f"Patient/{pid}")
        ctx.units[key], ctx.patient_labels[key] = units, labels
        ctx.teams[key] = frozenset(f"rpps-{role}" for role in Role) if in_team else frozenset()
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "t"},
            "subject": {"reference": f"Patient/{pid}"},
            "meta": {"security": [{"code": c} for c in resource_labels]},
        }
        r = client.post(f"/fhir/{TENANT}/Observation", headers=service, json=obs)
        assert r.status_code == 201, r.text
        observations[case] = r.json()["id"]
    register_patient_context(ctx)
    header, table = _table(READ_MATRIX)
    failures = []
    for role, expected in table.items():
        for case, allowed in zip(header, expected, strict=True):
            tenant = CASES[case][5]
            r = client.get(
                f"/fhir/{tenant}/Observation/{observations[case]}",
                headers=_headers(platform, issuer, role),
            )
            ok = r.status_code == 200
            if ok != allowed and not (case == "other-tenant" and r.status_code in (403, 404)):
                failures.append(
                    f"{role} {case}: expected {'A' if allowed else 'D'}, got {r.status_code}"
                )
    assert not failures, "\n".join(failures)
