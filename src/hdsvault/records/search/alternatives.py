"""One search value -> candidate token groups + the exact test (per parameter type).

Why both in one object: the token groups select candidates in the database (a superset),
the test decides on the decrypted candidate (exact FHIR semantics); building them from the
same parsed value, side by side, is what keeps "no false negative" provable per type.

An :class:`Alternative` matches a resource's candidate row when, for *every* group, the row
has *at least one* token of the group (a conjunction of disjunctions): one group for a code,
one group with all covering buckets for a date range, one group per word for a string, one
per trigram for ``:contains``, a value group and a unit group for a quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hdsvault.records.search.buckets import date_cover, number_cover
from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.prefixes import (
    date_matches,
    date_regions,
    number_matches,
    number_regions,
    parse_date_query,
    parse_number_query,
    split_prefix,
)
from hdsvault.records.search.references import ID_RE, parse_reference
from hdsvault.records.search.text import (
    PREFIX_CAP,
    matches_contains,
    matches_start,
    normalise,
    searchable,
    trigrams,
    words,
)
from hdsvault.records.search.tokens import (
    IndexOptions,
    TokenInput,
    bucket_inputs,
    of_type_input,
)
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

__all__ = [
    "Alternative",
    "date_alternative",
    "number_alternative",
    "quantity_alternative",
    "reference_alternative",
    "reference_identifier_alternative",
    "split_escaped",
    "string_alternative",
    "token_alternative",
    "unescape",
    "uri_alternative",
]

Test = Callable[[Sequence[IndexValue]], bool]


@dataclass(frozen=True)
class Alternative:
    """One OR-alternative of a parameter (``code=a,b`` has two)."""

    raw: str
    groups: tuple[frozenset[TokenInput], ...]
    test: Test
    prefix: str | None = None


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash; escapes are kept (see :func:`unescape`)."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def unescape(text: str) -> str:
    """Undo FHIR search escapes ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ",|$\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _group(items: Sequence[TokenInput]) -> frozenset[TokenInput]:
    return frozenset(items)


# ------------------------------------------------------------------ token


def token_alternative(
    name: str, field: str, raw: str, modifier: str | None, options: IndexOptions
) -> Alternative:
    """``[system]|[code]``, ``code``; ``:text`` words; ``:of-type`` ``system|code|value``."""
    if modifier == "text":
        if not options.token_text:
            raise SearchError(name, ":text is not enabled on this server")
        wanted = words(searchable(unescape(raw)))
        if not wanted:
            raise SearchError(name, "the text must contain a letter or a digit")
        need = set(wanted)

        def test_text(values: Sequence[IndexValue]) -> bool:
            return any(
                isinstance(v, TokenValue)
                and v.text is not None
                and need <= set(words(searchable(v.text)))
                for v in values
            )

        groups = tuple(_group([TokenInput(field + ":text", w)]) for w in dict.fromkeys(wanted))
        return Alternative(raw, groups, test_text)
    parts = [unescape(p) for p in split_escaped(raw, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SearchError(name, "expected type-system|type-code|value")
        ts, tc, value = parts[0] or None, parts[1], parts[2]

        def test_of_type(values: Sequence[IndexValue]) -> bool:
            return any(
                isinstance(v, TokenValue) and v.code == value and (ts, tc) in v.of_type
                for v in values
            )

        key = TokenInput(field + ":of-type", of_type_input(ts, tc, value))
        return Alternative(raw, (_group([key]),), test_of_type)
    if len(parts) > 2:
        raise SearchError(name, f"too many '|' in {raw!r} (expected [system]|[code])")
    system: str | None = parts[0] or None if len(parts) == 2 else None
    code: str | None = parts[-1] or None
    if len(parts) == 1:
        kind = "any"
    elif system is None:
        kind = "nosys"
    else:
        kind = "sysonly" if code is None else "both"
    if code is None and system is None:
        raise SearchError(name, "empty code: give a code, system| or system|code")
    if kind == "any":
        key = TokenInput(field, f"c|{code}")
    elif kind == "nosys":
        key = TokenInput(field, f"n|{code}")
    elif kind == "sysonly":
        key = TokenInput(field, f"S|{system}")
    else:
        assert system is not None
        key = TokenInput(field, f"s{len(system)}|{system}|{code}")

    def test(values: Sequence[IndexValue]) -> bool:
        for v in values:
            if not isinstance(v, TokenValue) or (v.code is None and kind != "sysonly"):
                continue
            if kind == "any" and v.code == code:
                return True
            if kind == "nosys" and v.code == code and v.system is None:
                return True
            if kind == "sysonly" and v.system == system:
                return True
            if kind == "both" and v.system == system and v.code == code:
                return True
        return False

    return Alternative(raw, (_group([key]),), test)


# ------------------------------------------------------------------ string


def string_alternative(
    name: str, field: str, raw: str, modifier: str | None, options: IndexOptions
) -> Alternative:
    """Default: case/accent-insensitive start of the value or of one of its words."""
    term = unescape(raw)
    if modifier == "exact":

        def test_exact(values: Sequence[IndexValue]) -> bool:
            return any(isinstance(v, StringValue) and v.exact and v.text == term for v in values)

        return Alternative(raw, (_group([TokenInput(field + ":exact", term)]),), test_exact)
    norm = normalise(term)
    if modifier == "contains":
        if not options.string_contains:
            raise SearchError(name, ":contains is not enabled on this server")
        if len(norm) < 3:
            raise SearchError(name, ":contains needs at least 3 characters")
        if len(norm) > 64:
            raise SearchError(name, ":contains is limited to 64 characters")

        def test_contains(values: Sequence[IndexValue]) -> bool:
            return any(
                isinstance(v, StringValue)
                and v.fuzzy
                and matches_contains(searchable(v.text), norm)
                for v in values
            )

        groups = tuple(_group([TokenInput(field + ":contains", t)]) for t in sorted(trigrams(norm)))
        return Alternative(raw, groups, test_contains)
    wanted = words(norm)
    if not wanted:
        raise SearchError(name, "the text must contain a letter or a digit")

    def test_start(values: Sequence[IndexValue]) -> bool:
        return any(
            isinstance(v, StringValue) and v.fuzzy and matches_start(searchable(v.text), norm)
            for v in values
        )

    groups = tuple(_group([TokenInput(field, w[:PREFIX_CAP])]) for w in dict.fromkeys(wanted))
    return Alternative(raw, groups, test_start)


# ------------------------------------------------------------------ date


def date_alternative(name: str, field: str, raw: str, now: int) -> Alternative:
    q = parse_date_query(name, raw, now)
    cover = date_cover(date_regions(q), open_values=q.prefix != "eq")

    def test(values: Sequence[IndexValue]) -> bool:
        return any(isinstance(v, DateValue) and date_matches(q, v.low, v.high) for v in values)

    group = frozenset(bucket_inputs(field, cover, "date"))
    return Alternative(raw, (group,), test, q.prefix)


# ------------------------------------------------------------------ number, quantity


def number_alternative(name: str, field: str, raw: str) -> Alternative:
    q = parse_number_query(name, raw)
    group = frozenset(bucket_inputs(field, number_cover(number_regions(q)), "number"))

    def test(values: Sequence[IndexValue]) -> bool:
        return any(
            isinstance(v, (NumberValue, QuantityValue)) and number_matches(q, v.low, v.high)
            for v in values
        )

    return Alternative(raw, (group,), test, q.prefix)


def quantity_alternative(name: str, field: str, raw: str) -> Alternative:
    """``[prefix]number``, ``[prefix]number|system|code`` or ``[prefix]number||code``."""
    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise SearchError(name, "expected [prefix]number or [prefix]number|system|code")
    prefix, number = split_prefix(name, parts[0])
    q = parse_number_query(name, number, prefix)
    groups: list[frozenset[TokenInput]] = [
        frozenset(bucket_inputs(field, number_cover(number_regions(q)), "number"))
    ]
    system: str | None = None
    code: str | None = None
    if len(parts) == 3:
        system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
        if code is None:
            raise SearchError(name, "a unit system needs a unit code (number|system|code)")
        if system is None:
            groups.append(frozenset({TokenInput(field + "#unit", "c|" + code)}))
        else:
            unit_key = f"s{len(system)}|{system}|{code}"
            groups.append(frozenset({TokenInput(field + "#unit", unit_key)}))

    def test(values: Sequence[IndexValue]) -> bool:
        for v in values:
            if isinstance(v, QuantityValue):
                if code is not None:
                    if system is None and code not in (v.code, v.unit):
                        continue
                    if system is not None and (v.system, v.code) != (system, code):
                        continue
            elif not isinstance(v, NumberValue) or code is not None:
                continue
            if number_matches(q, v.low, v.high):
                return True
        return False

    return Alternative(raw, tuple(groups), test, q.prefix)


# ------------------------------------------------------------------ reference, uri


def reference_alternative(
    name: str,
    field: str,
    raw: str,
    targets: Sequence[str],
    type_modifier: str | None,
    base_urls: tuple[str, ...],
) -> Alternative:
    """``Type/id``, ``id`` (any target type), absolute URL, canonical ``url[|version]``."""
    text = unescape(raw)
    wanted: list[str]
    if ID_RE.fullmatch(text) and "/" not in text:
        types = [type_modifier] if type_modifier else list(targets)
        if not types:
            raise SearchError(name, "a plain id needs a type: use name:Type=id or Type/id")
        wanted = [f"{t}/{text}" for t in types]
    else:
        parsed = parse_reference(text, base_urls)
        if parsed is None or parsed.contained is not None:
            raise SearchError(name, f"{text!r} is not a reference (Type/id, id or URL)")
        if parsed.local is not None:
            if type_modifier and parsed.type != type_modifier:
                raise SearchError(name, f"{text!r} is not a {type_modifier}")
            if targets and parsed.type not in targets and "Resource" not in targets:
                raise SearchError(
                    name, f"{parsed.type} is not a target type ({', '.join(targets)})"
                )
            wanted = [parsed.local]
        else:
            assert parsed.url is not None
            wanted = [parsed.url]
    want = frozenset(wanted)

    def test(values: Sequence[IndexValue]) -> bool:
        return any(
            isinstance(v, ReferenceValue)
            and (v.local in want or v.url in want or v.canonical in want)
            for v in values
        )

    return Alternative(raw, (frozenset(TokenInput(field, w) for w in wanted),), test)


def reference_identifier_alternative(name: str, field: str, raw: str) -> Alternative:
    """``subject:identifier=[system]|value``: the same forms as a token search."""
    inner = token_alternative(name, field + ":identifier", raw, None, IndexOptions())
    inner_test = inner.test

    def test(values: Sequence[IndexValue]) -> bool:
        idents = [
            v.identifier
            for v in values
            if isinstance(v, ReferenceValue) and v.identifier is not None
        ]
        return inner_test(idents)

    return Alternative(raw, inner.groups, test)


def uri_alternative(name: str, field: str, raw: str) -> Alternative:
    uri = unescape(raw)

    def test(values: Sequence[IndexValue]) -> bool:
        return any(isinstance(v, UriValue) and (v.uri == uri or v.canonical == uri) for v in values)

    return Alternative(raw, (frozenset({TokenInput(field, uri)}),), test)
