"""Resource validation: structure (``fhir.resources`` R4B models), required codes, INS keys.

Why R4B models for an R4 server: ``fhir.resources`` ships R4B (4.3) and R5 models, not R4
(4.0.1); R4B is structurally R4 for the resources hospitals exchange (it accepted every
Synthea R4 resource), so it is the best-kept model available. The 18 R4 types that R4B
removed (``MedicinalProduct*``, ``Substance*`` specialisations, the ``*EvidenceSynthesis``)
get only the checks below that need no model (type, id, INS), as ``docs/fhir.md`` says.

Required bindings: the models list, per ``code`` element bound to a closed value set, its
codes (``enum_values``); a value outside them is refused. Bindings whose list ends with
``+`` (the model marks an incomplete list) are not checked.

Cost: ~0.3 ms per resource on Synthea (pydantic). The REST API always validates; the bulk
importer can skip it for trusted sources (``hdsvault import --no-validate``), see
``docs/fhir.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from pydantic import BaseModel, ValidationError

from hdsvault.records.errors import Issue, Problem, RecordError, from_issues
from hdsvault.records.ins import ins_issues
from hdsvault.records.model import Json, check_id, check_type

_MAX_ISSUES = 20


@cache
def _model_class(resource_type: str) -> type[BaseModel] | None:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def preload(*resource_types: str) -> None:
    """Load the models of ``resource_types`` now. Why: a type's first validation imports its
    model and builds its pydantic schema (ImagingStudy 48 ms, Patient 8 ms on the bench
    machine); servers call this as they start, so that no clinical write pays it."""
    for resource_type in resource_types:
        _model_class(resource_type)


def _path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and not part.startswith(("function-", "model-")):
            out += f".{part}"
    return out


def _structure_issues(resource_type: str, resource: Json) -> tuple[list[Issue], BaseModel | None]:
    cls = _model_class(resource_type)
    if cls is None:
        return [], None
    try:
        return [], cls.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False)[:_MAX_ISSUES]:
            path = _path(resource_type, tuple(err["loc"]))
            issues.append(Issue(f"{path}: {err['msg']}", "structure", expression=(path,)))
        return issues, None
    except Exception as exc:  # the model library failing on hostile input = invalid input
        return [
            Issue(f"{resource_type}: not a valid resource ({type(exc).__name__}: {exc!s:.200})")
        ], None


@cache
def _closed_codes(cls: type[BaseModel]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict):
            values = extra.get("enum_values")
            if isinstance(values, list) and values and "+" not in values:
                out[name] = frozenset(str(v) for v in values)
    return out


def _binding_issues(model: BaseModel, path: str) -> Iterator[Issue]:
    closed = _closed_codes(type(model))
    for name, value in model.__dict__.items():
        if value is None:
            continue
        codes = closed.get(name)
        if codes is not None and isinstance(value, str) and value not in codes:
            yield Issue(
                f"{path}.{name}: {value[:64]!r} is not one of the required codes "
                f"({', '.join(sorted(codes))})",
                "code-invalid",
                expression=(f"{path}.{name}",),
            )
        elif isinstance(value, BaseModel):
            yield from _binding_issues(value, f"{path}.{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _binding_issues(item, f"{path}.{name}[{i}]")


def validate(resource: Json, *, expected_type: str | None = None, structure: bool = True) -> None:
    """Refuse ``resource`` (INVALID/UNPROCESSABLE, every issue named by path) or return."""
    rt = resource.get("resourceType")
    if not isinstance(rt, str):
        raise RecordError(Problem.INVALID, "resourceType is missing", ("resourceType",))
    if expected_type is not None and rt != expected_type:
        raise RecordError(
            Problem.INVALID,
            f"resourceType {rt[:64]!r} does not match the URL type {expected_type!r}",
            ("resourceType",),
        )
    check_type(rt)
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not rid):
        raise RecordError(Problem.INVALID, f"{rt}.id must be a string", (f"{rt}.id",))
    if isinstance(rid, str):
        try:
            check_id(rid, f"{rt}.id")
        except RecordError as exc:
            raise RecordError(Problem.INVALID, exc.message, (f"{rt}.id",)) from None
    issues: list[Issue] = []
    model: BaseModel | None = None
    if structure:
        issues, model = _structure_issues(rt, resource)
        if issues:
            raise from_issues(Problem.INVALID, issues)
        if model is not None:
            issues = list(_binding_issues(model, rt))[:_MAX_ISSUES]
    issues += ins_issues(resource)
    if issues:
        raise from_issues(Problem.UNPROCESSABLE, issues)
