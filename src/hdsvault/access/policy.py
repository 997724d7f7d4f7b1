"""Access policy as data: ordered rules over role, care unit, relationship, sensitivity, operation.

A policy is a versioned file (TOML or JSON; the default ships in the package as
``default_policy.toml``; the format is documented in ``docs/security.md``). Rules are evaluated
in order and the first rule whose conditions all hold decides (like a firewall): this keeps
every decision explainable as "rule X matched because ...; the rules before it did not because
...". When no rule matches, the policy's default decides (deny).

Facts about the patient (relationship, patient-level labels) are asked of the registered
:class:`~hdsvault.access.context.PatientContext` lazily, only when a rule needs them.

Two-phase services: a request without a patient (a search, or the check a service makes
before it knows whose resource it fetched) is a *type-level* check. Relationship conditions
are then assumed to hold, and an allowing decision carries the obligation
``decide-per-patient``: the service asks again, with the patient and the resource's labels,
before it returns or changes data (the records service does, per resource).

Break-the-glass is part of the policy: which roles may declare a reason, for which operations.
A denial is *breakable* only if the rule that denied says so (sensitivity and "no
relationship" denials), never tenant isolation or separation of duties.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hdsvault.access.context import PatientContext
from hdsvault.access.decision import AccessRequest, Decision, Operation, RuleTrace
from hdsvault.access.roles import Role

FORMAT = 1
"""The policy file format this code reads (``[policy] format``)."""

DECIDE_PER_PATIENT = "decide-per-patient"
"""Obligation of a type-level decision (no patient given, relationship rules assumed to hold):
the service must ask again for each patient whose data it is about to return or change."""


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the rule and the field."""


class Relationship(StrEnum):
    """How the caller relates to the patient whose data is asked for."""

    CARE_TEAM = "care-team"  # the principal (subject or RPPS) is in the patient's care team
    UNIT_ENCOUNTER = "unit-encounter"  # the patient has an active encounter in one of its units
    ACTIVE_ENCOUNTER = "active-encounter"  # the patient has an active encounter somewhere
    NONE = "none"  # neither care team nor unit encounter


# -- file model (validated) ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Header(_Strict):
    id: str
    version: str
    format: int = FORMAT
    description: str = ""
    default_reason: str = "no rule allows this access"
    default_breakable: bool = True


class _BreakGlass(_Strict):
    roles: list[Role] = Field(default_factory=list)
    operations: list[Operation] = Field(
        default_factory=lambda: [Operation.READ, Operation.SEARCH, Operation.HISTORY]
    )

    @field_validator("roles")
    @classmethod
    def _never_operator(cls, v: list[Role]) -> list[Role]:
        if Role.PLATFORM_OPERATOR in v or Role.DPO in v:
            raise ValueError("platform-operator and dpo never break the glass")
        return v


class _Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    effect: Literal["allow", "deny"]
    reason: str
    roles: list[Role] | None = None
    operations: list[Operation] | None = None
    resource_types: list[str] | None = None
    principal: Literal["tenant", "platform"] | None = None
    tenant: Literal["own", "other"] | None = None
    care_units: list[str] | None = None
    patient: Literal["known", "absent"] | None = None
    relationship: list[Relationship] | None = None
    labels_any: list[str] | None = None
    labels_none: list[str] | None = None
    breakable: bool = False
    obligations: list[str] = Field(default_factory=list)


class _File(_Strict):
    policy: _Header
    break_glass: _BreakGlass = _BreakGlass()
    label_groups: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[_Rule]


# -- evaluation ---------------------------------------------------------------------------------


class Facts:
    """What is known about one request, computed at most once per fact (lazily)."""

    def __init__(self, request: AccessRequest, provider: PatientContext) -> None:
        self.request = request
        self._provider = provider
        self.assumed_relationship = False

    @cached_property
    def patient_labels(self) -> frozenset[str]:
        r = self.request
        if r.patient is None:
            return frozenset()
        return frozenset(x.upper() for x in self._provider.labels(r.tenant, r.patient))

    @cached_property
    def labels(self) -> frozenset[str]:
        """Resource labels (``meta.security``) and patient labels, upper-cased."""
        return frozenset(x.upper() for x in self.request.security_labels) | self.patient_labels

    @cached_property
    def relationships(self) -> frozenset[Relationship]:
        r, p = self.request, self.request.principal
        if r.patient is None:
            return frozenset()
        found: set[Relationship] = set()
        team = self._provider.care_team(r.tenant, r.patient)
        if p.subject in team or (p.professional_id is not None and p.professional_id in team):
            found.add(Relationship.CARE_TEAM)
        units = self._provider.care_units_with_active_encounter(r.tenant, r.patient)
        if units:
            found.add(Relationship.ACTIVE_ENCOUNTER)
        if units & set(p.care_units):
            found.add(Relationship.UNIT_ENCOUNTER)
        if not found & {Relationship.CARE_TEAM, Relationship.UNIT_ENCOUNTER}:
            found.add(Relationship.NONE)
        return frozenset(found)


@dataclass(frozen=True)
class PolicyRule:
    """One rule: conditions (all must hold; an absent condition always holds) and an effect."""

    id: str
    effect: Literal["allow", "deny"]
    reason: str
    roles: frozenset[Role] | None = None
    operations: frozenset[Operation] | None = None
    resource_types: frozenset[str] | None = None
    principal: Literal["tenant", "platform"] | None = None
    tenant: Literal["own", "other"] | None = None
    care_units: frozenset[str] | None = None
    patient: Literal["known", "absent"] | None = None
    relationship: frozenset[Relationship] | None = None
    labels_any: frozenset[str] | None = None
    labels_none: frozenset[str] | None = None
    breakable: bool = False
    obligations: tuple[str, ...] = ()

    def mismatch(self, facts: Facts) -> str | None:
        """Why this rule does not apply (the first failing condition), or None if it matches.

        Conditions are checked cheapest first; patient facts are asked only when needed.
        """
        r, p = facts.request, facts.request.principal
        if self.roles is not None and p.role not in self.roles:
            return f"role {p.role} not in {_show(self.roles)}"
        if self.operations is not None and r.operation not in self.operations:
            return f"operation {r.operation} not in {_show(self.operations)}"
        if self.resource_types is not None and r.resource_type not in self.resource_types:
            return f"resource type {r.resource_type} not in {_show(self.resource_types)}"
        if self.principal == "tenant" and p.tenant is None:
            return "principal is platform-wide, rule is for tenant principals"
        if self.principal == "platform" and p.tenant is not None:
            return "principal is tenant-bound, rule is for platform principals"
        if self.tenant is not None:
            own = p.tenant is None or p.tenant == r.tenant
            if (self.tenant == "own") != own:
                return f"request tenant is {'the principal’s own' if own else 'another tenant'}"
        if self.care_units is not None and not self.care_units & set(p.care_units):
            return f"care units {list(p.care_units) or '(none)'} not in {_show(self.care_units)}"
        if self.patient == "known" and r.patient is None:
            return "no patient concerned"
        if self.patient == "absent" and r.patient is not None:
            return "a patient is concerned"
        if self.labels_any is not None and not self.labels_any & facts.labels:
            return f"data carries none of {_show(self.labels_any)}"
        if self.labels_none is not None and self.labels_none & facts.labels:
            return f"data carries {_show(self.labels_none & facts.labels)}"
        if self.relationship is not None:
            if r.patient is None:
                facts.assumed_relationship = True  # type-level check: decided again per patient
                return None
            if not self.relationship & facts.relationships:
                return (
                    f"relationship {_show(facts.relationships)} not in {_show(self.relationship)}"
                )
        return None

    def describe_match(self, facts: Facts) -> str:
        parts = [f"role {facts.request.principal.role}", f"operation {facts.request.operation}"]
        if self.labels_any is not None:
            parts.append(f"labels {_show(self.labels_any & facts.labels)}")
        if self.relationship is not None and facts.request.patient is None:
            parts.append("relationship assumed: no patient yet, decide again per patient")
        elif self.relationship is not None:
            parts.append(f"relationship {_show(self.relationship & facts.relationships)}")
        if self.care_units is not None:
            parts.append(
                f"care unit {_show(self.care_units & set(facts.request.principal.care_units))}"
            )
        return "matched: " + ", ".join(parts)


def _show(values: frozenset[Any] | set[Any]) -> str:
    return "[" + ", ".join(sorted(str(v) for v in values)) + "]"


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy: rules in order, break-the-glass roles, label groups."""

    id: str
    version: str
    description: str
    rules: tuple[PolicyRule, ...]
    break_glass_roles: frozenset[Role]
    break_glass_operations: frozenset[Operation]
    label_groups: dict[str, frozenset[str]]
    default_reason: str
    default_breakable: bool
    source: str

    @property
    def name(self) -> str:
        return f"{self.id}@{self.version}"

    def evaluate(self, request: AccessRequest, provider: PatientContext) -> Decision:
        """The first matching rule decides; the trace lists every rule looked at."""
        facts = Facts(request, provider)
        trace: list[RuleTrace] = []
        for rule in self.rules:
            why_not = rule.mismatch(facts)
            if why_not is not None:
                trace.append(RuleTrace(rule.id, False, rule.effect, why_not))
                continue
            trace.append(RuleTrace(rule.id, True, rule.effect, rule.describe_match(facts)))
            allowed = rule.effect == "allow"
            obligations = rule.obligations
            if allowed and facts.assumed_relationship:
                obligations = (*obligations, DECIDE_PER_PATIENT)
            return Decision(
                allowed,
                rule.id,
                rule.reason,
                obligations=obligations,
                purpose_of_use=_purpose(request) if allowed else None,
                policy=self.name,
                trace=tuple(trace),
                breakable=not allowed and rule.breakable,
            )
        trace.append(RuleTrace("default", True, "deny", "no rule matched"))
        return Decision(
            False,
            "default",
            self.default_reason,
            policy=self.name,
            trace=tuple(trace),
            breakable=self.default_breakable,
        )

    def may_break_glass(self, request: AccessRequest) -> bool:
        """Whether the role and operation allow break-the-glass at all (the denial decides too)."""
        return (
            request.principal.role in self.break_glass_roles
            and request.operation in self.break_glass_operations
            and request.patient is not None
            and request.principal.tenant == request.tenant
        )


def _purpose(request: AccessRequest) -> str | None:
    if request.operation in (Operation.ADMIN, Operation.AUDIT):
        return None
    return "TREAT"


# -- loading ------------------------------------------------------------------------------------

BUILTIN = "builtin"


def load_policy(source: str | Path = BUILTIN) -> Policy:
    """Load and validate a policy: ``"builtin"`` (the packaged default) or a TOML/JSON file."""
    if str(source) == BUILTIN:
        text = resources.files("hdsvault.access").joinpath("default_policy.toml").read_text("utf-8")
        return parse_policy(text, "toml", "builtin:default_policy.toml")
    path = Path(source)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        return parse_policy(text, "json", str(path))
    return parse_policy(text, "toml", str(path))


def parse_policy(text: str, kind: Literal["toml", "json"], source: str) -> Policy:
    """Parse and check a policy text; every problem is a :class:`PolicyError` saying where."""
    try:
        data: dict[str, Any] = tomllib.loads(text) if kind == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{source}: not valid {kind.upper()}: {exc}") from None
    try:
        model = _File.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                raw = data.get("rules") or []
                rid = raw[loc[1]].get("id", "?") if loc[1] < len(raw) else "?"
                loc[1] = f"{loc[1]}({rid})"
            lines.append(f"  {'.'.join(str(x) for x in loc)}: {err['msg']}")
        raise PolicyError(f"{source}: invalid policy:\n" + "\n".join(lines)) from None
    if model.policy.format != FORMAT:
        raise PolicyError(
            f"{source}: policy format {model.policy.format}, this build reads {FORMAT}"
        )
    groups = {
        name: frozenset(code.upper() for code in codes)
        for name, codes in model.label_groups.items()
    }
    for name in groups:
        if name != name.lower():
            raise PolicyError(f"{source}: label group {name!r} must be lower-case")
    seen: set[str] = set()
    rules: list[PolicyRule] = []
    for r in model.rules:
        if r.id in seen:
            raise PolicyError(f"{source}: rule id {r.id!r} appears twice")
        seen.add(r.id)
        if r.breakable and r.effect != "deny":
            raise PolicyError(f"{source}: rule {r.id}: only deny rules can be breakable")
        rules.append(
            PolicyRule(
                id=r.id,
                effect=r.effect,
                reason=r.reason,
                roles=_set(r.roles),
                operations=_set(r.operations),
                resource_types=_set(r.resource_types),
                principal=r.principal,
                tenant=r.tenant,
                care_units=_set(r.care_units),
                patient=r.patient,
                relationship=_set(r.relationship),
                labels_any=_labels(r.labels_any, groups, source, r.id),
                labels_none=_labels(r.labels_none, groups, source, r.id),
                breakable=r.breakable,
                obligations=tuple(r.obligations),
            )
        )
    return Policy(
        id=model.policy.id,
        version=model.policy.version,
        description=model.policy.description,
        rules=tuple(rules),
        break_glass_roles=frozenset(model.break_glass.roles),
        break_glass_operations=frozenset(model.break_glass.operations),
        label_groups=groups,
        default_reason=model.policy.default_reason,
        default_breakable=model.policy.default_breakable,
        source=source,
    )


def _set(values: list[Any] | None) -> frozenset[Any] | None:
    return None if values is None else frozenset(values)


def _labels(
    values: list[str] | None, groups: dict[str, frozenset[str]], source: str, rule: str
) -> frozenset[str] | None:
    """Expand label groups (lower-case names) and upper-case codes into one set of codes."""
    if values is None:
        return None
    out: set[str] = set()
    for v in values:
        if v == v.lower() and not v.isdigit():
            if v not in groups:
                raise PolicyError(f"{source}: rule {rule}: unknown label group {v!r}")
            out |= groups[v]
        else:
            out.add(v.upper())
    return frozenset(out)
