"""``_summary`` and ``_elements``: the subsets of a resource a client may ask for.

Why the models: which elements are "summary" elements is part of the FHIR definitions; the
``fhir.resources`` models carry that flag per element (``summary_element_property``), so the
subset follows the specification rather than a hand-written list. A subsetted resource is
tagged ``SUBSETTED`` (``meta.tag``), as the specification requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pydantic import BaseModel

from hdsvault.records.model import Json

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _summary_elements(resource_type: str) -> frozenset[str]:
    from hdsvault.records.validation import _model_class

    cls = _model_class(resource_type)
    if cls is None:
        return frozenset()
    return frozenset(_flagged(cls))


def _flagged(cls: type[BaseModel]) -> list[str]:
    out: list[str] = []
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and (
            extra.get("summary_element_property") or extra.get("element_required")
        ):
            out.append(info.alias or name)
    return out


def _tagged(resource: Json, kept: dict[str, object]) -> Json:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    kept["meta"] = meta
    return kept


def summarize(resource: Json, mode: str | None) -> Json:
    """``_summary=true|text|data|false`` (``count`` is handled by search)."""
    if mode in (None, "false", "count"):
        return resource
    rt = str(resource.get("resourceType", ""))
    if mode == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif mode == "text":
        required = _summary_elements(rt)
        kept = {
            k: v
            for k, v in resource.items()
            if k in _ALWAYS or k == "text" or (k in required and k != "text")
        }
    else:
        summary = _summary_elements(rt)
        if not summary:
            return resource
        kept = {k: v for k, v in resource.items() if k in _ALWAYS or k in summary}
    return _tagged(resource, kept)


def _base(key: str) -> str:
    """Choice elements are flagged by their base name (``deceased`` for ``deceasedBoolean``)."""
    for i, ch in enumerate(key):
        if ch.isupper() and i > 0:
            return key[:i]
    return key


def elements(resource: Json, names: Sequence[str]) -> Json:
    """``_elements=a,b``: those top-level elements (plus id, meta), tagged SUBSETTED."""
    if not names:
        return resource
    rt = str(resource.get("resourceType", ""))
    wanted = set()
    for n in names:
        head, dot, rest = n.partition(".")
        wanted.add(rest if dot and head == rt else n)
    kept = {k: v for k, v in resource.items() if k in _ALWAYS or k in wanted or _base(k) in wanted}
    return _tagged(resource, kept)
