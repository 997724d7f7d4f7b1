"""The policy: the authorization matrix through ``authorize()``, explanations, the file format.

The matrix is written down as tables: one row per role, one column per case, ``A`` for allow
and ``D`` for deny. The patient facts of each case come from a static patient context, as the
records service's provider would supply them.
"""

from __future__ import annotations

import pytest

from hdsvault.access import control as access_control
from hdsvault.access.context import StaticPatientContext, register_patient_context
from hdsvault.access.decision import AccessRequest, Decision, Operation, authorize, baseline
from hdsvault.access.policy import PolicyError, load_policy, parse_policy
from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal

from .kit import OTHER_TENANT, TENANT

UNITS = {
    Role.CLINICIAN: ("cardiology",),
    Role.NURSE: ("cardiology",),
    Role.PHARMACIST: ("pharmacy",),
    Role.LAB: ("laboratory",),
    Role.RADIOLOGY: ("imaging",),
    Role.ADMISSION: ("admissions",),
}


def principal(role: Role) -> Principal:
    tenant = None if role is Role.PLATFORM_OPERATOR else TENANT
    return Principal(
        f"test:{role}", tenant, role, professional_id=f"rpps-{role}", care_units=UNITS.get(role, ())
    )


# Patient situations: (patient id, labels on the patient, units with an active encounter,
# principal in care team?, resource labels (meta.security), request tenant)
CASES: dict[str, tuple[str, frozenset[str], frozenset[str], bool, tuple[str, ...], str]] = {
    "unit": ("p-unit", frozenset(), frozenset({"cardiology"}), False, (), TENANT),
    "team": ("p-team", frozenset(), frozenset({"oncology"}), True, (), TENANT),
    "none": ("p-none", frozenset(), frozenset({"oncology"}), False, (), TENANT),
    "vip-team": ("p-vip-team", frozenset({"VIP"}), frozenset({"oncology"}), True, (), TENANT),
    "vip-unit": ("p-vip-unit", frozenset({"VIP"}), frozenset({"cardiology"}), False, (), TENANT),
    "staff-unit": ("p-staff", frozenset({"EMP"}), frozenset({"cardiology"}), False, (), TENANT),
    "psy-team": ("p-psy-team", frozenset({"PSY"}), frozenset({"psychiatry"}), True, (), TENANT),
    "psy-unit": ("p-psy-unit", frozenset(), frozenset({"cardiology"}), False, ("PSY",), TENANT),
    "R-unit": ("p-r", frozenset(), frozenset({"cardiology"}), False, ("R",), TENANT),
    "V-team": ("p-v-team", frozenset(), frozenset({"oncology"}), True, ("V",), TENANT),
    "V-unit": ("p-v-unit", frozenset(), frozenset({"cardiology"}), False, ("V",), TENANT),
    "other-tenant": ("p-unit", frozenset(), frozenset({"cardiology"}), False, (), OTHER_TENANT),
}

# Reading an Observation of the patient, per role and case.
READ_COLUMNS = list(CASES)
READ_MATRIX = """
role               unit team none vip-team vip-unit staff-unit psy-team psy-unit R-unit V-team V-unit other-tenant
clinician          A    A    D    A        D        D          A        D        A      A      D      D
nurse              A    A    D    A        D        D          A        D        A      A      D      D
pharmacist         A    A    A    D        D        D          D        D        D      D      D      D
lab                A    A    A    D        D        D          D        D        D      D      D      D
radiology          D    D    D    D        D        D          D        D        D      D      D      D
admission          D    D    D    D        D        D          D        D        D      D      D      D
dpo                D    D    D    D        D        D          D        D        D      D      D      D
platform-operator  D    D    D    D        D        D          D        D        D      D      D      D
service            A    A    A    A        A        A          A        A        A      A      A      D
"""

# Other operations, on the "unit" patient (search and export concern no single patient).
OPS = {
    "read-patient": (Operation.READ, "Patient", True),
    "create-obs": (Operation.CREATE, "Observation", True),
    "update-obs": (Operation.UPDATE, "Observation", True),
    "delete-obs": (Operation.DELETE, "Observation", True),
    "search-obs": (Operation.SEARCH, "Observation", False),
    "search-patient": (Operation.SEARCH, "Patient", False),
    "dispense": (Operation.CREATE, "MedicationDispense", True),
    "export": (Operation.EXPORT, None, False),
    "audit": (Operation.AUDIT, "AuditEvent", False),
    "admin": (Operation.ADMIN, None, False),
}
OPS_MATRIX = """
role               read-patient create-obs update-obs delete-obs search-obs search-patient dispense export audit admin
clinician          A            A          A          D          A          A              A        D      D     D
nurse              A            A          A          D          A          A              A        D      D     D
pharmacist         A            D          D          D          A          A              A        D      D     D
lab                A            A          A          D          A          A              D        D      D     D
radiology          A            D          D          D          D          A              D        D      D     D
admission          A            D          D          D          D          A              D        D      D     D
dpo                D            D          D          D          D          D              D        D      A     D
platform-operator  D            D          D          D          D          D              D        D      A     A
service            A            A          A          A          A          A              A        A      D     D
"""


def _table(text: str) -> tuple[list[str], dict[Role, list[bool]]]:
    lines = [line.split() for line in text.strip().splitlines()]
    header, rows = lines[0][1:], lines[1:]
    return header, {Role(r[0]): [c == "A" for c in r[1:]] for r in rows}


def _context() -> StaticPatientContext:
    ctx = StaticPatientContext()
    for pid, labels, units, in_team, _, _ in CASES.values():
        for tenant in (TENANT, OTHER_TENANT):
            key = (tenant, f"Patient/{pid}")
            ctx.units[key] = units
            ctx.patient_labels[key] = labels
            ctx.teams[key] = frozenset(
                {f"test:{r}" for r in Role} | {f"rpps-{r}" for r in Role} if in_team else ()
            )
    return ctx


@pytest.fixture
def engine(make_edge_platform):  # type: ignore[no-untyped-def]
    platform = make_edge_platform(access={"policy": "builtin"})
    control = access_control.AccessControl.open(
        platform.engine, platform.keyring, platform.settings.access
    )
    access_control.install(control)
    register_patient_context(_context())
    yield control
    access_control.uninstall(control)


def _explain(d: Decision) -> str:
    return f"{d.rule}: {d.reason}"


def test_read_matrix(engine) -> None:  # type: ignore[no-untyped-def]
    header, table = _table(READ_MATRIX)
    assert header == READ_COLUMNS and set(table) == set(Role)
    failures = []
    for role, expected in table.items():
        for case, allowed in zip(header, expected, strict=True):
            pid, _, _, _, labels, tenant = CASES[case]
            d = authorize(
                AccessRequest(
                    principal(role),
                    Operation.READ,
                    tenant,
                    "Observation",
                    f"Patient/{pid}",
                    labels,
                    resource_id="o1",
                )
            )
            if d.allowed != allowed:
                failures.append(
                    f"{role} read {case}: expected {'A' if allowed else 'D'}, got {_explain(d)}"
                )
            assert d.rule and d.reason and d.policy == "hdsvault-default@1.0.0"
    assert not failures, "\n".join(failures)


def test_operations_matrix(engine) -> None:  # type: ignore[no-untyped-def]
    header, table = _table(OPS_MATRIX)
    assert header == list(OPS) and set(table) == set(Role)
    failures = []
    for role, expected in table.items():
        for name, allowed in zip(header, expected, strict=True):
            op, rtype, with_patient = OPS[name]
            patient = "Patient/p-unit" if with_patient else None
            d = authorize(AccessRequest(principal(role), op, TENANT, rtype, patient))
            if d.allowed != allowed:
                failures.append(
                    f"{role} {name}: expected {'A' if allowed else 'D'}, got {_explain(d)}"
                )
    assert not failures, "\n".join(failures)


def test_platform_operator_never_reads_clinical_data(engine) -> None:  # type: ignore[no-untyped-def]
    """Separation of duties: every clinical operation, every case, even with a reason declared."""
    op_principal = principal(Role.PLATFORM_OPERATOR)
    bound = Principal("test:op-bound", TENANT, Role.PLATFORM_OPERATOR)
    clinical = [
        Operation.READ,
        Operation.SEARCH,
        Operation.HISTORY,
        Operation.CREATE,
        Operation.UPDATE,
        Operation.DELETE,
        Operation.EXPORT,
    ]
    for who in (op_principal, bound):
        for op in clinical:
            for pid, *_ in CASES.values():
                d = authorize(
                    AccessRequest(
                        who,
                        op,
                        TENANT,
                        "Observation",
                        f"Patient/{pid}",
                        break_glass_reason="I need to check the backup",
                    )
                )
                assert not d.allowed and d.rule == "sod.no-clinical-access", (op, pid, d)
    for admin_op in (Operation.ADMIN,):
        assert authorize(AccessRequest(op_principal, admin_op, TENANT)).allowed


def test_type_level_checks_carry_the_per_patient_obligation(engine) -> None:  # type: ignore[no-untyped-def]
    d = authorize(AccessRequest(principal(Role.CLINICIAN), Operation.READ, TENANT, "Observation"))
    assert d.allowed and "decide-per-patient" in d.obligations
    assert any("assumed" in step.note for step in d.trace)


def test_every_decision_names_its_rule_and_path(engine) -> None:  # type: ignore[no-untyped-def]
    d = authorize(
        AccessRequest(
            principal(Role.NURSE), Operation.READ, TENANT, "Observation", "Patient/p-vip-unit"
        )
    )
    assert not d.allowed and d.rule == "sens.vip-staff" and d.breakable
    matched = [t for t in d.trace if t.matched]
    assert matched[0].rule == "sens.vip-staff" and "VIP" in matched[0].note
    assert d.trace[0].rule == "tenant-isolation"
    assert "X-Break-Glass-Reason" in d.reason


def test_no_patient_context_fails_closed(engine) -> None:  # type: ignore[no-untyped-def]
    register_patient_context(None)
    d = authorize(
        AccessRequest(
            principal(Role.CLINICIAN), Operation.READ, TENANT, "Observation", "Patient/p-unit"
        )
    )
    assert not d.allowed and d.rule == "default"


def test_baseline_when_no_engine_is_installed() -> None:
    req = AccessRequest(
        principal(Role.CLINICIAN), Operation.READ, TENANT, "Observation", "Patient/x"
    )
    assert authorize(req) == baseline(req)


POLICY = """
[policy]
id = "t"
version = "2"
[label_groups]
vip = ["VIP"]
[[rules]]
id = "r1"
effect = "allow"
roles = ["clinician"]
labels_none = ["vip"]
reason = "ok"
"""


def test_policy_file_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = parse_policy(POLICY, "toml", "t.toml")
    assert p.name == "t@2" and p.rules[0].labels_none == frozenset({"VIP"})
    json_file = tmp_path / "p.json"
    json_file.write_text('{"policy": {"id": "j", "version": "1"}, "rules": []}')
    assert load_policy(json_file).name == "j@1"
    assert load_policy("builtin").name.startswith("hdsvault-default@")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('roles = ["clinician"]', 'roles = ["surgeon"]'), "rules.0(r1).roles"),
        (('labels_none = ["vip"]', 'labels_none = ["celebrity"]'), "unknown label group"),
        (('effect = "allow"', 'effect = "maybe"'), "effect"),
        (('reason = "ok"', 'reason = "ok"\nbreakable = true'), "only deny rules"),
        (('id = "t"', 'id = "t"\nformat = 9'), "format 9"),
        (
            ("[label_groups]", '[break_glass]\nroles = ["platform-operator"]\n[label_groups]'),
            "never break",
        ),
        (('reason = "ok"', 'reason = "ok"\nunknown = 1'), "unknown"),
    ],
)
def test_invalid_policies_are_clear_errors(change: tuple[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(POLICY.replace(*change), "toml", "t.toml")
