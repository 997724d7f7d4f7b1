"""References inside resources: bundle-local ``urn:uuid`` rewriting, targets, the patient.

Why here: a transaction (and the importer) must replace every ``urn:uuid:`` reference to an
entry of the same bundle with the ``Type/id`` the server assigned *before* indexing and
sealing, and must refuse the whole bundle when a reference points nowhere (nothing partly
written). The journal needs to know which patient a resource concerns, to answer "who
accessed my record" (``$access-history``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.model import ID_PATTERN, Json, ResourceKey

_PATIENT_LINKS = ("patient", "subject", "beneficiary", "individual")
"""Elements through which a resource belongs to a patient (Patient compartment, R4)."""


def walk_references(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every Reference-like object (a dict with a string ``reference``) and its FHIR path."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield node, path + ".reference"
        for k, v in node.items():
            if isinstance(v, (dict, list)):
                yield from walk_references(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)):
                yield from walk_references(v, f"{path}[{i}]")


def _reference_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Reference-like objects, fast (no paths; iterative, so depth cannot overflow)."""
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield item
            for v in item.values():
                if isinstance(v, (dict, list)):
                    push(v)
        elif isinstance(item, list):
            for v in item:
                if isinstance(v, (dict, list)):
                    push(v)


def _path_of(resource: Json, target: dict[str, Any]) -> str:
    rt = str(resource.get("resourceType", "Resource"))
    for ref, path in walk_references(resource, rt):
        if ref is target:
            return path
    return rt


def rewrite_local(resource: Json, assigned: Mapping[str, str]) -> dict[ResourceKey, Json]:
    """Replace references found in ``assigned`` (fullUrl -> ``Type/id``), in place.

    Returns the local targets afterwards (key -> one referencing object). A remaining
    ``urn:uuid:`` / ``urn:oid:`` reference names no entry of the bundle: refused.
    """
    targets: dict[ResourceKey, Json] = {}
    for ref in _reference_objects(resource):
        text = ref["reference"]
        new = assigned.get(text)
        if new is not None:
            ref["reference"] = text = new
        elif text.startswith(("urn:uuid:", "urn:oid:")):
            path = _path_of(resource, ref)
            raise RecordError(
                Problem.NOT_FOUND, f"{path}: {text[:80]!r} names no entry of the bundle", (path,)
            )
        key = parse_local(text)
        if key is not None and key not in targets:
            targets[key] = ref
    return targets


def first_path(resource: Json, key: ResourceKey) -> str:
    """The path of the first reference of ``resource`` to ``key`` (for error messages)."""
    rt = str(resource.get("resourceType", "Resource"))
    for ref, path in walk_references(resource, rt):
        if parse_local(ref["reference"]) == key:
            return path
    return rt


def parse_local(text: str) -> ResourceKey | None:
    """``Type/id`` or ``Type/id/_history/v`` -> the key; anything else None."""
    parts = text.split("/")
    if (
        len(parts) in (2, 4)
        and parts[0][:1].isupper()
        and parts[0].isalpha()
        and ID_PATTERN.fullmatch(parts[1])
        and (len(parts) == 2 or parts[2] == "_history")
    ):
        return ResourceKey(parts[0], parts[1])
    return None


def patient_of(resource: Json | None, key: ResourceKey | None = None) -> str | None:
    """``Patient/<id>`` the resource concerns: itself, or its patient/subject reference."""
    if key is not None and key.type == "Patient":
        return str(key)
    if resource is None:
        return None
    if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
        return f"Patient/{resource['id']}"
    for name in _PATIENT_LINKS:
        link = resource.get(name)
        if isinstance(link, list):
            link = link[0] if link else None
        if isinstance(link, dict):
            ref = link.get("reference")
            if isinstance(ref, str):
                target = parse_local(ref)
                if target is not None and target.type == "Patient":
                    return str(target)
    return None
