"""The FHIR R4 REST endpoints, one service call each: parse, authenticate, call, render.

Scoping: every URL starts with the establishment's FINESS (``/fhir/{finess}/...``); the
bearer token's tenant must be that establishment, or the store's guard refuses (403,
journaled). The CapabilityStatement (``/fhir/{finess}/metadata``) is public: it describes
the server, holds no data, and clients read it before authenticating.

Each endpoint registers itself with the FHIR interaction it implements (:data:`ROUTES`);
the CapabilityStatement is generated from that table, so it lists exactly what is routed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hdsvault.api.auth import require_principal
from hdsvault.api.fhir import render
from hdsvault.api.fhir.capability import capability_statement
from hdsvault.api.fhir.wire import (
    FORM_TYPE,
    PATCH_TYPE,
    Prefer,
    base_url,
    body_kind,
    check_format,
    etag,
    fhir_response,
    read_body,
    version_headers,
)
from hdsvault.records import audit_view, bundles, jsonio, reads, searching, writes
from hdsvault.records.bundles import parse_etag
from hdsvault.records.errors import Problem, RecordError, information
from hdsvault.records.model import Caller, Stored, check_type, utc
from hdsvault.records.store import RecordStore
from hdsvault.records.summary import elements, summarize
from hdsvault.tenants.finess import validate_finess

Endpoint = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """One routed FHIR interaction (the CapabilityStatement is built from these)."""

    level: str  # "instance" | "type" | "system" | "operation"
    interaction: str
    method: str
    path: str


ROUTES: list[Route] = []
router = APIRouter()


def fhir_route(
    level: str, interaction: str, method: str, path: str
) -> Callable[[Endpoint], Endpoint]:
    def register(fn: Endpoint) -> Endpoint:
        ROUTES.append(Route(level, interaction, method, path))
        router.add_api_route(path, fn, methods=[method], include_in_schema=False)
        return fn

    return register


# ------------------------------------------------------------------ request plumbing


def _store(request: Request) -> RecordStore:
    store: RecordStore = request.app.state.record_store
    return store


def _check_finess(finess: str) -> str:
    try:
        return validate_finess(finess)
    except ValueError:
        raise RecordError(Problem.NOT_FOUND, f"{finess[:20]!r} is not a FINESS number") from None


async def _caller(request: Request, finess: str) -> Caller:
    _check_finess(finess)
    check_format(request)
    platform = request.app.state.platform
    principal = await run_in_threadpool(require_principal, request, platform)
    state = request.scope.get("state") or {}
    request_id = state.get("request_id") if isinstance(state, dict) else None
    kwargs: dict[str, Any] = {}
    if request_id:
        kwargs["request_id"] = str(request_id)
    return Caller(
        principal, finess, source_address=request.client.host if request.client else None, **kwargs
    )


def _limit(request: Request) -> int:
    return int(_store(request).platform.settings.server.max_body_bytes)


async def _json_body(request: Request) -> dict[str, Any]:
    body_kind(request)
    data = await read_body(request, _limit(request))
    return jsonio.parse_object(data)


def _pairs(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items()]


def _search_pairs(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    offset = 0
    out = []
    for k, v in pairs:
        if k in ("_offset", "_getpagesoffset"):
            if not v.isdigit() or len(v) > 8:
                raise RecordError(Problem.INVALID, f"{k} must be a non-negative integer", (k,))
            offset = int(v)
        elif k == "_format":
            continue
        else:
            out.append((k, v))
    return out, offset


def _resource_response(
    request: Request,
    stored: Stored,
    status: int,
    prefer: Prefer,
    base: str,
    location: bool,
) -> Response:
    headers = version_headers(stored, base, location)
    if prefer.return_ == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer.return_ == "OperationOutcome":
        what = "created" if status == 201 else "updated"
        return fhir_response(
            information(f"{stored.type}/{stored.id} {what}, version {stored.version}"),
            status,
            headers,
        )
    resource = stored.resource or {}
    summary = request.query_params.get("_summary")
    names = [n for n in (request.query_params.get("_elements") or "").split(",") if n]
    return fhir_response(elements(summarize(resource, summary), names), status, headers)


def _upserted(
    request: Request, result: writes.WriteResult, prefer: Prefer, finess: str
) -> Response:
    """An update's answer: 201 with Location when it created the resource, else 200."""
    status = 201 if result.created else 200
    return _resource_response(
        request, result.stored, status, prefer, base_url(request, finess), result.created
    )


def _if_match(request: Request) -> int | None:
    return parse_etag(request.headers.get("if-match"))


def _not_modified(request: Request, stored: Stored) -> bool:
    inm = request.headers.get("if-none-match")
    if inm and inm.strip() in (etag(stored.version), f'"{stored.version}"', "*"):
        return True
    ims = request.headers.get("if-modified-since")
    if ims:
        from email.utils import parsedate_to_datetime

        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, IndexError):
            return False
        return utc(stored.last_updated).replace(microsecond=0) <= utc(since)
    return False


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
    return run_in_threadpool(fn, *args, **kwargs)


# ------------------------------------------------------------------ system level


@fhir_route("system", "capabilities", "GET", "/{finess}/metadata")
async def metadata(request: Request, finess: str) -> Response:
    _check_finess(finess)
    check_format(request)
    return fhir_response(capability_statement(base_url(request, finess), ROUTES))


@fhir_route("system", "transaction", "POST", "/{finess}")
async def system_bundle(request: Request, finess: str) -> Response:
    caller = await _caller(request, finess)
    prefer = Prefer.of(request)
    bundle = await _json_body(request)
    result = await _run(bundles.process, _store(request), caller, bundle)
    return fhir_response(
        render.bundle_response(
            result, base_url(request, finess), prefer.return_ == "representation"
        )
    )


ROUTES.append(Route("system", "batch", "POST", "/{finess}"))


@fhir_route("system", "history-system", "GET", "/{finess}/_history")
async def system_history(request: Request, finess: str) -> Response:
    caller = await _caller(request, finess)
    return await _history(request, caller, finess, None, None)


# ------------------------------------------------------------------ audit (journal view)


@fhir_route("operation", "access-history", "GET", "/{finess}/Patient/{resource_id}/$access-history")
async def access_history(request: Request, finess: str, resource_id: str) -> Response:
    caller = await _caller(request, finess)
    pairs, offset = _search_pairs(_pairs(request))
    result = await _run(
        audit_view.access_history, _store(request), caller, resource_id, pairs, offset
    )
    return fhir_response(
        audit_view.render_bundle(
            result, base_url(request, finess), f"Patient/{resource_id}/$access-history", pairs
        )
    )


@fhir_route("type", "search-type", "GET", "/{finess}/AuditEvent")
async def audit_search(request: Request, finess: str) -> Response:
    caller = await _caller(request, finess)
    pairs, offset = _search_pairs(_pairs(request))
    result = await _run(
        audit_view.search, _store(request), caller, pairs, offset, Prefer.of(request).strict
    )
    return fhir_response(
        audit_view.render_bundle(result, base_url(request, finess), "AuditEvent", pairs)
    )


@fhir_route("instance", "read", "GET", "/{finess}/AuditEvent/{entry_id}")
async def audit_read(request: Request, finess: str, entry_id: str) -> Response:
    caller = await _caller(request, finess)
    event = await _run(audit_view.read, _store(request), caller, entry_id)
    return fhir_response(event)


# ------------------------------------------------------------------ type level


@fhir_route("type", "history-type", "GET", "/{finess}/{resource_type}/_history")
async def type_history(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    return await _history(request, caller, finess, resource_type, None)


@fhir_route("type", "search-type", "GET", "/{finess}/{resource_type}")
async def search_get(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    return await _search(request, caller, finess, resource_type, _pairs(request))


@fhir_route("type", "search-type", "POST", "/{finess}/{resource_type}/_search")
async def search_post(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    body_kind(request, {FORM_TYPE})
    data = await read_body(request, _limit(request))
    try:
        form = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise RecordError(Problem.INVALID, "the form body is not UTF-8") from None
    return await _search(request, caller, finess, resource_type, _pairs(request) + form)


async def _search(
    request: Request, caller: Caller, finess: str, resource_type: str, raw: list[tuple[str, str]]
) -> Response:
    check_type(resource_type)
    pairs, offset = _search_pairs(raw)
    strict = Prefer.of(request).strict
    result = await _run(
        searching.search,
        _store(request),
        caller,
        resource_type,
        pairs,
        strict=strict,
        offset=offset,
    )
    return fhir_response(render.searchset(result, base_url(request, finess), resource_type, pairs))


@fhir_route("type", "create", "POST", "/{finess}/{resource_type}")
async def create(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    prefer = Prefer.of(request)
    resource = await _json_body(request)
    ine = request.headers.get("if-none-exist")
    criteria = parse_qsl(ine.lstrip("?").split("?")[-1], keep_blank_values=True) if ine else None
    result = await _run(
        writes.create, _store(request), caller, resource_type, resource, if_none_exist=criteria
    )
    status = 201 if result.changed else 200
    return _resource_response(
        request, result.stored, status, prefer, base_url(request, finess), result.changed
    )


@fhir_route("type", "conditional-update", "PUT", "/{finess}/{resource_type}")
async def conditional_update(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    prefer = Prefer.of(request)
    resource = await _json_body(request)
    criteria, _ = _search_pairs(_pairs(request))
    result = await _run(
        writes.conditional_update,
        _store(request),
        caller,
        resource_type,
        criteria,
        resource,
        if_match=_if_match(request),
    )
    return _upserted(request, result, prefer, finess)


@fhir_route("type", "conditional-delete", "DELETE", "/{finess}/{resource_type}")
async def conditional_delete(request: Request, finess: str, resource_type: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    criteria, _ = _search_pairs(_pairs(request))
    results = await _run(
        writes.conditional_delete, _store(request), caller, resource_type, criteria
    )
    if not results:
        return fhir_response(information("no resource matched: nothing deleted"), 200)
    return Response(status_code=204, headers={"ETag": etag(results[0].stored.version)})


# ------------------------------------------------------------------ instance level


@fhir_route(
    "instance", "history-instance", "GET", "/{finess}/{resource_type}/{resource_id}/_history"
)
async def instance_history(
    request: Request, finess: str, resource_type: str, resource_id: str
) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    return await _history(request, caller, finess, resource_type, resource_id)


@fhir_route(
    "instance", "vread", "GET", "/{finess}/{resource_type}/{resource_id}/_history/{version}"
)
async def vread(
    request: Request, finess: str, resource_type: str, resource_id: str, version: str
) -> Response:
    caller = await _caller(request, finess)
    stored = await _run(reads.vread, _store(request), caller, resource_type, resource_id, version)
    return _resource_response(request, stored, 200, Prefer(), base_url(request, finess), False)


@fhir_route("instance", "read", "GET", "/{finess}/{resource_type}/{resource_id}")
async def read(request: Request, finess: str, resource_type: str, resource_id: str) -> Response:
    caller = await _caller(request, finess)
    stored = await _run(reads.read, _store(request), caller, resource_type, resource_id)
    if _not_modified(request, stored):
        return Response(status_code=304, headers=version_headers(stored))
    return _resource_response(request, stored, 200, Prefer(), base_url(request, finess), False)


@fhir_route("instance", "update", "PUT", "/{finess}/{resource_type}/{resource_id}")
async def update(request: Request, finess: str, resource_type: str, resource_id: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    prefer = Prefer.of(request)
    resource = await _json_body(request)
    result = await _run(
        writes.update,
        _store(request),
        caller,
        resource_type,
        resource_id,
        resource,
        if_match=_if_match(request),
    )
    return _upserted(request, result, prefer, finess)


@fhir_route("instance", "patch", "PATCH", "/{finess}/{resource_type}/{resource_id}")
async def patch(request: Request, finess: str, resource_type: str, resource_id: str) -> Response:
    caller = await _caller(request, finess)
    check_type(resource_type)
    prefer = Prefer.of(request)
    body_kind(request, {PATCH_TYPE})
    data = await read_body(request, _limit(request))
    try:
        operations = jsonio.loads(data)
    except ValueError:
        raise RecordError(Problem.INVALID, "the JSON Patch body is not valid JSON") from None
    result = await _run(
        writes.patch,
        _store(request),
        caller,
        resource_type,
        resource_id,
        operations,
        if_match=_if_match(request),
    )
    return _resource_response(request, result.stored, 200, prefer, base_url(request, finess), False)


@fhir_route("instance", "delete", "DELETE", "/{finess}/{resource_type}/{resource_id}")
async def delete(request: Request, finess: str, resource_type: str, resource_id: str) -> Response:
    caller = await _caller(request, finess)
    result = await _run(
        writes.delete,
        _store(request),
        caller,
        resource_type,
        resource_id,
        if_match=_if_match(request),
    )
    return Response(status_code=204, headers={"ETag": etag(result.stored.version)})


# ------------------------------------------------------------------ history (shared)


def _instant_param(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(
            Problem.INVALID, f"{name} must be an instant (YYYY-MM-DDThh:mm:ssZ)", (name,)
        ) from None
    if t.tzinfo is None:
        raise RecordError(Problem.INVALID, f"{name} needs a time zone", (name,))
    return utc(t)


async def _history(
    request: Request,
    caller: Caller,
    finess: str,
    resource_type: str | None,
    resource_id: str | None,
) -> Response:
    store = _store(request)
    raw_count = request.query_params.get("_count")
    if raw_count is not None and (not raw_count.isdigit() or len(raw_count) > 6):
        raise RecordError(Problem.INVALID, "_count must be a non-negative integer", ("_count",))
    count = min(
        int(raw_count) if raw_count else store.options.default_count, store.options.max_count
    )
    _, offset = _search_pairs(_pairs(request))
    page = await _run(
        reads.history,
        store,
        caller,
        resource_type,
        resource_id,
        count=count,
        offset=offset,
        since=_instant_param(request, "_since"),
        at=_instant_param(request, "_at"),
    )
    path = "/".join(p for p in (resource_type, resource_id) if p)
    return fhir_response(render.history(page, base_url(request, finess), path, count, offset))
