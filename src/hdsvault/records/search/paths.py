"""Compile FHIRPath search expressions into fast, typed evaluators.

Why not always fhirpathpy: extraction runs on every write (the import hot path) and
fhirpathpy costs ~30 µs per expression even for ``Patient.birthDate``; an Observation has
~40 applicable parameters. All FHIR R4 search expressions are, clause by clause, one of a
handful of simple shapes, so each clause is compiled here into a short list of dictionary
operations, resolved *statically* against the R4 model (fhirpathpy's ``path2Type`` and
``choiceTypePaths``): ``Observation.value.ofType(Quantity)`` becomes "read key
``valueQuantity``", and every value comes out tagged with its FHIR type (``dateTime``,
``Period``, ``CodeableConcept``...), which extraction needs to interpret it.

Supported clause shapes (anything else falls back to fhirpathpy, still compiled once)::

    Type.a.b.c                          element navigation, choice elements included
    Type.a[0].b                         indexer
    Type.a.ofType(T)  Type.a.as(T)  (Type.a as T)     type filters (R4 and Medplum forms)
    Type.a.where(resolve() is T)        reference target filter
    Type.a.where(b='literal').c         equality filter
    (expr).c                            parenthesised prefix

A backbone element is tagged with its element path (``Observation.component``), a contained
or bundled resource with its ``resourceType``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hdsvault.records.search._fhirpath import (
    FhirPathError,
    R4Model,
    compile_expression,
    r4_model,
)
from hdsvault.records.search.references import target_type

__all__ = [
    "UNKNOWN",
    "CompiledPath",
    "FhirPathError",
    "Item",
    "compile_clauses",
    "compile_native",
    "fallback_path",
    "split_union",
    "type_name",
]

Item = tuple[str, Any]
"""A value found by a path, with its FHIR type (:data:`UNKNOWN` if fhirpathpy found it)."""

UNKNOWN = "?"

PRIMITIVES = frozenset(
    [
        "boolean",
        "integer",
        "string",
        "decimal",
        "uri",
        "url",
        "canonical",
        "base64Binary",
        "instant",
        "date",
        "dateTime",
        "time",
        "code",
        "oid",
        "id",
        "markdown",
        "unsignedInt",
        "positiveInt",
        "uuid",
        "xhtml",
    ]
)

# Operation codes of a compiled native path.
_GET, _GET_DYN, _OFTYPE, _WHERE_REF, _WHERE_EQ, _INDEX = range(6)
Op = tuple[int, Any]


def type_name(name: str) -> str:
    """FHIR type name as the model spells it (``DateTime`` -> ``dateTime``)."""
    name = name.removeprefix("FHIR.")
    low = name[:1].lower() + name[1:]
    return low if low in PRIMITIVES else name


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` (outside parentheses and string literals)."""
    return [c.strip() for c in _split_top(expression, "|") if c.strip()]


def _split_top(text: str, sep: str) -> list[str]:
    out: list[str] = []
    depth, quoted, start = 0, False, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == "'":
                quoted = False
        elif ch == "'":
            quoted = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start`` (-1 if unbalanced)."""
    depth, quoted = 0, False
    for i in range(start, len(text)):
        ch = text[i]
        if quoted:
            quoted = ch != "'"
        elif ch == "'":
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_INDEXED = re.compile(r"([a-z][A-Za-z0-9]*)\[(\d+)\]")
_OFTYPE_RE = re.compile(r"(?:ofType|as)\(\s*([A-Za-z.]+)\s*\)")
_WHERE_REF_RE = re.compile(r"where\(\s*resolve\(\)\s+is\s+([A-Za-z.]+)\s*\)")
_WHERE_EQ_RE = re.compile(r"where\(\s*([a-z][A-Za-z0-9]*)\s*=\s*'([^'\\]*)'\s*\)")
_AS_SUFFIX = re.compile(r"(.+?)\s+as\s+([A-Za-z.]+)")

Step = tuple[str, Any]


def _parse(clause: str) -> list[Step] | None:
    """Clause -> steps ``[("root", T), ("name", n), ("index", i), ("oftype", T), ...]``."""
    s = clause.strip()
    while s.startswith("(") and _closing(s, 0) == len(s) - 1:
        s = s[1:-1].strip()
    if s.startswith("("):
        end = _closing(s, 0)
        if end < 0 or s[end + 1 : end + 2] != ".":
            return None
        head = _parse(s[1:end])
        tail = _parse_segments(_split_top(s[end + 2 :], "."), first=False)
        return None if head is None or tail is None else head + tail
    parts = _split_top(s, ".")
    m = _AS_SUFFIX.fullmatch(parts[-1].strip()) if parts else None
    if m is not None and " " not in m.group(1).strip():
        head = _parse(".".join([*parts[:-1], m.group(1)]))
        return None if head is None else [*head, ("oftype", type_name(m.group(2)))]
    return _parse_segments(parts, first=True)


def _parse_segments(parts: Sequence[str], first: bool) -> list[Step] | None:
    steps: list[Step] = []
    for i, raw in enumerate(parts):
        seg = raw.strip()
        if i == 0 and first:
            if not _NAME.fullmatch(seg):
                return None
            steps.append(("root", seg))
        elif _NAME.fullmatch(seg) and seg[0].islower():
            steps.append(("name", seg))
        elif m := _INDEXED.fullmatch(seg):
            steps += [("name", m.group(1)), ("index", int(m.group(2)))]
        elif m := _OFTYPE_RE.fullmatch(seg):
            steps.append(("oftype", type_name(m.group(1))))
        elif m := _WHERE_REF_RE.fullmatch(seg):
            steps.append(("whereref", type_name(m.group(1))))
        elif m := _WHERE_EQ_RE.fullmatch(seg):
            steps.append(("whereeq", (m.group(1), m.group(2))))
        else:
            return None
    return steps


def _children(model: R4Model, key: str, name: str) -> list[tuple[str, str]] | None:
    """(JSON key, type key) pairs of element ``name`` under type key ``key``."""
    full = f"{key}.{name}"
    full = model.defined_elsewhere.get(full, full)
    choice = model.choice_types.get(full)
    if choice is not None:
        return [(name + suffix, type_name(suffix)) for suffix in choice]
    declared = model.path_to_type.get(full)
    if declared is not None:
        if declared.startswith("System."):
            declared = "string"
        return [(name, declared)]
    if full in model.parent_paths:
        return [(name, full)]  # backbone element: tagged with its own path
    return None


@dataclass(frozen=True)
class CompiledPath:
    """A compiled clause (or union of clauses) for one resource type.

    ``first_keys``: the top-level JSON keys the path can read (None if unknown, for
    fhirpathpy fallbacks); a resource holding none of them has no value, which lets
    extraction skip most parameters of a resource without running them.
    """

    expression: str
    native: bool
    run: Callable[[Mapping[str, Any]], list[Item]]
    first_keys: frozenset[str] | None = None

    def __call__(self, resource: Mapping[str, Any]) -> list[Item]:
        return self.run(resource)


def compile_native(
    expression: str, start: str, relative: bool = False, model: R4Model | None = None
) -> CompiledPath | None:
    """Compile one clause natively, or None if it is not one of the supported shapes.

    ``start`` is the type key evaluation starts from (a resource type, or for component
    expressions of composite parameters, the type key of the element); with ``relative``
    the clause has no root type segment.
    """
    model = model or r4_model()
    steps = (
        _parse(expression)
        if not relative
        else _parse_segments(_split_top(expression, "."), first=False)
    )
    if not steps:
        return None
    if not relative:
        if steps[0][0] != "root":
            return None
        if steps[0][1] not in (start, "Resource", "DomainResource"):
            return None
        steps = steps[1:]
    keys: list[str] = [start]
    ops: list[Op] = []
    first_keys: frozenset[str] | None = None
    for kind, arg in steps:
        if kind == "name":
            table: dict[str, tuple[tuple[str, str], ...]] = {}
            for key in keys:
                if key == "Resource":
                    return None  # a bundled/contained resource: type known only at runtime
                kids = _children(model, key, arg)
                if kids is not None:
                    table[key] = tuple(kids)
            if not table:
                return None
            dynamic = any(k == "Resource" for kids in table.values() for _, k in kids)
            ops.append((_GET_DYN if dynamic else _GET, table))
            if first_keys is None:
                first_keys = frozenset(n for kids in table.values() for n, _ in kids)
            keys = sorted({k for kids in table.values() for _, k in kids})
        elif kind == "oftype":
            keep = frozenset(k for k in keys if model.is_subtype(k, arg))
            ops.append((_OFTYPE, keep))
            keys = sorted(keep)
        elif kind == "whereref":
            ops.append((_WHERE_REF, arg))
        elif kind == "whereeq":
            ops.append((_WHERE_EQ, arg))
        elif kind == "index":
            ops.append((_INDEX, arg))
        else:
            return None
    return CompiledPath(expression, True, _runner(start, tuple(ops)), first_keys)


def _runner(start: str, ops: tuple[Op, ...]) -> Callable[[Mapping[str, Any]], list[Item]]:
    def run(resource: Mapping[str, Any]) -> list[Item]:
        items: list[Item] = [(start, resource)]
        for code, arg in ops:
            if code in (_GET, _GET_DYN):
                out: list[Item] = []
                append = out.append
                for key, value in items:
                    kids = arg.get(key)
                    if kids is None or type(value) is not dict:
                        continue
                    for name, kid_type in kids:
                        found = value.get(name)
                        if found is None:
                            continue
                        if type(found) is list:
                            for x in found:
                                if x is not None:
                                    append((kid_type, x))
                        else:
                            append((kid_type, found))
                if code == _GET_DYN:
                    out = [(_dynamic(t, v), v) for t, v in out]
                items = out
            elif code == _OFTYPE:
                items = [it for it in items if it[0] in arg]
            elif code == _WHERE_REF:
                items = [
                    it
                    for it in items
                    if type(it[1]) is dict and target_type(it[1], resource) == arg
                ]
            elif code == _WHERE_EQ:
                name, literal = arg
                items = [it for it in items if type(it[1]) is dict and it[1].get(name) == literal]
            else:
                items = items[arg : arg + 1]
            if not items:
                return items
        return items

    return run


def _dynamic(declared: str, value: Any) -> str:
    """A bundled or contained resource is tagged with its own ``resourceType``."""
    if declared == "Resource" and isinstance(value, dict):
        rt = value.get("resourceType")
        if isinstance(rt, str):
            return rt
    return declared


def _fallback(expression: str) -> CompiledPath:
    evaluate = compile_expression(expression)

    def run(resource: Mapping[str, Any]) -> list[Item]:
        return [(UNKNOWN, v) for v in evaluate(resource) if v is not None]

    return CompiledPath(expression, False, run)


def compile_clauses(clauses: Sequence[str], resource_type: str) -> CompiledPath:
    """Compile the clauses of one parameter that apply to ``resource_type``.

    Each clause is compiled natively when it can be, else through fhirpathpy; the result
    concatenates the clauses' values (FHIRPath ``|`` would also deduplicate them: callers
    work on sets of index entries, so duplicates are harmless).
    """
    parts: list[CompiledPath] = []
    for clause in clauses:
        native = compile_native(clause, resource_type)
        if native is not None:
            parts.append(native)
            continue
        text = re.sub(r"^(\(*)\s*(Resource|DomainResource)\.", rf"\1{resource_type}.", clause)
        parts.append(_fallback(text))
    expression = " | ".join(clauses)
    if len(parts) == 1:
        return parts[0]
    runs = tuple(p.run for p in parts)

    def run(resource: Mapping[str, Any]) -> list[Item]:
        out: list[Item] = []
        for r in runs:
            out.extend(r(resource))
        return out

    first: frozenset[str] | None = frozenset()
    for p in parts:
        first = None if first is None or p.first_keys is None else first | p.first_keys
    return CompiledPath(expression, all(p.native for p in parts), run, first)


def fallback_path(clauses: Sequence[str], resource_type: str) -> CompiledPath:
    """The same clauses compiled through fhirpathpy only (reference for tests, benchmarks)."""
    text = " | ".join(
        re.sub(r"^(\(*)\s*(Resource|DomainResource)\.", rf"\1{resource_type}.", c) for c in clauses
    )
    return _fallback(text)
