"""Chained parameters and ``_include`` / ``_revinclude``: parsed here, resolved by the store.

Why the store resolves them: a chain (``subject:Patient.name=dupont``) needs the results of
another search (Patients named Dupont) before the outer one (their Observations) can be
expressed as tokens, and only the store can run a search. This module only parses and
validates, then turns the inner results back into an ordinary reference parameter plan
(:meth:`Chain.outer_values`), so chained search costs two blind-index lookups and reveals
nothing more than two separate searches would.

One level of chaining is supported (``a.b=x``, not ``a.b.c=x``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hdsvault.records.search.definitions import resource_types, search_parameters
from hdsvault.records.search.errors import SearchError

__all__ = ["Chain", "Include", "parse_chain", "parse_include"]


@dataclass(frozen=True)
class Chain:
    """``<reference>[:<Type>].<inner>=<value>``: search ``inner=value`` on each target type
    first, then ``reference=Type/id,...`` with the ids found."""

    name: str
    reference: str
    target_types: tuple[str, ...]
    inner: str
    """The inner parameter as written (may carry a modifier: ``name:exact``)."""
    value: str

    def inner_requests(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """``[(target type, [(inner, value)])]``: the searches the store runs first."""
        return [(t, [(self.inner, self.value)]) for t in self.target_types]

    def outer_values(self, found: Mapping[str, Iterable[str]]) -> list[str]:
        """Reference values ``Type/id`` for the outer search from inner results by type.

        An empty list means no resource can match (the store returns an empty page).
        """
        out: list[str] = []
        for t in self.target_types:
            out.extend(f"{t}/{i}" for i in found.get(t, ()))
        return out


def parse_chain(resource_type: str, name: str, value: str) -> Chain:
    """Parse a chained parameter name (the part before ``=``) and validate every step."""
    head, _, inner = name.partition(".")
    code, _, type_mod = head.partition(":")
    params = search_parameters(resource_type)
    ref = params.get(code)
    if ref is None:
        raise SearchError(name, f"unknown parameter {code!r} for {resource_type}")
    if ref.type != "reference":
        raise SearchError(name, f"{code!r} is a {ref.type} parameter: only references chain")
    if not inner:
        raise SearchError(name, "empty chained parameter")
    if "." in inner:
        raise SearchError(name, "only one level of chaining is supported")
    inner_code = inner.partition(":")[0]
    if type_mod:
        if type_mod not in resource_types():
            raise SearchError(name, f"unknown resource type {type_mod!r}")
        if ref.targets and type_mod not in ref.targets:
            raise SearchError(name, f"{type_mod} is not a target of {code!r}")
        candidates: tuple[str, ...] = (type_mod,)
    else:
        candidates = tuple(t for t in ref.targets if t in resource_types())
    types = tuple(t for t in candidates if inner_code in search_parameters(t))
    if not types:
        raise SearchError(name, f"no target type of {code!r} has a parameter {inner_code!r}")
    return Chain(name=name, reference=code, target_types=types, inner=inner, value=value)


@dataclass(frozen=True)
class Include:
    """``_include=Source:param[:Target]`` (or ``_revinclude``), ``:iterate`` optional."""

    source: str
    param: str | None
    """None for the wildcard ``*``."""
    target: str | None
    reverse: bool
    iterate: bool


def parse_include(
    resource_type: str, name: str, value: str, reverse: bool, iterate: bool
) -> Include:
    """Parse one ``_include`` / ``_revinclude`` value (the store does the joins)."""
    if value == "*":
        return Include(resource_type, None, None, reverse, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise SearchError(name, f"{value!r}: expected Source:param[:Target] or *")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in resource_types():
        raise SearchError(name, f"unknown resource type {source!r}")
    if not reverse and not iterate and source != resource_type:
        raise SearchError(name, f"{source} is not the searched type {resource_type}")
    p = search_parameters(source).get(code)
    if p is None or p.type != "reference":
        raise SearchError(name, f"{source} has no reference parameter {code!r}")
    if target is not None and (
        target not in resource_types() or (p.targets and target not in p.targets)
    ):
        raise SearchError(name, f"{target} is not a target of {source}:{code}")
    if reverse and not iterate and p.targets and resource_type not in p.targets:
        raise SearchError(name, f"{source}:{code} cannot point to {resource_type}")
    return Include(source, code, target, reverse, iterate)
