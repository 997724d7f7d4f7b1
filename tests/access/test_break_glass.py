"""Break-the-glass: only with a reason, time-bounded, journaled at alert severity, DPO alerted.

Over HTTP, through a stand-in of the FHIR read route (the real FHIR router is another
engineer's; this route does what the seam asks of every service: authorize, journal the
denial, answer 403) so that the header, the middleware, authentication and the engine are the
real ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import HTTPException
from sqlalchemy import select

from hdsvault.access import control as access_control
from hdsvault.access.breakglass import list_grants
from hdsvault.access.context import StaticPatientContext, register_patient_context
from hdsvault.access.decision import AccessRequest, Operation, authorize
from hdsvault.access.journaling import journal_decision, open_detail
from hdsvault.access.roles import Role
from hdsvault.api.auth import CurrentPrincipal
from hdsvault.db.schema import journal_entries
from hdsvault.journal.store import row_to_entry
from hdsvault.platform import Platform

from .kit import TENANT, issuer_settings, local_token
from support.loopback import OidcIssuer, WebhookReceiver

PATIENT = "Patient/vip-1"
REASON = "Patient inconscient aux urgences, antécédents inconnus"


def _stand_in_fhir_read(app: Any, platform: Platform) -> None:
    @app.get("/fhir/{tenant}/Observation/{rid}")
    def read(tenant: str, rid: str, patient: str, principal: CurrentPrincipal) -> dict[str, Any]:
        request = AccessRequest(
            principal, Operation.READ, tenant, "Observation", patient, resource_id=rid
        )
        decision = authorize(request)
        if not decision.allowed:
            with platform.engine.begin() as conn:
                journal_decision(conn, request, decision)
            raise HTTPException(403, f"{decision.rule}: {decision.reason}")
        return {"rule": decision.rule, "purpose": decision.purpose_of_use}


def _entries(platform: Platform, event_type: str) -> list[Any]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(journal_entries).where(journal_entries.c.event_type == event_type)
        ).all()
    return [row_to_entry(r) for r in rows]


@pytest.fixture
def glass(make_platform, client_for, issuer: OidcIssuer, webhook: WebhookReceiver):  # type: ignore[no-untyped-def]
    platform = make_platform(
        access={
            "policy": "builtin",
            "alert_webhook_url": webhook.url,
            "alert_webhook_secret": "dpo-shared-secret",
        },
        oidc=issuer_settings(issuer),
    )
    client = client_for(platform)
    _stand_in_fhir_read(client.app, platform)
    client.app.router.routes.insert(0, client.app.router.routes.pop())  # before any other /fhir
    register_patient_context(
        StaticPatientContext(
            units={(TENANT, PATIENT): frozenset({"oncology"})},
            patient_labels={(TENANT, PATIENT): frozenset({"VIP"})},
        )
    )
    return platform, client


def test_break_glass_needs_a_reason_opens_a_grant_alerts_and_expires(
    glass, issuer, webhook
) -> None:  # type: ignore[no-untyped-def]
    platform, client = glass
    nurse = {"Authorization": f"Bearer {issuer.token(hdsvault_role='nurse')}"}
    url = f"/fhir/{TENANT}/Observation/o1?patient={PATIENT}"

    r = client.get(url, headers=nurse)
    assert r.status_code == 403 and "sens.vip-staff" in r.text and "X-Break-Glass-Reason" in r.text
    r = client.get(url, headers={**nurse, "X-Break-Glass-Reason": "urgent"})  # not a reason
    assert r.status_code == 403 and "at least" in r.text
    assert len(_entries(platform, "access.denied")) == 2

    from urllib.parse import quote

    r = client.get(url, headers={**nurse, "X-Break-Glass-Reason": quote(REASON)})
    assert r.status_code == 200, r.text
    assert r.json() == {"rule": "break-glass.declared", "purpose": "ETREAT"}

    # journaled at alert severity, purpose ETREAT, reason sealed (not in clear anywhere)
    [entry] = _entries(platform, "access.break-glass")
    assert entry.severity == "alert" and entry.purpose_of_use == "ETREAT"
    assert entry.patient == PATIENT and entry.actor.startswith("oidc:")
    assert entry.professional_id == "810002909371" and entry.source_address == "127.0.0.9"
    assert REASON.encode() not in (entry.detail_sealed or b"")
    with platform.engine.connect() as conn:
        assert open_detail(platform.keyring, conn, entry)["reason"] == REASON
        dump = "\n".join(str(tuple(r)) for r in conn.execute(select(journal_entries)))
    assert "inconscient" not in dump

    # the DPO's webhook got the alert, signed, without the reason
    [alert] = webhook.wait_for(1)
    assert alert["kind"] == "break-glass" and alert["tenant"] == TENANT
    assert (
        alert["details"]["patient"] == PATIENT and alert["details"]["denied_by"] == "sens.vip-staff"
    )
    assert "inconscient" not in str(alert)
    headers = webhook.received[0][0]
    assert {k.lower(): v for k, v in headers.items()}["x-hdsvault-signature"].startswith("sha256=")

    # while the grant lasts, no reason is needed; each access says ETREAT
    r = client.get(url, headers=nurse)
    assert r.status_code == 200 and r.json()["rule"] == "break-glass.grant"
    [grant] = list_grants(platform.engine, TENANT)
    assert grant.expires_at - grant.created_at == timedelta(hours=4)

    # after expiry: denied again
    control = access_control.active_control()
    assert control is not None
    control.clock = lambda: datetime.now(UTC) + timedelta(hours=4, seconds=1)
    r = client.get(url, headers=nurse)
    assert r.status_code == 403 and "sens.vip-staff" in r.text


def test_only_policy_roles_may_break_the_glass(glass) -> None:  # type: ignore[no-untyped-def]
    platform, client = glass
    url = f"/fhir/{TENANT}/Observation/o1?patient={PATIENT}"
    for role, rule in (
        (Role.LAB, "sens.vip-staff"),
        (Role.ADMISSION, "sens.vip-staff"),
        (Role.PLATFORM_OPERATOR, "sod.no-clinical-access"),
        (Role.DPO, "sod.no-clinical-access"),
    ):
        tenant = None if role is Role.PLATFORM_OPERATOR else TENANT
        headers = {
            "Authorization": f"Bearer {local_token(platform, role, tenant)}",
            "X-Break-Glass-Reason": "Emergency: patient unconscious",
        }
        r = client.get(url, headers=headers)
        assert r.status_code == 403 and rule in r.text, (role, r.text)
    assert list_grants(platform.engine, TENANT) == []
    assert _entries(platform, "access.break-glass") == []


def test_a_short_configured_duration_expires_for_real(make_edge_platform) -> None:  # type: ignore[no-untyped-def]
    import time

    from hdsvault.access.context import RequestMeta, request_meta_scope
    from hdsvault.access.tokens import Principal

    platform = make_edge_platform(access={"policy": "builtin", "break_glass_seconds": 1})
    control = access_control.AccessControl.open(
        platform.engine, platform.keyring, platform.settings.access
    )
    access_control.install(control)
    try:
        register_patient_context(
            StaticPatientContext(patient_labels={(TENANT, PATIENT): frozenset({"VIP"})})
        )
        dr = Principal("test:dr", TENANT, Role.CLINICIAN)
        req = AccessRequest(dr, Operation.READ, TENANT, "Observation", PATIENT)
        with request_meta_scope(RequestMeta(break_glass_reason=REASON)):
            assert authorize(req).rule == "break-glass.declared"
        assert authorize(req).rule == "break-glass.grant"
        time.sleep(1.2)
        assert not authorize(req).allowed
    finally:
        access_control.uninstall(control)
