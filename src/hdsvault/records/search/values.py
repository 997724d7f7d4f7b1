"""Typed index values: what a resource says for one search parameter, already interpreted.

Why a value layer between FHIRPath and tokens: the same interpreted values feed both the
index (:mod:`.tokens` turns them into keyed-token inputs) and the exact post-filter
(:mod:`.matching` compares them with a parsed search), so the two can never disagree on
what "the birth date of this patient" or "the code of this observation" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "DateValue",
    "IndexValue",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "StringValue",
    "TokenValue",
    "UriValue",
]


@dataclass(frozen=True, slots=True)
class TokenValue:
    """A coded value: Coding, CodeableConcept coding, Identifier, ContactPoint, code, boolean.

    ``system`` None means "no system" (what ``|code`` searches for). ``text`` is a Coding's
    ``display``, a CodeableConcept's ``text`` or an Identifier's ``type.text`` (for
    ``:text``); a CodeableConcept's text alone is a TokenValue with no code. ``of_type`` holds
    an Identifier's type codings (for ``:of-type``).
    """

    system: str | None
    code: str | None
    text: str | None = None
    of_type: tuple[tuple[str | None, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string to search: ``fuzzy`` for default/``:contains`` search, ``exact`` for ``:exact``.

    A HumanName gives one fuzzy value (its parts joined, so ``john smi`` works) and one exact
    value per part; a plain string is both.
    """

    text: str
    exact: bool = True
    fuzzy: bool = True


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date range ``[low, high)`` in UTC microseconds; None is an open end."""

    low: int | None
    high: int | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference: ``local`` is ``Type/id`` on this server, ``url`` an absolute or canonical
    URL elsewhere, ``identifier`` a logical reference (for ``:identifier``)."""

    local: str | None = None
    url: str | None = None
    canonical: str | None = None
    type: str | None = None
    identifier: TokenValue | None = None


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number, or a range ``[low, high]`` of numbers (None = unbounded)."""

    low: Decimal | None
    high: Decimal | None


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """A quantity (or Range of quantities, or Money) with its unit."""

    low: Decimal | None
    high: Decimal | None
    system: str | None = None
    code: str | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    """A URI, compared exactly; ``canonical`` without ``|version`` when it had one."""

    uri: str
    canonical: str | None = None


IndexValue = (
    TokenValue | StringValue | DateValue | ReferenceValue | NumberValue | QuantityValue | UriValue
)
