"""What the policy needs to know beyond the request: the patient's situation and the request's.

*Patient context.* Whether a professional is in a patient's care team, whether the patient has
an encounter in the professional's unit, and which sensitivity labels the patient carries (VIP,
staff member, psychiatry...) are facts of the clinical record. The access layer does not read
the record (it sits below the records service); the records service supplies a
:class:`PatientContext` and registers it with :func:`register_patient_context`. Until one is
registered, :class:`NoPatientContext` answers "nothing known", so relationship rules never match
and the policy falls back to its denials (fail closed).

*Request metadata.* Where a request comes from (address, zone, request id) and a declared
break-the-glass reason are properties of the HTTP exchange. The perimeter middleware stores them
in a context variable for the duration of the request, so services and the journal can use them
without every face threading them through every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable


@runtime_checkable
class PatientContext(Protocol):
    """The facts about one patient the policy needs; all answers are sets of plain strings.

    ``patient`` is a reference ``"Patient/<id>"`` inside ``tenant``. Implementations must be
    thread-safe and cheap (one indexed query each): they are called on the decision path.
    """

    def care_units_with_active_encounter(self, tenant: str, patient: str) -> frozenset[str]:
        """Care-unit codes (e.g. ``"emergency"``) where the patient has an encounter now."""
        ...

    def care_team(self, tenant: str, patient: str) -> frozenset[str]:
        """Members of the patient's care team: principal subjects and/or RPPS numbers."""
        ...

    def labels(self, tenant: str, patient: str) -> frozenset[str]:
        """Patient-level sensitivity codes (e.g. ``"VIP"``, ``"EMP"``, ``"PSY"``, ``"R"``)."""
        ...


class NoPatientContext:
    """The default: nothing is known about any patient (relationship rules do not match)."""

    def care_units_with_active_encounter(self, tenant: str, patient: str) -> frozenset[str]:
        return frozenset()

    def care_team(self, tenant: str, patient: str) -> frozenset[str]:
        return frozenset()

    def labels(self, tenant: str, patient: str) -> frozenset[str]:
        return frozenset()


@dataclass
class StaticPatientContext:
    """Facts given as data: for ``access explain``, tests and small integrations.

    Keys are ``(tenant, "Patient/<id>")``.
    """

    units: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    teams: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    patient_labels: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def care_units_with_active_encounter(self, tenant: str, patient: str) -> frozenset[str]:
        return self.units.get((tenant, patient), frozenset())

    def care_team(self, tenant: str, patient: str) -> frozenset[str]:
        return self.teams.get((tenant, patient), frozenset())

    def labels(self, tenant: str, patient: str) -> frozenset[str]:
        return self.patient_labels.get((tenant, patient), frozenset())


_provider: PatientContext = NoPatientContext()


def register_patient_context(provider: PatientContext | None) -> PatientContext:
    """Install the provider the policy asks (None restores the no-op); returns the previous."""
    global _provider
    previous = _provider
    _provider = provider if provider is not None else NoPatientContext()
    return previous


def patient_context() -> PatientContext:
    """The registered provider."""
    return _provider


# -- request metadata ---------------------------------------------------------------------------


class RequestMeta(NamedTuple):
    """Where a request comes from, for the journal; and a reason declared to break the glass.

    A named tuple: built once per HTTP request on the hot path, it must cost next to nothing.
    """

    source_address: str | None = None
    request_id: str | None = None
    zone: str | None = None
    break_glass_reason: str | None = None


_request_meta: ContextVar[RequestMeta | None] = ContextVar("hdsvault_request_meta", default=None)


def bind_request_meta(meta: RequestMeta) -> Token[RequestMeta | None]:
    """Bind ``meta`` until :func:`unbind_request_meta` (the middleware's fast path)."""
    return _request_meta.set(meta)


def unbind_request_meta(token: Token[RequestMeta | None]) -> None:
    _request_meta.reset(token)


def current_request_meta() -> RequestMeta | None:
    """The metadata of the HTTP request being served, if any."""
    return _request_meta.get()


@contextmanager
def request_meta_scope(meta: RequestMeta) -> Iterator[None]:
    """Bind ``meta`` while the block runs (the perimeter middleware does it per request)."""
    token = _request_meta.set(meta)
    try:
        yield
    finally:
        _request_meta.reset(token)
