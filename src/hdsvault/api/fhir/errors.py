"""Every failure on /fhir is an OperationOutcome with the right status — never a bare 500.

Three nets, outermost last:

- :class:`~hdsvault.records.errors.RecordError` (the store's refusals) -> its status;
- Starlette/FastAPI errors (404 route, 405 method, 401 from ``api.auth``, request
  validation) -> the same status, rendered as an OperationOutcome;
- :class:`CrashToOutcome`, a pure-ASGI wrapper: any other exception is logged with the
  request id and answered 500 OperationOutcome (without details, which could leak data).
  The conformance tests send garbage so that none of it reaches this net.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hdsvault.api.fhir.wire import (
    FHIR_JSON,
    BodyTooLarge,
    NotAcceptable,
    UnsupportedMedia,
    fhir_response,
)
from hdsvault.records import jsonio
from hdsvault.records.errors import Issue, Problem, RecordError, operation_outcome

log = structlog.get_logger("hdsvault.fhir")

STATUS = {
    Problem.INVALID: 400,
    Problem.UNPROCESSABLE: 422,
    Problem.NOT_FOUND: 404,
    Problem.GONE: 410,
    Problem.CONFLICT: 409,
    Problem.PRECONDITION: 412,
    Problem.FORBIDDEN: 403,
    Problem.TOO_LARGE: 413,
    Problem.TOO_COSTLY: 400,
    Problem.NOT_SUPPORTED: 400,
    Problem.UNAVAILABLE: 503,
}

_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
}


def status_of(exc: RecordError, request: Request | None = None) -> int:
    if isinstance(exc, NotAcceptable):
        return 406
    if isinstance(exc, UnsupportedMedia):
        return 415
    if isinstance(exc, BodyTooLarge):
        return 413
    return STATUS[exc.problem]


def record_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecordError)
    return fhir_response(exc.outcome(), status_of(exc, request))


def http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no FHIR endpoint at {request.url.path[:200]}"
    issue = Issue(detail, _HTTP_CODES.get(exc.status_code, "exception"))
    return fhir_response(operation_outcome([issue]), exc.status_code, dict(exc.headers or {}))


def validation_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}",
            "invalid",
        )
        for e in exc.errors()[:10]
    ] or [Issue("invalid request")]
    return fhir_response(operation_outcome(issues), 400)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RecordError, record_error_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)


class CrashToOutcome:
    """Turn any uncaught exception into a 500 OperationOutcome (and a log line)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except RecursionError:
            if started:
                raise
            await _send(send, 400, "the request nests too deeply to be processed", "invalid")
        except Exception as exc:
            log.error(
                "fhir.crash",
                error=type(exc).__name__,
                path=scope.get("path", "")[:200],
                exc_info=True,
            )
            if started:
                raise
            await _send(send, 500, "internal error; the incident is logged", "exception")


async def _send(send: Send, status: int, message: str, code: str) -> None:
    body = jsonio.dumps(
        operation_outcome([Issue(message, code, "fatal" if status >= 500 else "error")])
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", FHIR_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
