"""The one error of the record store, and the OperationOutcome that explains it.

Why a kind and not an HTTP status: the store is a service and knows no HTTP (the layering
rule); the REST face maps each :class:`Problem` to a status code. Every refusal names what is
wrong (invariant 7): a FHIR path in ``expression`` when the problem is inside a resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Problem(StrEnum):
    """What went wrong, in terms the face turns into a status code."""

    INVALID = "invalid"  # malformed request or resource (400)
    UNPROCESSABLE = "unprocessable"  # well-formed but breaks a rule (422)
    NOT_FOUND = "not-found"  # 404
    GONE = "gone"  # deleted (410)
    CONFLICT = "conflict"  # 409
    PRECONDITION = "precondition"  # If-Match, conditional with several matches (412)
    FORBIDDEN = "forbidden"  # 403
    TOO_LARGE = "too-large"  # 413
    TOO_COSTLY = "too-costly"  # a search the server will not run (400)
    NOT_SUPPORTED = "not-supported"  # 400 / 405 for an interaction we do not offer
    UNAVAILABLE = "unavailable"  # the journal (or database) cannot commit now (503)


_ISSUE_CODES = {
    Problem.INVALID: "invalid",
    Problem.UNPROCESSABLE: "processing",
    Problem.NOT_FOUND: "not-found",
    Problem.GONE: "deleted",
    Problem.CONFLICT: "conflict",
    Problem.PRECONDITION: "conflict",
    Problem.FORBIDDEN: "forbidden",
    Problem.TOO_LARGE: "too-costly",
    Problem.TOO_COSTLY: "too-costly",
    Problem.NOT_SUPPORTED: "not-supported",
    Problem.UNAVAILABLE: "transient",
}


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue: severity, FHIR issue type, message, FHIR paths."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class RecordError(Exception):
    """A request the store refuses; ``issues`` say why, one per problem found."""

    problem: Problem
    message: str
    expression: tuple[str, ...] = ()
    extra: list[Issue] = field(default_factory=list)
    code: str | None = None
    """FHIR issue type of the first issue (default: from ``problem``)."""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    @property
    def issues(self) -> list[Issue]:
        code = self.code or _ISSUE_CODES[self.problem]
        head = Issue(self.message, code, "error", self.expression)
        return [head, *self.extra]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def from_issues(problem: Problem, issues: list[Issue]) -> RecordError:
    """The error carrying ``issues`` (the first one is its message)."""
    first = issues[0]
    return RecordError(problem, first.diagnostics, first.expression, issues[1:], first.code)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource carrying ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(message: str) -> dict[str, Any]:
    """A success OperationOutcome (``Prefer: return=OperationOutcome``)."""
    return operation_outcome([Issue(message, "informational", "information")])
