"""Routes served ahead of the framework's router: the hottest paths (WADO-RS retrievals).

Why: a request that reaches an endpoint through FastAPI's inner layers (its exit-stack
middleware, Starlette's exception middleware, the router and the included routers' matching)
pays for each of them; for a single-instance WADO-RS retrieval, the request viewers make most,
that was ~4 % of the server's CPU per request (docs/imaging-bench.md). :class:`HotRoutes` sits
inside the perimeter and the request's observability, which every request still passes, and
serves its routes directly; any other request goes on to the application unchanged.

What the skipped layers did is kept: an endpoint's ``HTTPException`` (a refused credential's
401) is rendered by the application's own handler for it, as the exception middleware would;
any other exception goes on up to the server-error middleware (500), as before. A route's
method mismatch (``POST`` on a retrieval's path: STOW-RS) is left to the router.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Handlers = Mapping[Any, Callable[[Request, Exception], Any]]


class HotRoutes:
    """Serve ``routes`` (plain Starlette routes under ``prefix``) before ``app``."""

    def __init__(
        self, app: ASGIApp, routes: Sequence[Route], prefix: str, handlers: Handlers
    ) -> None:
        self.app = app
        self.routes = list(routes)
        self.prefix = prefix
        self.handlers = handlers  # the application's, looked up per error (added any time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    request = Request(scope, receive, send)
                    try:
                        response = await route.endpoint(request)
                    except HTTPException as exc:
                        response = await self._rendered(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _rendered(self, request: Request, exc: HTTPException) -> Response:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                assert isinstance(response, Response)
                return response
        return PlainTextResponse(str(exc.detail), exc.status_code, exc.headers)  # Starlette's
