"""Extraction: a resource's values for every search parameter of its type.

Why here and not in the store: extraction is pure (resource in, typed values out), so it
can be tested on every Synthea resource, benchmarked alone, and shared by the indexer (tokens
of a new version) and the post-filter (exact check of a decrypted candidate).

Robustness: a resource is client input. Extraction never raises on a resource that parsed as
JSON: an element of an unexpected shape is skipped, and a FHIRPath evaluation error only
empties that one parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from hdsvault.records.search.dates import parse_date
from hdsvault.records.search.definitions import SearchParam, search_parameters
from hdsvault.records.search.paths import FhirPathError, Item
from hdsvault.records.search.references import ID_RE, parse_reference, target_type
from hdsvault.records.search.values import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

__all__ = ["CLEAR_PARAMETERS", "INDEXED_TYPES", "extract", "interpret", "values_of"]

CLEAR_PARAMETERS = frozenset({"_id", "_lastUpdated"})
"""Kept in clear columns by the store (ids and timestamps are not health data)."""

_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, ArithmeticError, RecursionError)
"""Last-resort net: an element of a shape no interpreter expected empties that parameter,
identically for indexing and for the post-filter (fuzzed in test_search_robustness)."""

INDEXED_TYPES = frozenset({"token", "string", "date", "reference", "number", "quantity", "uri"})

ISO_4217 = "urn:iso:std:iso:4217"
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})

Interpreter = Callable[[str, Any, Mapping[str, Any], tuple[str, ...], list[Any]], None]


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def _items(x: Any) -> list[Any]:
    """An element that should be a list, as a list (a lone value is a list of one)."""
    if isinstance(x, list):
        return x
    return [] if x is None else [x]


def decimal_of(x: Any) -> Decimal | None:
    """A JSON number as an exact Decimal (floats through their shortest repr)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, Decimal):
        return x if x.is_finite() else None
    if isinstance(x, int):
        return Decimal(x)
    if isinstance(x, float):
        if x != x or x in (float("inf"), float("-inf")):
            return None
        return Decimal(repr(x))
    if isinstance(x, str):
        try:
            d = Decimal(x)
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


# ------------------------------------------------------------------ token


def _coding(c: Any, out: list[Any]) -> None:
    if not isinstance(c, dict):
        return
    system, code, display = _str(c.get("system")), _str(c.get("code")), _str(c.get("display"))
    if system or code or display:
        out.append(TokenValue(system, code, display))


def _token(t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]) -> None:
    if isinstance(v, dict):
        if t == "CodeableConcept" or "coding" in v:
            for c in _items(v.get("coding")):
                _coding(c, out)
            text = _str(v.get("text"))
            if text:
                out.append(TokenValue(None, None, text))
        elif t == "?" and "value" in v and v.get("system") in _CONTACT_SYSTEMS:
            _token("ContactPoint", v, root, bases, out)
        elif t == "Identifier" or (t not in ("Coding", "ContactPoint") and "value" in v):
            value = _str(v.get("value"))
            system = _str(v.get("system"))
            typ = v.get("type")
            of_type: list[tuple[str | None, str]] = []
            text = None
            if isinstance(typ, dict):
                text = _str(typ.get("text"))
                for c in _items(typ.get("coding")):
                    tcode = _str(c.get("code")) if isinstance(c, dict) else None
                    if tcode is not None:
                        of_type.append((_str(c.get("system")), tcode))
            if value or system:
                out.append(TokenValue(system, value, text, tuple(of_type)))
        elif t == "ContactPoint":
            value = _str(v.get("value"))
            if value:
                out.append(TokenValue(None, value))
        else:
            _coding(v, out)
    elif isinstance(v, bool):
        out.append(TokenValue(None, "true" if v else "false"))
    elif isinstance(v, str):
        if v:
            out.append(TokenValue(None, v))
    elif isinstance(v, (int, Decimal)):
        out.append(TokenValue(None, str(v)))


# ------------------------------------------------------------------ string

_NAME_PARTS = ("prefix", "given", "family", "suffix")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country")


def _parts(v: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    parts: list[str] = []
    for k in keys:
        x = v.get(k)
        if isinstance(x, list):
            parts += [p for p in x if isinstance(p, str) and p]
        elif isinstance(x, str) and x:
            parts.append(x)
    return parts


def _string(
    t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]
) -> None:
    if isinstance(v, str):
        if v:
            out.append(StringValue(v))
        return
    if not isinstance(v, dict):
        return
    if t == "HumanName" or (t not in ("Address",) and ("family" in v or "given" in v)):
        keys: tuple[str, ...] = _NAME_PARTS
    elif t == "Address" or "line" in v or "city" in v or "postalCode" in v:
        keys = _ADDRESS_PARTS
    else:
        return
    parts = _parts(v, keys)
    if parts:
        out.append(StringValue(" ".join(parts), exact=False, fuzzy=True))
        out.extend(StringValue(p, exact=True, fuzzy=False) for p in dict.fromkeys(parts))
    text = _str(v.get("text"))
    if text:
        out.append(StringValue(text))


# ------------------------------------------------------------------ date


def _range(text: Any) -> tuple[int, int] | None:
    return parse_date(text, True) if isinstance(text, str) else None


def _period(v: Mapping[str, Any]) -> DateValue | None:
    start, end = _range(v.get("start")), _range(v.get("end"))
    if start is None and end is None:
        return None
    return DateValue(start[0] if start else None, end[1] if end else None)


def _date(t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]) -> None:
    if isinstance(v, str):
        r = _range(v)
        if r is not None:
            out.append(DateValue(r[0], r[1]))
        return
    if not isinstance(v, dict):
        return
    if t == "Period" or (t == "?" and ("start" in v or "end" in v)):
        p = _period(v)
        if p is not None:
            out.append(p)
    elif t == "Timing" or "event" in v or "repeat" in v:
        lows: list[int | None] = []
        highs: list[int | None] = []
        for e in _items(v.get("event")):
            r = _range(e)
            if r is not None:
                lows.append(r[0])
                highs.append(r[1])
        repeat = v.get("repeat")
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict):
            p = _period(bounds)
            if p is not None:
                lows.append(p.low)
                highs.append(p.high)
        if lows:
            low = None if None in lows else min(x for x in lows if x is not None)
            high = None if None in highs else max(x for x in highs if x is not None)
            out.append(DateValue(low, high))


# ------------------------------------------------------------------ reference


def _reference(
    t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]
) -> None:
    if isinstance(v, str):
        if v:
            out.append(ReferenceValue(url=v, canonical=v.split("|", 1)[0]))
        return
    if not isinstance(v, dict):
        return
    rt, rid = v.get("resourceType"), v.get("id")
    if isinstance(rt, str) and isinstance(rid, str):  # a resource (Bundle.entry[0].resource)
        if ID_RE.fullmatch(rid):
            out.append(ReferenceValue(local=f"{rt}/{rid}", type=rt))
        return
    ident: TokenValue | None = None
    raw_ident = v.get("identifier")
    if isinstance(raw_ident, dict):
        found: list[Any] = []
        _token("Identifier", raw_ident, root, bases, found)
        ident = found[0] if found else None
    text = v.get("reference")
    parsed = parse_reference(text, bases) if isinstance(text, str) else None
    if parsed is None:
        if ident is not None:
            out.append(ReferenceValue(type=target_type(v, root), identifier=ident))
        return
    if parsed.contained is not None:
        out.append(ReferenceValue(type=target_type(v, root), identifier=ident))
        return
    out.append(
        ReferenceValue(
            local=parsed.local,
            url=parsed.url,
            canonical=parsed.canonical,
            type=parsed.type or _str(v.get("type")),
            identifier=ident,
        )
    )


# ------------------------------------------------------------------ number, quantity, uri


def _number(
    t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]
) -> None:
    if isinstance(v, dict):
        if "low" in v or "high" in v:
            lo, hi = _bound(v.get("low")), _bound(v.get("high"))
            if lo is not None or hi is not None:
                out.append(NumberValue(lo, hi))
        else:
            d = decimal_of(v.get("value"))
            if d is not None:
                out.append(NumberValue(d, d))
        return
    d = decimal_of(v)
    if d is not None:
        out.append(NumberValue(d, d))


def _bound(q: Any) -> Decimal | None:
    return decimal_of(q.get("value")) if isinstance(q, dict) else None


def _quantity(
    t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]
) -> None:
    if not isinstance(v, dict):
        d = decimal_of(v)
        if d is not None:
            out.append(QuantityValue(d, d))
        return
    if t == "SampledData" or "origin" in v:
        return
    if "low" in v or "high" in v:
        low, high = v.get("low"), v.get("high")
        lo, hi = _bound(low), _bound(high)
        if lo is None and hi is None:
            return
        unit_of = low if isinstance(low, dict) and lo is not None else high
        assert isinstance(unit_of, dict)
        out.append(
            QuantityValue(
                lo,
                hi,
                _str(unit_of.get("system")),
                _str(unit_of.get("code")),
                _str(unit_of.get("unit")),
            )
        )
        return
    d = decimal_of(v.get("value"))
    if d is None:
        return
    currency = _str(v.get("currency"))
    if t == "Money" or currency:
        out.append(QuantityValue(d, d, ISO_4217 if currency else None, currency))
        return
    out.append(QuantityValue(d, d, _str(v.get("system")), _str(v.get("code")), _str(v.get("unit"))))


def _uri(t: str, v: Any, root: Mapping[str, Any], bases: tuple[str, ...], out: list[Any]) -> None:
    if isinstance(v, str) and v:
        out.append(UriValue(v, v.split("|", 1)[0] if "|" in v else None))


INTERPRETERS: dict[str, Interpreter] = {
    "token": _token,
    "string": _string,
    "date": _date,
    "reference": _reference,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
}


def interpret(
    param_type: str,
    items: Iterable[Item],
    root: Mapping[str, Any],
    base_urls: tuple[str, ...] = (),
) -> list[IndexValue]:
    """Typed values of FHIRPath results for a parameter of type ``param_type``."""
    fn = INTERPRETERS.get(param_type)
    out: list[Any] = []
    if fn is None:
        return out
    for t, v in items:
        fn(t, v, root, base_urls, out)
    return out


def values_of(
    resource: Mapping[str, Any], param: SearchParam, base_urls: tuple[str, ...] = ()
) -> list[IndexValue]:
    """Values of one parameter in ``resource`` (empty if none, or if its path failed)."""
    if param.path is None:
        return []
    try:
        return interpret(param.type, param.path(resource), resource, base_urls)
    except (FhirPathError, *_SHAPE_ERRORS):
        return []


@cache
def _indexed(resource_type: str) -> tuple[tuple[str, SearchParam, Interpreter], ...]:
    return tuple(
        (code, p, INTERPRETERS[p.type])
        for code, p in sorted(search_parameters(resource_type).items())
        if p.type in INDEXED_TYPES and p.path is not None and code not in CLEAR_PARAMETERS
    )


def extract(
    resource: Mapping[str, Any], base_urls: Iterable[str] = ()
) -> dict[str, list[IndexValue]]:
    """Values of every indexed parameter of the resource's type, by parameter code.

    ``base_urls`` are this server's base URLs: absolute references to them are indexed as
    local ``Type/id``. Parameters without a value are absent from the result. ``_id`` and
    ``_lastUpdated`` are not extracted (clear columns); composite parameters are searched
    through their components' own indexes, so they have no values of their own.
    """
    rt = resource.get("resourceType")
    if not isinstance(rt, str):
        return {}
    bases = tuple(base_urls)
    out: dict[str, list[IndexValue]] = {}
    keys = resource.keys()
    for code, param, fn in _indexed(rt):
        path = param.path
        assert path is not None
        if path.first_keys is not None and path.first_keys.isdisjoint(keys):
            continue
        try:
            items = path.run(resource)
        except (FhirPathError, *_SHAPE_ERRORS):
            continue
        if not items:
            continue
        found: list[Any] = []
        try:
            for t, v in items:
                fn(t, v, resource, bases, found)
        except _SHAPE_ERRORS:
            continue  # same outcome as values_of(): the parameter has no value
        if found:
            out[code] = found
    return out
