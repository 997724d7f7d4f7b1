"""The DICOMweb face (PS3.18): STOW-RS, QIDO-RS, WADO-RS under ``/dicomweb/{finess}``.

Parses, authenticates (bearer, like the rest of the API) and renders; each request is one
call to the imaging service (``hdsvault.imaging``), which authorizes and journals. Errors
answer JSON ``{"error": ...}`` with 400/403/404/406/409/413/415/503, never a 500.

Conventions (``docs/imaging.md``): QIDO accepts attribute keywords or tags, the wildcard
``*`` raw or percent-encoded (``%2A``), ``limit``/``offset``, ``includefield``
(``all`` or a list); WADO-RS returns instances in their stored transfer syntax (no
transcoding: ``transfer-syntax=*`` semantics), metadata as DICOM JSON, frames as stored.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from hdsvault.access.context import current_request_meta
from hdsvault.access.tokens import Principal
from hdsvault.api.auth import CurrentPrincipal, require_principal
from hdsvault.api.held_retrieval import held_retrieval
from hdsvault.api.loop_calls import call_on, settle
from hdsvault.imaging import multipart, queries, retrieve
from hdsvault.imaging.attributes import Level, parse_attribute
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.fhir import sync_studies
from hdsvault.imaging.store import ImagingStore
from hdsvault.platform import Platform
from hdsvault.records.model import Caller
from hdsvault.tenants.finess import validate_finess

router = APIRouter(prefix="/dicomweb/{finess}", tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"
_STATUS = {
    Kind.INVALID: 400,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
    Kind.UNAVAILABLE: 503,
}
_FAILURE_REASON = {
    Kind.INVALID: 0xC000,  # cannot understand
    Kind.CONFLICT: 0xA900,  # data set does not match (study/series mismatch)
    Kind.TOO_LARGE: 0xA700,  # out of resources
    Kind.UNAVAILABLE: 0xA700,
    Kind.FORBIDDEN: 0x0124,
    Kind.NOT_FOUND: 0x0110,
}
_lock = threading.Lock()
T = TypeVar("T")
STREAM_PIECE = 2 * 1024 * 1024
"""A streamed WADO-RS body is handed to the server in pieces of about this size: small pieces
(part headers, small instances) are joined rather than sent one by one (each piece sent costs
the event loop a pass through the middlewares and the HTTP protocol, and a hand-off between
the producer thread and the event loop). Server CPU per study of 40 x 525 KB, two servers
side by side: 18.25 ms in 1 MiB pieces against 15.5 ms in 4 MiB ones; in another run 14.0 ms
in 2 MiB pieces against 14.25 ms in 4 MiB ones (docs/imaging-bench.md)."""
STREAM_AHEAD = 2
"""Pieces of a streamed WADO-RS body read and opened ahead of the one being sent (memory: this
many pieces, plus the one being produced and the one being sent)."""
TURN_AFTER = 32 * 1024 * 1024
"""A body made on the event loop (:func:`made_here`) gives the loop a turn at least after
this many bytes, besides the turns it takes when a callback is due. Not a turn after every
piece: that changed how the body left (in smaller reads on the client's side) and cost a
client that reads as fast as it can dearly: per five 40 x 525 KB studies (21 MB each), two
servers side by side, 12 rounds alternating, a turn per 2 MiB piece 124.0 ms against 86.0
without; one per 8 MiB 89.8 and 136.6 ms against 83.5 and 88.6."""
IN_MEMORY = 16 * 1024 * 1024
"""A retrieval of at most this many bytes is read whole (while its journal entry is flushed)
and sent as one body; a larger one is streamed, one piece at a time (memory bound)."""
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "count"}


class DicomWebError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def imaging_store(request: Request) -> ImagingStore:
    """One imaging store per application (its blob store and FHIR link are shared).

    ``async``: built once, then an attribute read; no worker thread per request for it.
    """
    state = request.app.state
    store: ImagingStore | None = getattr(state, "imaging_store", None)
    if store is None:
        with _lock:
            store = getattr(state, "imaging_store", None)
            if store is None:
                platform: Platform = state.platform
                store = state.imaging_store = ImagingStore(platform)
    return store


Store = Annotated[ImagingStore, Depends(imaging_store)]


def _caller(request: Request, principal: Principal, finess: str) -> Caller:
    try:
        validate_finess(finess)
    except ValueError as exc:
        raise DicomWebError(404, f"no establishment {finess[:20]!r}: {exc}") from None
    meta = current_request_meta()
    source = meta.source_address if meta else (request.client.host if request.client else None)
    if meta is not None and meta.request_id:
        return Caller(principal, finess, request_id=meta.request_id, source_address=source)
    return Caller(principal, finess, source_address=source)


def _error(exc: ImagingError | DicomWebError) -> JSONResponse:
    status = exc.status if isinstance(exc, DicomWebError) else _STATUS[exc.kind]
    return JSONResponse({"error": exc.message}, status_code=status)


def _base(request: Request, finess: str) -> str:
    return str(request.base_url).rstrip("/") + f"/dicomweb/{finess}"


# -- STOW-RS -------------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise DicomWebError(413, f"body of {declared} bytes exceeds dicom.max_stow_bytes={limit}")
    # Chunks are kept as they come and joined once: a growing bytearray was copied at every
    # resize, and with concurrent uploads the copies were quadratic (see docs/imaging-bench.md).
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise DicomWebError(413, f"body exceeds dicom.max_stow_bytes={limit}")
    return b"".join(chunks)


@router.post("/studies")
@router.post("/studies/{study}")
async def stow(
    request: Request,
    finess: str,
    principal: CurrentPrincipal,
    store: Store,
    study: str | None = None,
) -> Response:
    try:
        caller = _caller(request, principal, finess)
        media, params = multipart.content_type_params(request.headers.get("content-type", ""))
        if media != "multipart/related":
            raise DicomWebError(415, 'STOW-RS takes multipart/related; type="application/dicom"')
        if params.get("type", "application/dicom").lower() != "application/dicom":
            raise DicomWebError(
                415, "only application/dicom parts are accepted (no metadata + bulk data form)"
            )
        body = await _read_body(request, store.settings.dicom.max_stow_bytes)
        parts = multipart.parse(body, params.get("boundary", ""))
        del body
        if not parts:
            raise DicomWebError(400, "the multipart body holds no part")
        files = []
        for p in parts:
            if p.content_type not in ("application/dicom", ""):
                raise DicomWebError(
                    415, f"part of type {p.content_type!r}: expected application/dicom"
                )
            files.append(p.body)
        outcomes = await run_in_threadpool(
            store.store_many, caller, files, source=f"dicomweb:{principal.subject}"[:255]
        )
    except (ImagingError, DicomWebError) as exc:
        return _error(exc)
    base = _base(request, finess)
    referenced, failed = [], []
    wrong_study: set[int] = set()
    for i, o in enumerate(outcomes):
        if o.status != "failed" and study is not None and o.study_uid != study:
            wrong_study.add(i)
    stored_ids = []
    for i, o in enumerate(outcomes):
        item: dict[str, Any] = {}
        if o.sop_class_uid:
            item["00081150"] = {"vr": "UI", "Value": [o.sop_class_uid]}
        if o.sop_uid:
            item["00081155"] = {"vr": "UI", "Value": [o.sop_uid]}
        if o.status == "failed" or i in wrong_study:
            kind = o.error.kind if o.error else Kind.CONFLICT
            item["00081197"] = {"vr": "US", "Value": [_FAILURE_REASON.get(kind, 0xC000)]}
            failed.append(item)
        else:
            if o.study_id:
                stored_ids.append(o.study_id)
            item["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{o.study_uid}"]}
            referenced.append(item)
    if stored_ids:
        try:
            await run_in_threadpool(sync_studies, store, caller, stored_ids)
        except Exception as exc:  # derived data: the instances are stored and acknowledged
            import structlog

            structlog.get_logger("hdsvault.dicomweb").warning(
                "imagingstudy.sync-deferred", error=type(exc).__name__
            )
    out: dict[str, Any] = {}
    if study is not None:
        out["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if failed:
        out["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        out["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else (202 if referenced else 409)
    return Response(json.dumps(out), status_code=status, media_type=DICOM_JSON)


# -- QIDO-RS -------------------------------------------------------------------------------------


def _query(request: Request, level: Level, fixed: dict[str, str]) -> queries.Query:
    q = queries.Query(level)
    for name, value in request.query_params.multi_items():
        key = name.strip()
        if key.lower() in _RESERVED:
            low = key.lower()
            if low in ("limit", "offset"):
                if not value.strip().isdigit():
                    raise DicomWebError(400, f"{low} must be a non-negative integer")
                setattr(q, low, int(value))
            elif low == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if item == "all":
                        q.include_all = True
                    elif item:
                        try:
                            q.include.add(parse_attribute(item))
                        except ValueError as exc:
                            raise DicomWebError(400, str(exc)) from None
            continue
        try:
            tag = parse_attribute(key.split(".")[0])
        except ValueError as exc:
            raise DicomWebError(400, str(exc)) from None
        q.filters[tag] = value
    for keyword, value in fixed.items():
        q.filters[parse_attribute(keyword)] = value
    max_results = 100_000
    if q.limit is None or q.limit > max_results:
        q.limit = max_results
    return q


async def _qido(
    request: Request,
    finess: str,
    principal: Principal,
    store: ImagingStore,
    level: Level,
    fixed: dict[str, str],
) -> Response:
    try:
        caller = _caller(request, principal, finess)
        q = _query(request, level, fixed)
        result = await run_in_threadpool(
            queries.run, store, caller, q, retrieve_base=_base(request, finess)
        )
    except (ImagingError, DicomWebError) as exc:
        return _error(exc)
    headers = {}
    if result.truncated:
        headers["Warning"] = '299 hdsvault "the query scanned its limit; narrow it"'
    body = json.dumps([h.attrs for h in result.hits])
    return Response(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies")
async def qido_studies(
    request: Request, finess: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _qido(request, finess, principal, store, Level.STUDY, {})


@router.get("/series")
async def qido_all_series(
    request: Request, finess: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _qido(request, finess, principal, store, Level.SERIES, {})


@router.get("/instances")
async def qido_all_instances(
    request: Request, finess: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _qido(request, finess, principal, store, Level.IMAGE, {})


@router.get("/studies/{study}/series")
async def qido_series(
    request: Request, finess: str, study: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _qido(request, finess, principal, store, Level.SERIES, {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances")
async def qido_study_instances(
    request: Request, finess: str, study: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _qido(request, finess, principal, store, Level.IMAGE, {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances")
async def qido_instances(
    request: Request,
    finess: str,
    study: str,
    series: str,
    principal: CurrentPrincipal,
    store: Store,
) -> Response:
    return await _qido(
        request,
        finess,
        principal,
        store,
        Level.IMAGE,
        {"StudyInstanceUID": study, "SeriesInstanceUID": series},
    )


# -- WADO-RS -------------------------------------------------------------------------------------


def _accepts(request: Request, *types: str) -> bool:
    accept = request.headers.get("accept", "*/*").lower()
    return any(t in accept for t in (*types, "*/*", "multipart/related;")) or not accept.strip()


_RETRIEVALS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="wado-rs")
"""The threads WADO-RS retrievals are prepared in (40: Starlette's thread pool's limit)."""


async def _in_thread(work: Callable[[], T]) -> T:
    """``work()`` in a thread of :data:`_RETRIEVALS`, in this request's context (its request
    id, its access context): what ``run_in_threadpool`` does, without anyio's cancel scope
    and capacity limiter around each call, which were ~10 % of the server's time per WADO-RS
    request of a 40 x 39 KB study (``py-spy --gil``). A client gone meanwhile leaves the
    thread to finish its retrieval (journaled, as with ``run_in_threadpool``)."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_RETRIEVALS, ctx.run, work)


def _part_type(ref: retrieve.InstanceRef) -> str:
    return f"application/dicom; transfer-syntax={ref.transfer_syntax_uid}"


async def wado(request: Request) -> Response:
    """WADO-RS retrieval of a study, a series or an instance, as multipart/related.

    A plain Starlette endpoint (no FastAPI dependency solving), served ahead of the router:
    the hot path of image viewers, where the framework's per-request work was a third of the
    server's time (measured, docs/imaging-bench.md). A retrieval that waits for nothing is served
    on the event loop (:mod:`hdsvault.api.held_retrieval`); any other, and every refusal,
    has its authentication, lookup, journaling and decryption in one worker-thread hop. A
    retrieval that fits ``IN_MEMORY`` is decrypted straight into its response body; a
    larger one is streamed."""
    params = request.path_params
    finess, study = params["finess"], params["study"]
    series, sop = params.get("series"), params.get("sop")
    # The template for the request metrics and log line (FastAPI names only its own routes).
    request.scope["route"] = WADO_ROUTES[2 if sop else 1 if series else 0]
    store = await imaging_store(request)
    platform: Platform = request.app.state.platform
    boundary = multipart.new_boundary()
    head_only = request.method == "HEAD"  # Starlette routes HEAD to GET's endpoint

    def layout(refs: list[retrieve.InstanceRef]) -> tuple[bytearray, list[memoryview]]:
        return multipart.frame_into([(_part_type(r), r.size) for r in refs], boundary)

    def authorized_retrieval() -> tuple[Caller, retrieve.Retrieval]:
        principal = require_principal(request, platform)
        caller = _caller(request, principal, finess)
        if not _accepts(request, "application/dicom", "multipart/related"):
            raise DicomWebError(406, 'WADO-RS serves multipart/related; type="application/dicom"')
        found = retrieve.retrieve(
            store, caller, *uids, in_memory=0 if head_only else IN_MEMORY, layout=layout
        )
        return caller, found

    def caller_of(principal: Principal) -> Caller | None:
        try:
            return _caller(request, principal, finess)
        except DicomWebError:
            return None

    uids = ([study], [series] if series else [], [sop] if sop else [])
    try:
        served = None
        if not head_only and _accepts(request, "application/dicom", "multipart/related"):
            served = await held_retrieval(
                request, store, caller_of, uids, layout, IN_MEMORY, _in_thread
            )
        caller, found = served if served is not None else await _in_thread(authorized_retrieval)
    except (ImagingError, DicomWebError) as exc:
        return _error(exc)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if found.body is not None:  # opened already, in place: one body
        return Response(memoryview(found.body), media_type=media)
    refs = found.refs
    length = multipart.framed_length(((_part_type(r), r.size) for r in refs), boundary)
    if head_only:
        # What a GET would answer, without its body: nothing read or decrypted (a HEAD cost
        # a whole retrieval before), still journaled as the retrieval it describes (the
        # caller learns which instances exist and their sizes).
        return Response(media_type=media, headers={"Content-Length": str(length)})
    body = multipart.coalesce(_pieces(store, caller.tenant, found, boundary), STREAM_PIECE)
    return StreamingResponse(
        made_here(body) if retrieve.held(store, refs) else prefetched(body, STREAM_AHEAD),
        media_type=media,
        headers={"Content-Length": str(length)},
    )


def _pieces(
    store: ImagingStore, tenant: str, found: retrieve.Retrieval, boundary: str
) -> Iterator[bytes | memoryview]:
    """The multipart body of a retrieval too large to open whole, in pieces: each run of
    one-segment instances (most) opened in place into one piece of about ``STREAM_PIECE``
    bytes, delimiters and headers included; an instance of several segments streamed segment
    by segment. Memory: one piece, or one segment.

    Why in place: opening each instance to its own plaintext and joining them into pieces
    cost a copy of the whole body and an allocation per instance (in-process, a study of
    40 x 525 KB: 8.1 -> 6.7 ms, docs/imaging-bench.md)."""
    run: list[retrieve.InstanceRef] = []
    held = 0

    def opened(close: bool) -> memoryview:
        piece, slots = multipart.frame_into(
            [(_part_type(r), r.size) for r in run], boundary, close=close
        )
        for r, slot in zip(run, slots, strict=True):
            retrieve.read_into(store, tenant, r, found.keys, slot)
        run.clear()
        return memoryview(piece)

    last = len(found.refs) - 1
    for i, ref in enumerate(found.refs):
        if retrieve.one_segment(store, ref):
            run.append(ref)
            held += ref.size
            if held >= STREAM_PIECE or i == last:
                yield opened(close=i == last)
                held = 0
            continue
        if run:
            yield opened(close=False)
            held = 0
        yield multipart.part_head(_part_type(ref), boundary)
        yield from retrieve.stream(store, tenant, ref, found.keys)
        yield b"\r\n" + (multipart.closing(boundary) if i == last else b"")


WADO_ROUTES = [
    Route(router.prefix + path, wado, methods=["GET"])
    for path in (
        "/studies/{study}",
        "/studies/{study}/series/{series}",
        "/studies/{study}/series/{series}/instances/{sop}",
    )
]
"""The hot path: served ahead of the router (:class:`hdsvault.api.hot_routes.HotRoutes`)."""


async def made_here(pieces: Iterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """``pieces`` made on the event loop, each just before it is sent: for a retrieval whose
    sealed blobs are all in the process caches (:func:`retrieve.held`), where making a piece
    reads nothing and only decrypts it (~0.25 ms per 2 MiB piece, the loop's other requests
    served between pieces).

    Why not :func:`prefetched` there: its thread then only adds hand-offs (a wake-up of the
    loop per piece, the interpreter lock passed back and forth) and a third runnable thread
    on a machine whose other core runs the client. 40 x 525 KB studies, two servers side by
    side (before / after) and Orthanc, 14 rounds alternating, twice (docs/imaging-bench.md): time
    per study -13 % and -15 % through httpx; through a minimal client +8 % (right after the
    upload) then -2 %; server CPU -7 to -12 %. A retrieval that must read keeps the thread:
    a read from disk would hold every other request of the loop.

    The loop gets a turn (``sleep(0)``) between pieces when a callback is due on it, and at
    least every :data:`TURN_AFTER` bytes: once the client is gone, uvicorn's ``send``
    returns without waiting, and without a turn the connection's loss (scheduled as such a
    callback) and the response's cancellation would be seen only after the whole body had
    been decrypted for nobody, with asyncio warning at each write to the lost connection
    (seen with clients cutting a 21 MB study after 1 MB: 6 warnings in 20 cuts, none with
    the turns; tested). The turns are not free: 4-10 % more time per 40 x 525 KB study
    through a client that reads as fast as it can (A/B 0.905 and 0.956), none through httpx.
    Other requests' callbacks get their turns the same way.
    """
    # Callbacks due now on CPython's event loop (a connection's loss is one); another loop
    # (none is used here) gets its turns by bytes alone.
    due: Sized = getattr(asyncio.get_running_loop(), "_ready", ())
    since_turn = 0
    try:
        for piece in pieces:
            yield piece
            since_turn += len(piece)
            if due or since_turn >= TURN_AFTER:
                since_turn = 0
                await asyncio.sleep(0)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


async def prefetched(
    pieces: Iterator[bytes | memoryview], ahead: int
) -> AsyncIterator[bytes | memoryview]:
    """``pieces``, produced by a thread of their own up to ``ahead`` pieces before they are sent.

    Why: with one worker-thread hop per piece (``iterate_in_threadpool``) the next piece is
    read and opened only once the previous one has been written to the socket, so reading,
    decrypting and sending take turns; here they overlap (file reads, AES-GCM and socket
    writes release the interpreter lock, so two cores work). Memory stays bounded: ``ahead``
    pieces waiting, one being produced, one being sent. The producer is a thread of its own,
    not one of a pool: a slow client holds it for the whole response, and must not hold a
    thread that other requests wait for. If the sender stops early (client gone, error), the
    producer stops at its next piece and ``pieces`` is closed in its thread; an exception
    raised by ``pieces`` is raised here, in the sender.
    """
    if ahead < 1:
        raise ValueError("prefetched: ahead must be at least 1")
    loop = asyncio.get_running_loop()
    ready: queue.Queue[tuple[bytes | memoryview | None, BaseException | None]] = queue.Queue(ahead)
    wake = asyncio.Event()
    stop = threading.Event()
    finished: asyncio.Future[None] = loop.create_future()

    def put(item: tuple[bytes | memoryview | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
            except queue.Full:
                continue
            call_on(loop, wake.set)
            return True
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not put((piece, None)):
                    return
            put((None, None))
        except BaseException as exc:  # handed to the sender, raised there
            put((None, exc))
        finally:
            try:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
            finally:
                call_on(loop, settle, finished)

    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(produce,), name="wado-stream", daemon=True).start()
    try:
        while True:
            wake.clear()  # before looking: a piece put after the look sets it again
            try:
                piece, error = ready.get_nowait()
            except queue.Empty:
                await wake.wait()
                continue
            if error is not None:
                raise error
            if piece is None:
                return
            yield piece
    finally:
        stop.set()
        await asyncio.shield(finished)


async def _metadata(
    request: Request,
    finess: str,
    principal: Principal,
    store: ImagingStore,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    try:
        caller = _caller(request, principal, finess)
        refs = await run_in_threadpool(
            retrieve.locate,
            store,
            caller,
            [study],
            [series] if series else [],
            [sop] if sop else [],
            what="metadata",
        )
        metas = await run_in_threadpool(retrieve.metadata, store, caller, refs)
    except (ImagingError, DicomWebError) as exc:
        return _error(exc)
    return Response(json.dumps(metas), media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata")
async def metadata_study(
    request: Request, finess: str, study: str, principal: CurrentPrincipal, store: Store
) -> Response:
    return await _metadata(request, finess, principal, store, study)


@router.get("/studies/{study}/series/{series}/metadata")
async def metadata_series(
    request: Request,
    finess: str,
    study: str,
    series: str,
    principal: CurrentPrincipal,
    store: Store,
) -> Response:
    return await _metadata(request, finess, principal, store, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata")
async def metadata_instance(
    request: Request,
    finess: str,
    study: str,
    series: str,
    sop: str,
    principal: CurrentPrincipal,
    store: Store,
) -> Response:
    return await _metadata(request, finess, principal, store, study, series, sop)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{numbers}")
async def wado_frames(
    request: Request,
    finess: str,
    study: str,
    series: str,
    sop: str,
    numbers: str,
    principal: CurrentPrincipal,
    store: Store,
) -> Response:
    try:
        caller = _caller(request, principal, finess)
        wanted = [int(n) for n in numbers.split(",") if n.strip()]
        if not wanted:
            raise DicomWebError(400, "frame list is empty")
    except ValueError:
        return _error(DicomWebError(400, f"frame list {numbers[:40]!r} is not integers"))
    except DicomWebError as exc:
        return _error(exc)
    try:
        refs = await run_in_threadpool(
            retrieve.locate, store, caller, [study], [series], [sop], what="frames"
        )
        keys = await run_in_threadpool(retrieve.data_keys, store, caller.tenant)
        data = await run_in_threadpool(retrieve.read, store, caller.tenant, refs[0], keys)
        frames, ctype = await run_in_threadpool(retrieve.frames, data, wanted)
    except ImagingError as exc:
        return _error(exc)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.frame(((ctype, [f]) for f in frames), boundary))
    return Response(body, media_type=f'multipart/related; type="{ctype}"; boundary={boundary}')
