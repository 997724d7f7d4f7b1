"""Parse a FHIR search request into a typed plan the store can run over blind tokens.

Why a plan: the store must (1) narrow candidates in the database with keyed tokens only
(invariant 3), then (2) decrypt the candidates and keep the exact matches. The plan gives it
both halves per parameter: :meth:`ParamPlan.token_groups` (for SQL) and
:meth:`ParamPlan.matches` (for the decrypted resource), plus what the store does itself:
``_id`` and ``_lastUpdated`` (clear columns), chains (two-step), result parameters.

Semantics for the store: a resource is a candidate for a non-negated parameter when some
alternative has, for each of its groups, at least one token of the group; for a negated one
(``:not``, ``:missing=true``) when *no* alternative does. Parameters are ANDed. Tokens of a
negated parameter are exact (equality tokens, presence tokens), so the negation is safe.

Leniency: unknown parameters are collected in :attr:`SearchPlan.unknown` (the API ignores them
and says so, or rejects them under ``Prefer: handling=strict``: pass ``strict=True``).
Everything else that is wrong raises :class:`SearchError` naming the parameter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from hdsvault.records.search.alternatives import (
    Alternative,
    date_alternative,
    number_alternative,
    quantity_alternative,
    reference_alternative,
    reference_identifier_alternative,
    split_escaped,
    string_alternative,
    token_alternative,
    unescape,
    uri_alternative,
)
from hdsvault.records.search.chaining import Chain, Include, parse_chain, parse_include
from hdsvault.records.search.definitions import (
    SearchParam,
    by_definition,
    resource_types,
    search_parameters,
)
from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.extract import interpret, values_of
from hdsvault.records.search.paths import CompiledPath, compile_native
from hdsvault.records.search.prefixes import DateQuery, date_matches, parse_date_query
from hdsvault.records.search.references import ID_RE
from hdsvault.records.search.tokens import DEFAULT_OPTIONS, IndexOptions, TokenFunction, TokenInput

__all__ = [
    "RESULT_PARAMETERS",
    "LastUpdatedFilter",
    "ParamPlan",
    "ResultParameters",
    "SearchError",
    "SearchPlan",
    "parse_search",
]

RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_format",
        "_contained",
        "_containedType",
        "_pretty",
    }
)

UNSUPPORTED = {
    "_has": "reverse chaining (_has) is not supported",
    "_list": "_list is not supported",
    "_filter": "_filter is not supported",
    "_type": "_type applies to system-level search only",
    "_text": "narrative search (_text) is not supported on encrypted data",
    "_content": "full-text search (_content) is not supported on encrypted data",
    "_query": "named queries (_query) are not supported",
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_MODIFIERS = {
    "token": {"not", "text", "of-type", "missing"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing"},
    "reference": {"identifier", "missing"},
    "composite": set(),
}
_KNOWN_UNSUPPORTED_MODIFIERS = {"above", "below", "in", "not-in", "iterate", "recurse", "type"}


# ------------------------------------------------------------------ plan objects


@dataclass(frozen=True)
class _Composite:
    """How a composite parameter reads its rows: per element, each component's values."""

    components: tuple[SearchParam, ...]
    expressions: tuple[str, ...]


@dataclass(frozen=True)
class ParamPlan:
    """One parameter of the request (repeated parameters give several, ANDed)."""

    name: str
    """As written by the client (``code:not``)."""
    param: SearchParam
    modifier: str | None
    negated: bool
    alternatives: tuple[Alternative, ...]
    base_urls: tuple[str, ...] = ()
    composite: _Composite | None = None
    indexed: bool = True
    """False for a parameter listed in ``IndexOptions.unindexed``: every row is a candidate
    (the store may skip the SQL condition; :meth:`token_groups` also says so under the
    generic rule) and only :meth:`matches` decides."""

    @property
    def code(self) -> str:
        return self.param.code

    def values(self, resource: Mapping[str, Any]) -> list[Any]:
        """What the exact tests look at (index values; rows for a composite)."""
        if self.composite is None:
            return list(values_of(resource, self.param, self.base_urls))
        return _composite_rows(resource, self.param, self.composite, self.base_urls)

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """Post-filter: the exact FHIR answer for this parameter on a decrypted resource."""
        vals = self.values(resource)
        hit = any(alt.test(vals) for alt in self.alternatives)
        return hit != self.negated

    def token_inputs(self) -> list[list[frozenset[TokenInput]]]:
        """Per alternative, its groups of token inputs (before keying).

        For a parameter that is not indexed, the groups are chosen so that the generic rule
        (some alternative with every group met, inverted when ``negated``) accepts every row:
        one empty alternative (always met), or when negated one impossible group.
        """
        if not self.indexed:
            return [[frozenset()]] if self.negated else [[]]
        return [list(alt.groups) for alt in self.alternatives]

    def token_groups(self, token_fn: TokenFunction) -> list[list[frozenset[bytes]]]:
        """Per alternative, its groups of keyed tokens (what the SQL compares)."""
        return [
            [frozenset(token_fn.token(i.field, i.value) for i in g) for g in groups]
            for groups in self.token_inputs()
        ]


@dataclass(frozen=True)
class LastUpdatedFilter:
    """``_lastUpdated`` alternatives, compared by the store on its clear column."""

    name: str
    alternatives: tuple[DateQuery, ...]

    def matches(self, instant_us: int) -> bool:
        """Whether a ``meta.lastUpdated`` instant (UTC microseconds) matches (OR)."""
        return any(date_matches(q, instant_us, instant_us + 1) for q in self.alternatives)


@dataclass(frozen=True)
class ResultParameters:
    """Parameters about the result page, not the selection (validated)."""

    count: int | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    """(parameter code, descending)."""
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str | None = None
    format: str | None = None
    contained: str | None = None
    contained_type: str | None = None


@dataclass(frozen=True)
class SearchPlan:
    """The whole request, typed. See the module docstring for the store's part."""

    resource_type: str
    params: tuple[ParamPlan, ...] = ()
    chains: tuple[Chain, ...] = ()
    ids: tuple[tuple[str, ...], ...] = ()
    """``_id``: each entry is an OR-list of ids; entries are ANDed."""
    last_updated: tuple[LastUpdatedFilter, ...] = ()
    result: ResultParameters = field(default_factory=ResultParameters)
    unknown: tuple[str, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    """(parameter, reason) for parameters ignored because their value was empty."""
    base_urls: tuple[str, ...] = ()

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """Post-filter of every token-indexed parameter (chains must be resolved first)."""
        return all(p.matches(resource) for p in self.params)

    def resolve_chains(self, found: Sequence[Mapping[str, Iterable[str]]]) -> SearchPlan:
        """Replace the chains with reference parameters on the ids their inner searches found.

        ``found[i][type]`` lists the ids that the inner search of ``self.chains[i]`` on
        ``type`` returned (``Chain.inner_requests``); a chain with no id matches nothing.
        """
        if len(found) != len(self.chains):
            raise ValueError(f"{len(self.chains)} chains, {len(found)} results")
        params = list(self.params)
        for chain, ids in zip(self.chains, found, strict=True):
            ref = search_parameters(self.resource_type)[chain.reference]
            alts = tuple(
                reference_alternative(chain.name, _field(ref), v, ref.targets, None, self.base_urls)
                for v in chain.outer_values(ids)
            )
            params.append(ParamPlan(chain.name, ref, None, False, alts, self.base_urls))
        return replace(self, params=tuple(params), chains=())


# ------------------------------------------------------------------ parsing


def _field(param: SearchParam) -> str:
    return f"{param.resource_type}.{param.code}"


def _now_us(now: datetime | None) -> int:
    if now is None:
        return time.time_ns() // 1000
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    delta = now - datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_search(
    resource_type: str,
    pairs: Iterable[tuple[str, str]],
    *,
    strict: bool = False,
    base_urls: Sequence[str] = (),
    now: datetime | None = None,
    options: IndexOptions = DEFAULT_OPTIONS,
) -> SearchPlan:
    """Parse ``(name, value)`` pairs (query string or form, in order) into a :class:`SearchPlan`.

    ``strict`` rejects unknown parameters (``Prefer: handling=strict``); ``base_urls`` are
    this server's base URLs (absolute references to them mean local ones); ``now`` fixes
    the clock for ``ap`` on dates (tests); ``options`` must match the indexing options.
    """
    if resource_type not in resource_types():
        raise SearchError("resourceType", f"unknown resource type {resource_type!r}")
    bases = tuple(base_urls)
    now_us = _now_us(now)
    params = search_parameters(resource_type)
    plans: list[ParamPlan] = []
    chains: list[Chain] = []
    ids: list[tuple[str, ...]] = []
    last_updated: list[LastUpdatedFilter] = []
    unknown: list[str] = []
    ignored: list[tuple[str, str]] = []
    result: dict[str, Any] = {}
    for name, value in pairs:
        base = name.split(":", 1)[0].split(".", 1)[0]
        if base in RESULT_PARAMETERS:
            _result_parameter(resource_type, name, value, result, params)
            continue
        if (base in UNSUPPORTED and base not in params) or base in ("_has", "_list", "_filter"):
            raise SearchError(name, UNSUPPORTED[base])
        if not _NAME.fullmatch(base):
            raise SearchError(name, "not a search parameter name")
        param = params.get(base)
        if param is None:
            if strict:
                raise SearchError(name, f"unknown parameter for {resource_type}")
            unknown.append(name)
            continue
        if param.path is None and base in UNSUPPORTED:
            raise SearchError(name, UNSUPPORTED[base])
        if value == "":
            ignored.append((name, "empty value"))
            continue
        if "." in name:
            chain = parse_chain(resource_type, name, value)
            for target in chain.target_types:  # surface errors of the inner search now
                try:
                    parse_search(
                        target,
                        chain.inner_requests()[0][1],
                        strict=True,
                        now=now,
                        base_urls=bases,
                        options=options,
                    )
                except SearchError as e:
                    raise SearchError(name, e.problem) from None
            chains.append(chain)
            continue
        modifier = name.partition(":")[2] or None
        if base == "_id":
            if modifier:
                raise SearchError(name, f"modifier :{modifier} is not supported on _id")
            ids.append(_parse_ids(name, value))
            continue
        if base == "_lastUpdated":
            if modifier:
                raise SearchError(name, f"modifier :{modifier} is not supported here")
            alts = tuple(
                parse_date_query(name, unescape(v), now_us) for v in split_escaped(value, ",") if v
            )
            last_updated.append(LastUpdatedFilter(name, alts))
            continue
        plans.append(_param_plan(name, param, modifier, value, bases, now_us, options))
    if plans and not any(p.indexed for p in plans) and not (chains or ids or last_updated):
        raise SearchError(
            plans[0].name,
            "not indexed on this server (privacy setting): combine it with another parameter",
        )
    return SearchPlan(
        resource_type=resource_type,
        params=tuple(plans),
        chains=tuple(chains),
        ids=tuple(ids),
        last_updated=tuple(last_updated),
        result=ResultParameters(**result),
        unknown=tuple(unknown),
        ignored=tuple(ignored),
        base_urls=bases,
    )


def _parse_ids(name: str, value: str) -> tuple[str, ...]:
    out = tuple(v for v in value.split(",") if v)
    for v in out:
        if not ID_RE.fullmatch(v):
            raise SearchError(name, f"{v!r} is not a resource id")
    return out


def _param_plan(
    name: str,
    param: SearchParam,
    modifier: str | None,
    value: str,
    bases: tuple[str, ...],
    now_us: int,
    options: IndexOptions,
) -> ParamPlan:
    ptype = param.type
    if ptype == "special" or (param.path is None and ptype != "composite"):
        raise SearchError(name, f"{ptype} parameter {param.code!r} is not supported")
    type_modifier: str | None = None
    if modifier is not None:
        if ptype == "reference" and modifier in resource_types():
            if param.targets and modifier not in param.targets:
                raise SearchError(name, f"{modifier} is not a target of {param.code!r}")
            type_modifier = modifier
        elif modifier not in _MODIFIERS.get(ptype, set()):
            if modifier in _KNOWN_UNSUPPORTED_MODIFIERS:
                raise SearchError(name, f"modifier :{modifier} is not supported")
            raise SearchError(name, f"unknown modifier :{modifier} for a {ptype} parameter")
    fld = _field(param)
    if modifier == "missing":
        if value not in ("true", "false"):
            raise SearchError(name, ":missing takes true or false")
        present = Alternative(value, (frozenset({TokenInput(fld + "#p", "1")}),), bool)
        plan = ParamPlan(name, param, modifier, value == "true", (present,), bases)
        return _unindexed(plan) if fld in options.unindexed else plan
    raws = [v for v in split_escaped(value, ",") if v]
    if not raws:
        raise SearchError(name, "no value")
    composite = None
    if ptype == "composite":
        if len(raws) > 1 and param.multiple_or is False:
            raise SearchError(name, "a composite parameter takes one value (no ',')")
        composite = _composite_of(name, param)
        alts = tuple(
            _composite_alternative(name, param, composite, r, now_us, options) for r in raws
        )
    else:
        alts = tuple(
            _alternative(name, param, fld, modifier, type_modifier, r, bases, now_us, options)
            for r in raws
        )
    negated = modifier == "not"
    plan = ParamPlan(name, param, modifier, negated, alts, bases, composite)
    return _unindexed(plan) if fld in options.unindexed else plan


def _unindexed(plan: ParamPlan) -> ParamPlan:
    alts = tuple(replace(a, groups=()) for a in plan.alternatives)
    return replace(plan, alternatives=alts, indexed=False)


def _alternative(
    name: str,
    param: SearchParam,
    fld: str,
    modifier: str | None,
    type_modifier: str | None,
    raw: str,
    bases: tuple[str, ...],
    now_us: int,
    options: IndexOptions,
) -> Alternative:
    ptype = param.type
    if ptype == "token":
        return token_alternative(name, fld, raw, None if modifier == "not" else modifier, options)
    if ptype == "string":
        return string_alternative(name, fld, raw, modifier, options)
    if ptype == "date":
        return date_alternative(name, fld, raw, now_us)
    if ptype == "number":
        return number_alternative(name, fld, raw)
    if ptype == "quantity":
        return quantity_alternative(name, fld, raw)
    if ptype == "uri":
        return uri_alternative(name, fld, raw)
    if ptype == "reference":
        if modifier == "identifier":
            return reference_identifier_alternative(name, fld, raw)
        return reference_alternative(name, fld, raw, param.targets, type_modifier, bases)
    raise SearchError(name, f"{ptype} parameters are not supported")


# ------------------------------------------------------------------ composite


def _composite_of(name: str, param: SearchParam) -> _Composite:
    comps: list[SearchParam] = []
    for c in param.components:
        p = by_definition(param.resource_type, c.definition)
        if p is None or p.type not in (
            "token",
            "string",
            "date",
            "number",
            "quantity",
            "uri",
            "reference",
        ):
            raise SearchError(name, f"component {c.definition} of {param.code!r} is unsupported")
        comps.append(p)
    if not comps:
        raise SearchError(name, f"composite {param.code!r} has no components")
    return _Composite(tuple(comps), tuple(c.expression for c in param.components))


def _composite_alternative(
    name: str,
    param: SearchParam,
    composite: _Composite,
    raw: str,
    now_us: int,
    options: IndexOptions,
) -> Alternative:
    parts = split_escaped(raw, "$")
    if len(parts) != len(composite.components):
        raise SearchError(name, f"expected {len(composite.components)} values separated by '$'")
    subs = [
        _alternative(name, p, _field(p), None, None, part, (), now_us, options)
        for p, part in zip(composite.components, parts, strict=True)
    ]
    groups = tuple(g for s in subs for g in s.groups)
    tests = tuple(s.test for s in subs)

    def test(rows: Sequence[Any]) -> bool:
        return any(all(t(row[i]) for i, t in enumerate(tests)) for row in rows)

    return Alternative(raw, groups, test)


@lru_cache(maxsize=1024)
def _relative(start: str, expression: str) -> CompiledPath | None:
    return compile_native(expression, start, relative=True)


def _composite_rows(
    resource: Mapping[str, Any],
    param: SearchParam,
    composite: _Composite,
    bases: tuple[str, ...],
) -> list[tuple[list[Any], ...]]:
    if param.path is None:
        return []
    rows: list[tuple[list[Any], ...]] = []
    for key, element in param.path(resource):
        row: list[list[Any]] = []
        for comp, expr in zip(composite.components, composite.expressions, strict=True):
            path = _relative(key, expr)
            items = path(element) if path is not None and isinstance(element, dict) else []
            # relative paths start at the element: re-tag its type for the first step
            row.append(interpret(comp.type, items, resource, bases))
        rows.append(tuple(row))
    return rows


# ------------------------------------------------------------------ result parameters


def _result_parameter(
    resource_type: str,
    name: str,
    value: str,
    out: dict[str, Any],
    params: Mapping[str, SearchParam],
) -> None:
    base, _, modifier = name.partition(":")
    handlers: dict[str, Callable[[], None]] = {}

    def once(key: str, v: Any) -> None:
        if key in out:
            raise SearchError(name, "given more than once")
        out[key] = v

    def count() -> None:
        if not re.fullmatch(r"\d{1,9}", value):
            raise SearchError(name, f"{value!r} is not a non-negative integer")
        once("count", int(value))

    def sort() -> None:
        keys: list[tuple[str, bool]] = []
        for item in value.split(","):
            desc = item.startswith("-")
            code = item[1:] if desc else item
            if code not in params or code in UNSUPPORTED:
                raise SearchError(name, f"cannot sort on {code!r}")
            keys.append((code, desc))
        once("sort", tuple(keys))

    def include(reverse: bool) -> None:
        if modifier not in ("", "iterate", "recurse"):
            raise SearchError(name, f"unknown modifier :{modifier}")
        key = "revinclude" if reverse else "include"
        inc = parse_include(resource_type, name, value, reverse, modifier != "")
        out[key] = (*out.get(key, ()), inc)

    def choice(key: str, allowed: tuple[str, ...]) -> Callable[[], None]:
        def run() -> None:
            if value not in allowed:
                raise SearchError(name, f"expected one of {', '.join(allowed)}")
            once(key, value)

        return run

    def elements() -> None:
        items = tuple(v for v in value.split(",") if v)
        for v in items:
            if not re.fullmatch(r"([A-Z][A-Za-z]+\.)?[a-z][A-Za-z0-9]*(\[x\])?", v):
                raise SearchError(name, f"{v!r} is not an element name")
        once("elements", items)

    handlers = {
        "_count": count,
        "_sort": sort,
        "_include": lambda: include(False),
        "_revinclude": lambda: include(True),
        "_summary": choice("summary", ("true", "text", "data", "count", "false")),
        "_total": choice("total", ("none", "estimate", "accurate")),
        "_elements": elements,
        "_format": lambda: once("format", value),
        "_contained": choice("contained", ("true", "false", "both")),
        "_containedType": choice("contained_type", ("container", "contained")),
        "_pretty": lambda: None,
    }
    if modifier and base not in ("_include", "_revinclude"):
        raise SearchError(name, f"modifier :{modifier} is not allowed on {base}")
    handlers[base]()
