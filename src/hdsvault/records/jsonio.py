"""JSON in and out of the store: fast (orjson), strict, exact, and with errors that say where.

Why strict: a body that is not a JSON object, or that holds garbage such as ``NaN``, must be
refused with a clear OperationOutcome before anything is parsed further (invariant 7).

Why exact: a FHIR decimal's precision is significant (``0.010`` is not ``0.01``: a lab value
``1.50 mmol/L`` was measured to two decimals). orjson reads numbers as ``float``, and dumping
that float gives its shortest spelling (``1.5``). So a document whose decimals would not come
back as written (trailing zeros, exponents, more digits than a float keeps) is read a second
time with the standard library, and each such decimal becomes an :class:`ExactDecimal`: a
``float`` (searches and comparisons use its value) that remembers its literal, written back
verbatim by :func:`dumps`. Documents without such a literal — nearly all — take only the
orjson path; the check is one regular-expression scan of the bytes (see :data:`_SUSPECT_FRACTION`
for its two documented gaps).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from hdsvault.records.errors import Problem, RecordError


class ExactDecimal(float):
    """A JSON decimal and its literal (``1.50``), for values a ``float`` would respell."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __reduce__(self) -> tuple[type[ExactDecimal], tuple[str]]:
        return (ExactDecimal, (self.text,))

    def __copy__(self) -> ExactDecimal:
        return self  # immutable, like a float

    def __deepcopy__(self, memo: object) -> ExactDecimal:
        return self


_SUSPECT_FRACTION = re.compile(rb"\.([0-9]*0|[0-9]{16,}|[0-9]+[eE][+-]?[0-9]+)\s*[,}\]]")
"""The fraction of a decimal a float may respell: ending with ``0``, longer than a float
keeps, or followed by an exponent. Anchored on the ``.``, so the scan costs ~0.3 ms per MB (a
pattern tried at every digit, to catch ``1e3`` too, cost 5 ms per MB, paid by every read).
Not caught, so respelled with their value kept: an exponent without a fraction (``1e3`` ->
``1000.0``) and an integer part of 16 digits or more."""
_DIGITS = frozenset(b"-0123456789")


def _respelled(literal: bytes) -> bool:
    try:
        return orjson.dumps(float(literal)) != literal
    except ValueError:  # not a number after all (the shape was inside a string)
        return False


def _needs_exact_reading(raw: bytes) -> bool:
    """Whether a decimal of ``raw`` would not come back as written (Synthea's 73 MB: none)."""
    for match in _SUSPECT_FRACTION.finditer(raw):
        start = match.start()
        while start and raw[start - 1] in _DIGITS:
            start -= 1
        if _respelled(raw[start : match.start()] + b"." + match.group(1)):
            return True
    return False


def _decimal(literal: str) -> float:
    return ExactDecimal(literal) if _respelled(literal.encode()) else float(literal)


def _exact(data: bytes | str, value: Any) -> Any:
    """``value`` (orjson's reading of ``data``) or, if a decimal would be respelled, ``data``
    read again keeping the literal of each such decimal. orjson validated ``data`` already
    (UTF-8, no NaN, no lone surrogate): the two readings can only differ there. A string
    holding the same shape only costs the slower reading, which reads strings as strings."""
    raw = data.encode() if isinstance(data, str) else data
    if not _needs_exact_reading(raw):
        return value
    return json.loads(raw, parse_float=_decimal)


def parse_object(data: bytes | str, what: str = "body") -> dict[str, Any]:
    """Parse a JSON object, or raise INVALID naming the position of the error."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(Problem.INVALID, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RecordError(Problem.INVALID, f"{what} must be a JSON object")
    result: dict[str, Any] = _exact(data, value)
    return result


def _literal(value: Any) -> orjson.Fragment:
    if isinstance(value, ExactDecimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (the form sealed in the store and sent on the wire); decimals read
    by :func:`loads` or :func:`parse_object` are written as they were read."""
    return orjson.dumps(value, default=_literal)


def loads(data: bytes | str) -> Any:
    """Parse JSON (raises ``orjson.JSONDecodeError``), keeping decimals' literals."""
    return _exact(data, orjson.loads(data))
