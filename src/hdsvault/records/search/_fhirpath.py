"""Typed facade over ``fhirpathpy``: the only module of the search package that imports it.

Why a facade: fhirpathpy is only partly typed (mypy strict rejects its untyped calls), and we
want one place that decides how it is called (always with the R4 model, so that choice
elements such as ``Observation.value`` resolve to ``valueQuantity``) and what comes out
(plain JSON-like Python values, never its internal node objects).

Besides the evaluator, fhirpathpy ships a compact R4 model (``path2Type``,
``choiceTypePaths``, ``pathsDefinedElsewhere``) that :mod:`.paths` uses to compile simple
search expressions into fast native lookups; it is exposed here as typed mappings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, cast

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as _models

from hdsvault.records.search.references import target_type

__all__ = [
    "FhirPathError",
    "R4Model",
    "compile_expression",
    "r4_model",
]

Evaluator = Callable[[Mapping[str, Any]], list[Any]]


class FhirPathError(ValueError):
    """An expression does not compile, or its evaluation failed on a resource."""


class R4Model:
    """The R4 element model, as typed lookups (read-only; built once)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.path_to_type: Mapping[str, str] = cast(Mapping[str, str], raw["path2Type"])
        self.choice_types: Mapping[str, list[str]] = cast(
            Mapping[str, list[str]], raw["choiceTypePaths"]
        )
        self.defined_elsewhere: Mapping[str, str] = cast(
            Mapping[str, str], raw["pathsDefinedElsewhere"]
        )
        self.type_parent: Mapping[str, str] = cast(Mapping[str, str], raw["type2Parent"])
        parents: set[str] = set()
        for path in [*self.path_to_type, *self.choice_types]:
            parts = path.split(".")
            for i in range(1, len(parts)):
                parents.add(".".join(parts[:i]))
        self.parent_paths: frozenset[str] = frozenset(parents)

    def is_subtype(self, name: str, ancestor: str) -> bool:
        """``name`` is ``ancestor`` or derives from it (``Age`` is a ``Quantity``)."""
        seen = 0
        current: str | None = name
        while current is not None and seen < 16:
            if current == ancestor:
                return True
            current = self.type_parent.get(current)
            seen += 1
        return False


def _resolve(inputs: list[Any]) -> list[Any]:
    """``resolve()`` without a store: a stub resource carrying only the target's type.

    Search expressions only use it as ``where(resolve() is Patient)``, which needs nothing
    else. References to contained resources resolve through ``Reference.type`` only (the
    function sees no root resource); the native evaluator in :mod:`.paths` does better.
    """
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, Mapping):
            rt = target_type(item)
            if rt is not None:
                out.append(_node({"resourceType": rt}))
    return out


_node = cast(Callable[[dict[str, Any]], Any], ResourceNode.create_node)


@cache
def r4_model() -> R4Model:
    """The R4 model bundled with fhirpathpy (loaded once per process)."""
    return R4Model(cast(Mapping[str, Any], _models["r4"]))


def compile_expression(expression: str) -> Evaluator:
    """Compile a FHIRPath expression once; the result evaluates it on a resource dict.

    Errors at evaluation time (for instance an unsupported function) become
    :class:`FhirPathError`, so callers can degrade one parameter instead of crashing.
    """
    try:
        fn = fhirpathpy.compile(
            expression,
            model=cast(dict[str, Any], r4_model().raw),
            options={"userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}}},
        )
    except Exception as e:  # antlr and fhirpathpy raise bare Exceptions
        raise FhirPathError(f"cannot compile FHIRPath {expression!r}: {e}") from e

    def evaluate(resource: Mapping[str, Any]) -> list[Any]:
        try:
            out = fn(resource, None)
        except Exception as e:
            raise FhirPathError(f"FHIRPath {expression!r} failed: {e}") from e
        return list(out) if isinstance(out, list) else [out]

    return evaluate
