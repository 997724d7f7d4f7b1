"""The Bulk Data ``$export`` endpoints (FHIR Bulk Data Access IG v2, system and patient level).

- ``GET /fhir/{finess}/$export`` (everything) or ``.../Patient/$export`` (the patients and
  their compartments) with ``Prefer: respond-async`` -> 202, ``Content-Location``
  names the status URL; ``_type``, ``_since`` and ``_outputFormat`` (NDJSON) are understood,
  any other parameter is refused (400) rather than silently ignored;
- ``GET .../$export-status/{job}`` -> 202 with ``X-Progress`` and ``Retry-After`` while the
  job runs, 200 with the manifest when it is done, 500 with an OperationOutcome if it failed;
  ``DELETE`` cancels (202) and deletes the files;
- ``GET .../$export-file/{job}/{name}`` -> the NDJSON part, after its transfer is journaled.

The job runs in the server's thread pool after the 202 is sent (the service,
:mod:`hdsvault.records.bulk_export`, records progress in the database, so any worker
process answers the status). These routes are matched before the generic
``/{finess}/{type}`` ones.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import Response, StreamingResponse

from hdsvault.api.fhir.routes import ROUTES, Route, _caller, _run, _store
from hdsvault.api.fhir.wire import base_url, fhir_response
from hdsvault.blobs import BlobStore, open_blob_store
from hdsvault.records import bulk_export, jsonio
from hdsvault.records.bulk_export import ExportRequest, ExportScope, ExportStatus
from hdsvault.records.errors import Issue, Problem, RecordError, information, operation_outcome
from hdsvault.records.model import check_type

router = APIRouter()

_NDJSON = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
_ASYNC = "respond-async"
RETRY_AFTER_SECONDS = 2


def _blobs(request: Request) -> BlobStore:
    state = request.app.state
    store: BlobStore | None = getattr(state, "export_blobs", None)
    if store is None:
        platform = state.platform
        store = state.export_blobs = open_blob_store(platform.settings, platform.engine)
    return store


def _export_type(name: str) -> str:
    try:
        return check_type(name)
    except RecordError as exc:
        raise RecordError(Problem.INVALID, f"_type: {exc.message}", ("_type",)) from None


def parse_kick_off(
    params: list[tuple[str, str]],
    prefer: str | None,
    path: str,
    scope: ExportScope = ExportScope.SYSTEM,
) -> ExportRequest:
    """The kick-off request, or a clear refusal of what this server does not do."""
    if _ASYNC not in [p.strip().lower() for p in (prefer or "").split(",")]:
        raise RecordError(Problem.INVALID, "$export is asynchronous: send 'Prefer: respond-async'")
    types: list[str] = []
    since: datetime | None = None
    for key, value in params:
        if key == "_type":
            types += [_export_type(t.strip()) for t in value.split(",") if t.strip()]
        elif key == "_since":
            try:
                since = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise RecordError(
                    Problem.INVALID, f"_since {value[:40]!r} is not a FHIR instant", ("_since",)
                ) from None
            if since.tzinfo is None:
                raise RecordError(Problem.INVALID, "_since needs a time zone", ("_since",))
        elif key == "_outputFormat":
            if value.strip().lower() not in _NDJSON:
                raise RecordError(
                    Problem.NOT_SUPPORTED,
                    f"_outputFormat {value[:40]!r}: only application/fhir+ndjson is produced",
                )
        elif key != "_format":
            raise RecordError(
                Problem.NOT_SUPPORTED,
                f"$export parameter {key[:40]!r} is not supported (known: _type, _since, "
                "_outputFormat)",
            )
    query = "&".join(f"{k}={v}" for k, v in params)
    url = path + (f"?{query}" if query else "")
    return ExportRequest(tuple(dict.fromkeys(types)), since, url, scope)


@router.get("/{finess}/$export", include_in_schema=False)
async def kick_off(request: Request, finess: str, background: BackgroundTasks) -> Response:
    return await _kick_off(request, finess, background, ExportScope.SYSTEM, "$export")


@router.get("/{finess}/Patient/$export", include_in_schema=False)
async def kick_off_patients(request: Request, finess: str, background: BackgroundTasks) -> Response:
    return await _kick_off(request, finess, background, ExportScope.PATIENT, "Patient/$export")


async def _kick_off(
    request: Request, finess: str, background: BackgroundTasks, scope: ExportScope, path: str
) -> Response:
    caller = await _caller(request, finess)
    asked = parse_kick_off(
        list(request.query_params.multi_items()),
        request.headers.get("prefer"),
        f"{base_url(request, finess)}/{path}",
        scope,
    )
    store = _store(request)
    job = await _run(bulk_export.kick_off, store, caller, asked)
    background.add_task(bulk_export.run, store, _blobs(request), caller, job.id)
    return fhir_response(
        information(f"export job {job.id} accepted"),
        202,
        {"Content-Location": f"{base_url(request, finess)}/$export-status/{job.id}"},
    )


@router.get("/{finess}/$export-status/{job_id}", include_in_schema=False)
async def export_status(request: Request, finess: str, job_id: str) -> Response:
    caller = await _caller(request, finess)
    job = await _run(bulk_export.status, _store(request), caller, job_id)
    if job.status in (ExportStatus.ACCEPTED, ExportStatus.RUNNING):
        return Response(
            status_code=202,
            headers={
                "X-Progress": f"{job.status.value}: {job.written} resources written",
                "Retry-After": str(RETRY_AFTER_SECONDS),
            },
        )
    if job.status is ExportStatus.COMPLETED:
        files = f"{base_url(request, finess)}/$export-file/{job.id}/{{name}}"
        return Response(
            jsonio.dumps(job.manifest(files)), status_code=200, media_type="application/json"
        )
    if job.status is ExportStatus.CANCELLED:
        raise RecordError(Problem.NOT_FOUND, f"export job {job.id} was cancelled")
    return fhir_response(
        operation_outcome([Issue(f"export job {job.id} failed: {job.error}", "exception")]),
        500,
    )


@router.delete("/{finess}/$export-status/{job_id}", include_in_schema=False)
async def export_cancel(request: Request, finess: str, job_id: str) -> Response:
    caller = await _caller(request, finess)
    await _run(bulk_export.cancel, _store(request), _blobs(request), caller, job_id)
    return fhir_response(information(f"export job {job_id} cancelled"), 202)


@router.get("/{finess}/$export-file/{job_id}/{name}", include_in_schema=False)
async def export_file(request: Request, finess: str, job_id: str, name: str) -> Response:
    caller = await _caller(request, finess)
    chunks = await _run(
        lambda: list(bulk_export.open_part(_store(request), _blobs(request), caller, job_id, name))
    )
    return StreamingResponse(iter(chunks), media_type="application/fhir+ndjson")


ROUTES.append(Route("operation", "export", "GET", "/{finess}/$export"))
ROUTES.append(Route("operation", "patient-export", "GET", "/{finess}/Patient/$export"))
