"""``hdsvault access``: explain decisions, check policies, review break-the-glass grants."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hdsvault.access import breakglass
from hdsvault.access.alerts import LogAlertSink
from hdsvault.access.context import StaticPatientContext, register_patient_context
from hdsvault.access.control import AccessControl
from hdsvault.access.explain import describe, parse_request_line
from hdsvault.access.identity import CredentialRejected, authenticate_credential
from hdsvault.access.oidc import OidcVerifier
from hdsvault.access.policy import PolicyError, load_policy
from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.cli.context import console, fail, opened_platform, operator_name
from hdsvault.journal.service import admin_entry, record

app = typer.Typer(
    help="Access control: explain decisions, policies, break-the-glass.", no_args_is_help=True
)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@app.command("explain")
def explain(
    request: Annotated[
        str, typer.Option("--request", help='e.g. "GET /fhir/750712184/Patient/123"')
    ],
    token: Annotated[str | None, typer.Option(help="A local token or an OIDC JWT.")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject (instead of --token).")] = None,
    role: Annotated[Role | None, typer.Option(help="Role (with --subject).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant of the principal (FINESS).")] = None,
    care_unit: Annotated[
        list[str] | None, typer.Option(help="Principal's care unit (repeat).")
    ] = None,
    rpps: Annotated[str | None, typer.Option(help="Principal's RPPS number.")] = None,
    labels: Annotated[str | None, typer.Option(help="meta.security codes, e.g. R,PSY")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient/<id> the data belongs to.")] = None,
    patient_labels: Annotated[
        str | None, typer.Option(help="Patient-level labels, e.g. VIP")
    ] = None,
    care_team: Annotated[
        bool, typer.Option(help="The principal is in the patient's care team.")
    ] = False,
    encounter_unit: Annotated[
        list[str] | None, typer.Option(help="Unit where the patient has an active encounter.")
    ] = None,
    break_glass: Annotated[
        str | None, typer.Option("--break-glass", help="Declared reason.")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Explain with this policy file instead.")
    ] = None,
) -> None:
    """Print the decision path of a request: rules looked at, the one that decided, the verdict.

    Nothing is read and no grant is opened (a declared reason shows what would happen).
    Relationship facts (--care-team, --encounter-unit, --patient-labels) stand in for the
    patient's record.
    """
    try:
        parsed = parse_request_line(request)
    except ValueError as exc:
        fail(str(exc), code=2)
    with opened_platform() as platform:
        if token is not None:
            verifier = OidcVerifier(platform.settings.oidc)
            try:
                principal = authenticate_credential(platform.engine, verifier, token)
            except CredentialRejected as exc:
                fail(f"the token does not authenticate: {exc.reason}")
            finally:
                verifier.close()
        elif subject is not None and role is not None:
            principal = Principal(
                subject=subject,
                tenant=tenant,
                role=role,
                professional_id=rpps,
                care_units=tuple(care_unit or ()),
                auth_method="local",
            )
        else:
            fail("give --token, or --subject with --role (and --tenant)", code=2)
        settings = platform.settings.access
        if policy is not None:
            settings = settings.model_copy(update={"policy": str(policy)})
        try:
            control = AccessControl.open(
                platform.engine, platform.keyring, settings, alerts=LogAlertSink()
            )
        except PolicyError as exc:
            fail(str(exc), code=2)
        try:
            access_request = parsed.to_access_request(
                principal, tenant, _split(labels), break_glass, patient
            )
        except ValueError as exc:
            fail(str(exc), code=2)
        previous = None
        if access_request.patient is not None:
            key = (access_request.tenant, access_request.patient)
            team = {principal.subject, *([rpps] if rpps else [])} if care_team else set()
            previous = register_patient_context(
                StaticPatientContext(
                    units={key: frozenset(encounter_unit or ())},
                    teams={key: frozenset(team)},
                    patient_labels={key: frozenset(_split(patient_labels))},
                )
            )
        try:
            decision = control.decide(access_request, dry_run=True)
        finally:
            if previous is not None:
                register_patient_context(previous)
            control.close()
    for line in describe(access_request, decision):
        print(line)  # plain: no wrapping, greppable
    raise typer.Exit(0 if decision.allowed else 1)


@app.command("policy")
def policy_show(
    path: Annotated[
        Path | None, typer.Argument(help="Policy file (default: the configured one).")
    ] = None,
) -> None:
    """Check a policy file and list its rules (exit 2 if it is invalid)."""
    from hdsvault.cli.context import settings

    source = str(path) if path is not None else settings().access.policy
    if source == "baseline":
        console.print('policy: built-in baseline (set [access] policy = "builtin" or a file)')
        return
    try:
        p = load_policy(source)
    except PolicyError as exc:
        fail(str(exc), code=2)
    console.print(f"policy {p.name} from {p.source}: {len(p.rules)} rules, valid")
    console.print(
        f"break-the-glass: roles {', '.join(sorted(p.break_glass_roles))}; "
        f"operations {', '.join(sorted(p.break_glass_operations))}"
    )
    table = Table("rule", "effect", "conditions", "reason")
    for r in p.rules:
        conditions = []
        for name in (
            "roles",
            "operations",
            "resource_types",
            "care_units",
            "relationship",
            "labels_any",
            "labels_none",
        ):
            value = getattr(r, name)
            if value is not None:
                conditions.append(f"{name}={','.join(sorted(str(v) for v in value))}")
        for name in ("principal", "tenant", "patient"):
            if getattr(r, name) is not None:
                conditions.append(f"{name}={getattr(r, name)}")
        effect = r.effect + (" (breakable)" if r.breakable else "")
        table.add_row(r.id, effect, " ".join(conditions), r.reason)
    console.print(table)


@app.command("grants")
def grants(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant (FINESS).")] = None,
    active: Annotated[bool, typer.Option(help="Only grants in force now.")] = False,
) -> None:
    """List break-the-glass grants, newest first."""
    now = datetime.now(UTC)
    with opened_platform() as platform:
        rows = breakglass.list_grants(platform.engine, tenant, active_at=now if active else None)
    table = Table("grant", "tenant", "subject", "role", "patient", "opened", "expires", "state")
    for g in rows:
        state = "revoked" if g.revoked_at else ("active" if g.active(now) else "expired")
        table.add_row(
            g.id,
            g.tenant,
            g.subject,
            g.role,
            g.patient,
            f"{g.created_at:%Y-%m-%d %H:%M}",
            f"{g.expires_at:%Y-%m-%d %H:%M}",
            state,
        )
    console.print(table)


@app.command("revoke-grant")
def revoke_grant(grant_id: str) -> None:
    """Close a break-the-glass grant before it expires (journaled)."""
    with opened_platform() as platform, platform.engine.begin() as conn:
        if not breakglass.revoke_grant(conn, grant_id, datetime.now(UTC)):
            fail(f"no open grant {grant_id}")
        record(
            conn,
            admin_entry(
                "access.break-glass.revoke",
                operator_name(),
                objects=(f"BreakGlassGrant/{grant_id}",),
                role=None,
            ),
        )
    console.print(f"[green]✓[/] grant {grant_id} revoked")
