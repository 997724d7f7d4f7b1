"""The access-control engine of a running platform: policy + break-the-glass + alerts.

One :class:`AccessControl` per process, opened from the settings and installed as the decider
of :func:`hdsvault.access.decision.authorize` (the server does it at start, and removes it at
shutdown). It decides with the policy (or the baseline when ``[access] policy = "baseline"``)
and, when the policy denies with a *breakable* rule, applies break-the-glass:

- an active grant for (principal, patient) allows, rule ``break-glass.grant``;
- a declared reason (field of the request, or the ``X-Break-Glass-Reason`` header of the HTTP
  request being served) opens a grant, rule ``break-glass.declared``: the grant and its journal
  entry (severity ``alert``, purpose ``ETREAT``, reason sealed) commit in one short transaction
  of their own *before* :func:`authorize` returns, and the DPO alert is raised. Doing it here,
  rather than leaving it to each service, means no service can forget it. The one constraint:
  on SQLite, call :func:`authorize` outside a write transaction (the records service does), or
  the grant would wait for the caller's own write lock;
- otherwise the denial stands, and its reason says that break-the-glass is possible.

``decide(request, dry_run=True)`` (explain) never writes: it says a grant *would* open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from hdsvault.access import breakglass
from hdsvault.access.alerts import Alert, AlertSink, AlertSinks, LogAlertSink, WebhookAlertSink
from hdsvault.access.context import RequestMeta, current_request_meta, patient_context
from hdsvault.access.decision import (
    AccessRequest,
    Decision,
    RuleTrace,
    baseline,
    install_decider,
)
from hdsvault.access.journaling import BREAK_GLASS, access_entry, seal_detail
from hdsvault.access.policy import BUILTIN, Policy, load_policy
from hdsvault.access.settings import AccessSettings
from hdsvault.crypto.keyring import Keyring
from hdsvault.journal.entry import Outcome, Severity, format_time
from hdsvault.journal.service import record

log = structlog.get_logger("hdsvault.access")

BREAK_GLASS_USE = "break-glass:use"
"""Obligation: the access runs under an existing grant (journal it with purpose ETREAT)."""
ETREAT = "ETREAT"


@dataclass
class AccessControl:
    """Decides requests for one platform; see the module docstring."""

    engine: Engine
    keyring: Keyring
    policy: Policy | None
    break_glass_duration: timedelta
    alerts: AlertSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def open(
        cls,
        engine: Engine,
        keyring: Keyring,
        settings: AccessSettings,
        *,
        alerts: AlertSink | None = None,
    ) -> AccessControl:
        """Build from ``[access]``: load the policy, set up the alert sinks."""
        policy = None if settings.policy == "baseline" else load_policy(settings.policy or BUILTIN)
        if alerts is None:
            sinks: list[AlertSink] = [LogAlertSink()]
            if settings.alert_webhook_url:
                secret = settings.alert_webhook_secret
                sinks.append(
                    WebhookAlertSink(
                        settings.alert_webhook_url,
                        secret=secret.get_secret_value().encode() if secret else None,
                        timeout=settings.alert_webhook_timeout_seconds,
                    )
                )
            alerts = AlertSinks(*sinks)
        return cls(
            engine=engine,
            keyring=keyring,
            policy=policy,
            break_glass_duration=timedelta(seconds=settings.break_glass_seconds),
            alerts=alerts,
        )

    @property
    def policy_name(self) -> str:
        return self.policy.name if self.policy is not None else "baseline"

    def decide(self, request: AccessRequest, *, dry_run: bool = False) -> Decision:
        """The decision for ``request``; opens a break-the-glass grant unless ``dry_run``."""
        if self.policy is None:
            decision = baseline(request)
            return replace(decision, policy="baseline", trace=(_baseline_trace(decision),))
        decision = self.policy.evaluate(request, patient_context())
        if decision.allowed or not decision.breakable:
            return decision
        if not self.policy.may_break_glass(request):
            return _note(decision, "role/operation may not break the glass")
        assert request.patient is not None  # may_break_glass checked it
        now = self.clock()
        grant = breakglass.active_grant(
            self.engine, request.tenant, request.principal.subject, request.patient, now
        )
        if grant is not None:
            return Decision(
                True,
                "break-glass.grant",
                f"break-the-glass grant {grant.id} in force until "
                f"{grant.expires_at:%Y-%m-%dT%H:%M:%SZ} (normally denied by {decision.rule})",
                break_glass=True,
                obligations=(BREAK_GLASS_USE, f"grant:{grant.id}"),
                purpose_of_use=ETREAT,
                policy=decision.policy,
                trace=(*decision.trace, RuleTrace("break-glass.grant", True, "allow", grant.id)),
            )
        reason = request.break_glass_reason
        if reason is None:
            meta = current_request_meta()
            reason = meta.break_glass_reason if meta is not None else None
        if reason is None:
            return _note(
                decision, "break-the-glass possible: declare a reason (X-Break-Glass-Reason)"
            )
        try:
            text = breakglass.check_reason(reason)
        except breakglass.BreakGlassRefused as exc:
            return _note(decision, str(exc))
        if dry_run:
            return Decision(
                True,
                "break-glass.declared",
                f"a break-the-glass grant would open (normally denied by {decision.rule})",
                break_glass=True,
                purpose_of_use=ETREAT,
                policy=decision.policy,
                trace=(
                    *decision.trace,
                    RuleTrace("break-glass.declared", True, "allow", "reason declared (dry run)"),
                ),
            )
        return self._open_glass(request, decision, text)

    def _open_glass(self, request: AccessRequest, denied: Decision, reason: str) -> Decision:
        """Open, journal (alert severity, reason sealed) and announce a grant; commit first."""
        meta = current_request_meta() or RequestMeta()
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                grant = breakglass.create_grant(
                    conn, request, now=now, duration=self.break_glass_duration
                )
                entry = access_entry(
                    request,
                    meta,
                    BREAK_GLASS,
                    outcome=Outcome.SUCCESS,
                    severity=Severity.ALERT,
                    purpose=ETREAT,
                    time=now,
                    extra_objects=(f"BreakGlassGrant/{grant.id}",),
                )
                detail = {
                    "reason": reason,
                    "grant": grant.id,
                    "expires_at": format_time(grant.expires_at),
                    "denied_by": denied.rule,
                    "policy": denied.policy,
                }
                sealed = seal_detail(self.keyring, conn, entry, detail)
                if sealed is None:
                    raise breakglass.BreakGlassRefused("no tenant key to seal the reason")
                record(conn, sealed)
        except (breakglass.BreakGlassRefused, SQLAlchemyError) as exc:
            log.error("break_glass.failed", error=type(exc).__name__, message=str(exc)[:200])
            return _note(denied, "break-the-glass could not be recorded, so it is refused")
        self.alerts.emit(
            Alert(
                kind="break-glass",
                severity="alert",
                tenant=request.tenant,
                summary=f"{request.principal.subject} broke the glass on {grant.patient}",
                details={
                    "grant": grant.id,
                    "subject": grant.subject,
                    "professional_id": grant.professional_id,
                    "role": grant.role,
                    "patient": grant.patient,
                    "operation": str(request.operation),
                    "expires_at": format_time(grant.expires_at),
                    "denied_by": denied.rule,
                    "journal": {"log_id": sealed.log_id, "request_id": sealed.request_id},
                    "source_address": meta.source_address,
                },
                time=format_time(now),
            )
        )
        return Decision(
            True,
            "break-glass.declared",
            f"break-the-glass grant {grant.id} opened until "
            f"{grant.expires_at:%Y-%m-%dT%H:%M:%SZ} (normally denied by {denied.rule})",
            break_glass=True,
            obligations=(BREAK_GLASS_USE, f"grant:{grant.id}"),
            purpose_of_use=ETREAT,
            policy=denied.policy,
            trace=(
                *denied.trace,
                RuleTrace("break-glass.declared", True, "allow", f"grant {grant.id} opened"),
            ),
        )

    def close(self) -> None:
        self.alerts.close()


def _note(decision: Decision, note: str) -> Decision:
    return replace(
        decision,
        reason=f"{decision.reason} ({note})",
        trace=(*decision.trace, RuleTrace("break-glass", False, "-", note)),
    )


def _baseline_trace(decision: Decision) -> RuleTrace:
    return RuleTrace(decision.rule, True, "allow" if decision.allowed else "deny", decision.reason)


# -- the process-wide engine --------------------------------------------------------------------

_active: AccessControl | None = None


def install(control: AccessControl) -> None:
    """Make ``control`` decide every :func:`authorize` call of this process."""
    global _active
    _active = control
    install_decider(control.decide)


def uninstall(control: AccessControl) -> None:
    """Remove ``control`` if it is the one installed (back to the baseline), and close it."""
    global _active
    if _active is control:
        _active = None
        install_decider(None)
    control.close()


def active_control() -> AccessControl | None:
    return _active
