"""Request ids, access logs and Prometheus metrics, as one pure-ASGI middleware.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming bodies are not buffered and the overhead per
request stays at a few microseconds. Metrics are labelled by route template, never by raw path,
so that identifiers do not leak into metric labels and cardinality stays bounded.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("hdsvault_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "hdsvault_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
log = structlog.get_logger("hdsvault.http")


def _mount_label(app: Any, scope: Scope) -> str | None:
    """One bounded label for a mounted sub-application (FHIR), matched before it runs (it
    rewrites the scope's paths)."""
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount) and route.matches(scope)[0] == Match.FULL:
            return f"{route.path}/*"
    return None


def _route_label(mount: str | None, scope: Scope) -> str:
    """The template of the route that served the request (set in the scope by the router;
    routers included with a prefix are not listed flat among the app's routes)."""
    if mount is not None:
        return mount
    return str(getattr(scope.get("route"), "path", None) or "unmatched")


class RequestObservability:
    """Assigns a request id (or keeps a well-formed incoming ``X-Request-ID``), logs, measures."""

    def __init__(self, app: ASGIApp, router: Any) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        mount = _mount_label(self.router, scope)
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_label(mount, scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client=(scope.get("client") or ("?",))[0],
            )
            structlog.contextvars.unbind_contextvars("request_id")
