"""The edge of the HTTP face: rate limits, size limits, slow clients, failed logins, headers.

One pure-ASGI middleware (no ``BaseHTTPMiddleware``: nothing is buffered, the cost per request
is a few microseconds, see docs/security.md for numbers), placed inside the request-id and
metrics middleware so that its refusals are logged and counted like any response:

- **request metadata**: binds :class:`~hdsvault.access.context.RequestMeta` (address, zone,
  request id, a ``X-Break-Glass-Reason`` declared by the caller) for services and the journal;
- **header limits**: more than ``max_headers`` headers or ``max_header_bytes`` bytes -> 431;
- **failed logins**: after ``login_failures_allowed`` 401s from one address, that address waits
  (1 s, 2 s, 4 s... up to ``login_backoff_max_seconds``) -> 429 with ``Retry-After``; an
  authenticated success clears the count;
- **rate limits**: a token bucket per address and one per identity (the presented credential,
  or the client certificate) -> 429 with ``Retry-After``. Identities are counted before the
  credential is verified, so a flood never reaches the verifier or the database. Addresses that
  are not IP addresses (unix sockets, in-process test transports) and ``exempt`` networks are
  not limited by address;
- **body limits**: ``Content-Length`` above ``max_body_bytes`` -> 413 at once; a chunked body
  is counted as it streams and cut at the limit; a body that stalls longer than
  ``body_timeout_seconds`` between chunks -> 408;
- **security headers** on every response, and HSTS on TLS listeners.

The state (buckets, failure counts) lives in the event loop's thread: no locks. With HTTP
worker processes it lives in memory they share (:mod:`hdsvault.api.shared_limits`), so the
limits hold for the whole server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable, Hashable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import unquote

from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hdsvault.access.context import (
    RequestMeta,
    bind_request_meta,
    request_meta_scope,
    unbind_request_meta,
)
from hdsvault.access.settings import IPNetwork, PerimeterSettings, TlsSettings
from hdsvault.api.shared_limits import SharedLimits, SharedLoginThrottle, SharedTokenBuckets

REFUSALS = Counter(
    "hdsvault_perimeter_refusals_total", "Requests refused at the perimeter", ["reason"]
)
BREAK_GLASS_HEADER = b"x-break-glass-reason"

BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


BASE_NAMES = frozenset(n for n, _ in BASE_HEADERS)


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens per second, at most ``burst`` saved up.

    Memory is bounded: past ``max_keys`` keys, buckets that are full again (equivalent to a new
    bucket) are dropped, then the least recently used half if still needed.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, key: Hashable, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._sweep(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            by_age = sorted(self._buckets.items(), key=lambda kv: kv[1][1])
            for k, _ in by_age[: len(by_age) // 2]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


class LoginThrottle:
    """Failed authentications per address, with exponential back-off once past the allowance."""

    __slots__ = ("_failures", "allowed", "base", "cap", "max_keys", "window")

    def __init__(
        self, allowed: int, base: float, cap: float, window: float, max_keys: int = 100_000
    ) -> None:
        self.allowed, self.base, self.cap, self.window = allowed, base, cap, window
        self.max_keys = max_keys
        self._failures: dict[str, list[float]] = {}  # address -> [count, first, blocked_until]

    def wait(self, address: str, now: float) -> float:
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        if now - entry[1] > self.window and now >= entry[2]:
            del self._failures[address]
            return 0.0
        return max(0.0, entry[2] - now)

    def failed(self, address: str, now: float) -> None:
        entry = self._failures.get(address)
        if entry is None or now - entry[1] > self.window:
            if entry is None and len(self._failures) >= self.max_keys:
                self._failures.clear()  # under a distributed flood: start over, stay bounded
            entry = self._failures[address] = [0.0, now, 0.0]
        entry[0] += 1
        over = entry[0] - self.allowed
        if over >= 0:
            entry[2] = now + min(self.cap, self.base * 2.0 ** min(over, 30))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException so that frameworks answer 413, not 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class _BodyTimeout(HTTPException):
    def __init__(self) -> None:
        super().__init__(408, "request body too slow")


def _is_fhir(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.startswith("/fhir/")


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    code: str = "forbidden",
) -> None:
    """Answer an error without calling the application (FHIR OperationOutcome under /fhir)."""
    if _is_fhir(scope):
        body = json.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": message}],
            }
        ).encode()
        ctype = b"application/fhir+json"
    else:
        body = json.dumps({"detail": message}).encode()
        ctype = b"application/json"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if status in (408, 413, 431):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AddressClassifier:
    """Parses client addresses once and remembers whether they are exempt (bounded cache)."""

    __slots__ = ("_cache", "_exempt")

    def __init__(self, exempt: list[IPNetwork]) -> None:
        self._exempt = exempt
        self._cache: dict[str, bool] = {}

    def limited(self, address: str) -> bool:
        """True if ``address`` is an IP address outside the exempt networks."""
        known = self._cache.get(address)
        if known is not None:
            return known
        ip: IPv4Address | IPv6Address | None
        try:
            ip = ip_address(address)
        except ValueError:
            ip = None
        limited = ip is not None and not any(ip in net for net in self._exempt)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[address] = limited
        return limited


class Perimeter:
    """The middleware; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        settings: PerimeterSettings,
        tls: TlsSettings,
        clock: Callable[[], float] = time.monotonic,
        limits: SharedLimits | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.enabled = settings.enabled
        self.clock = clock
        address, identity = settings.per_address, settings.per_identity
        logins = (
            settings.login_failures_allowed,
            settings.login_backoff_seconds,
            settings.login_backoff_max_seconds,
            settings.login_failure_window_seconds,
        )
        self.per_address: TokenBuckets | SharedTokenBuckets
        self.per_identity: TokenBuckets | SharedTokenBuckets
        self.logins: LoginThrottle | SharedLoginThrottle
        if limits is None:  # one process: its own tables
            self.per_address = TokenBuckets(address.rate, address.burst)
            self.per_identity = TokenBuckets(identity.rate, identity.burst)
            self.logins = LoginThrottle(*logins)
        else:  # HTTP worker processes: one state for the whole server (api/shared_limits.py)
            self.per_address = limits.address_buckets(address.rate, address.burst)
            self.per_identity = limits.identity_buckets(identity.rate, identity.burst)
            self.logins = limits.logins(*logins)
        self.addresses = AddressClassifier(settings.exempt)
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.hsts = f"max-age={tls.hsts_max_age}; includeSubDomains".encode()
        self.tls_enabled = tls.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address: str = client[0] if client else "?"
        state: dict[str, Any] = scope.setdefault("state", {})
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        credential: bytes | None = None
        content_length: bytes | None = None
        chunked = False
        reason: str | None = None
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"authorization":
                credential = value
            elif name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == BREAK_GLASS_HEADER:
                reason = unquote(value.decode("latin-1")).strip() or None
        meta = RequestMeta(
            source_address=None if address == "?" else address,
            request_id=state.get("request_id"),
            zone=state.get("zone"),
            break_glass_reason=reason,
        )
        secure = scope.get("scheme") == "https"
        send = self._decorate(send, secure)

        if self.enabled:
            if len(headers) > self.settings.max_headers or size > self.settings.max_header_bytes:
                REFUSALS.labels("headers").inc()
                await refuse(scope, send, 431, "request headers too large", code="too-costly")
                return
            now = self.clock()
            limited = self.addresses.limited(address)
            if limited:
                wait = self.logins.wait(address, now)
                if wait > 0:
                    REFUSALS.labels("login-backoff").inc()
                    await refuse(
                        scope,
                        send,
                        429,
                        "too many failed authentications",
                        retry_after=wait,
                        code="throttled",
                    )
                    return
                wait = self.per_address.take(address, now)
                if wait > 0:
                    REFUSALS.labels("rate-address").inc()
                    await refuse(
                        scope,
                        send,
                        429,
                        "too many requests from this address",
                        retry_after=wait,
                        code="throttled",
                    )
                    return
            identity = _identity(credential, scope)
            if identity is not None:
                wait = self.per_identity.take(identity, now)
                if wait > 0:
                    REFUSALS.labels("rate-identity").inc()
                    await refuse(
                        scope,
                        send,
                        429,
                        "too many requests for this identity",
                        retry_after=wait,
                        code="throttled",
                    )
                    return
            if content_length is not None:
                try:
                    declared = int(content_length)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await refuse(scope, send, 400, "invalid Content-Length", code="invalid")
                    return
                if declared > self.max_body:
                    REFUSALS.labels("body-size").inc()
                    await refuse(
                        scope,
                        send,
                        413,
                        f"request body over {self.max_body} bytes",
                        code="too-costly",
                    )
                    return
            if limited:
                send = self._watch_logins(send, address, credential is not None)
            if chunked or (content_length not in (None, b"0")):
                await self._with_body_guard(scope, receive, send, meta)
                return
        token = bind_request_meta(meta)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind_request_meta(token)

    # -- helpers --------------------------------------------------------------------------------

    def _decorate(self, send: Send, secure: bool) -> Send:
        hsts = self.hsts if secure and self.tls_enabled else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers} if headers else set()
                if present.isdisjoint(BASE_NAMES):
                    headers.extend(BASE_HEADERS)
                else:
                    headers.extend((n, v) for n, v in BASE_HEADERS if n not in present)
                if hsts is not None and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", hsts))
                message["headers"] = headers
            await send(message)

        return send_with_headers

    def _watch_logins(self, send: Send, address: str, presented: bool) -> Send:
        logins, clock = self.logins, self.clock

        async def send_watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 401:
                    logins.failed(address, clock())
                elif presented and status < 400:
                    logins.succeeded(address)
            await send(message)

        return send_watching

    async def _with_body_guard(
        self, scope: Scope, receive: Receive, send: Send, meta: RequestMeta
    ) -> None:
        received = 0
        done = False
        started = False
        limit, timeout = self.max_body, self.body_timeout

        async def guarded_receive() -> Message:
            nonlocal received, done
            if done:
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
                if not message.get("more_body", False):
                    done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            with request_meta_scope(meta):
                await self.app(scope, guarded_receive, tracking_send)
        except _BodyTooLarge:
            REFUSALS.labels("body-size").inc()
            if not started:
                await refuse(
                    scope, send, 413, f"request body over {limit} bytes", code="too-costly"
                )
        except _BodyTimeout:
            REFUSALS.labels("body-timeout").inc()
            if not started:
                await refuse(scope, send, 408, "request body too slow", code="timeout")


def _identity(credential: bytes | None, scope: Scope) -> Hashable | None:
    """What the per-identity bucket counts: the credential (hashed), or the client certificate."""
    if credential is not None:  # the same key in every process (not ``hash``, salted per process)
        return ("credential", hashlib.blake2b(credential, digest_size=16).digest())
    tls = (scope.get("extensions") or {}).get("tls")
    if tls and tls.get("client_cert"):
        cert = tls["client_cert"]
        return ("certificate", str(cert.get("serialNumber")), str(cert.get("issuer")))
    return None
