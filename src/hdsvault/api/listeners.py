"""Listeners: one ``hdsvault serve`` process, one uvicorn server per network zone.

With ``[[perimeter.zones]]`` configured, the clinical API, the administration endpoints and the
metrics are served on separate addresses (e.g. the care network, the operators' VLAN, the
monitoring network), each with its own allowlist of client networks; all servers share one
event loop, one application and so one set of rate-limit buckets. Without zones, one listener
serves everything on ``[server] host:port`` as before.

Each server is uvicorn's, on its httptools (llhttp) parser, with additions at the connection
level, where no middleware can act (:class:`GuardedHttpToolsProtocol`):

- a time-out on receiving the request head (slowloris: a client that dribbles headers, or
  connects and says nothing, is disconnected after ``header_timeout_seconds``);
- a bound on the request head's size (twice ``max_header_bytes``, at least 64 KiB: what is
  under it reaches the perimeter, which answers 431; what is over it gets 400 and the
  connection closed before it is held in memory);
- the verified client certificate of a TLS connection is put in the ASGI scope
  (``scope["extensions"]["tls"]``), for mutual-TLS authentication;
- TLS is set up by :func:`tls_context`: TLS 1.2 minimum, ECDHE key exchange with AEAD ciphers
  only (AES-GCM, ChaCha20-Poly1305), no compression or renegotiation.

:class:`ZoneGate` wraps the application per listener: it refuses addresses outside the zone's
allowlist (403) and paths the zone does not serve (404), and tags the request with its zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hdsvault.access.settings import PerimeterSettings, TlsSettings, ZoneSettings
from hdsvault.api.perimeter import REFUSALS, refuse
from hdsvault.config import Settings

log = structlog.get_logger("hdsvault.listeners")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!SHA256:!SHA384:!CBC"
"""TLS 1.2 suites: ECDHE only (forward secrecy), AEAD only. TLS 1.3 suites are all AEAD."""


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """The server TLS context (see the module docstring)."""
    assert tls.cert_file is not None and tls.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    ctx.set_alpn_protocols(["http/1.1"])
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools (llhttp, C) protocol, plus what the module docstring lists: a
    request-head time-out, a request-head size bound and the client certificate.

    Chosen over uvicorn's h11 (pure Python) protocol: 1-1.5 ms less server CPU per WADO-RS
    request of 40 x 39 KB, measured (docs/imaging-bench.md). llhttp does not bound the request head:
    this class does (``head_limit`` bytes of request line and headers; beyond, 400 and the
    connection closed, as uvicorn answered h11's own limit)."""

    header_timeout: float = 10.0
    head_limit: int = 64 * 1024
    on_lost: Callable[[], None] | None = None
    """Called once the connection is lost (one another process handed: its end reported)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self._head_timed_out
        )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = ssl_object.getpeercert() or None  # a dict only when verified
            cipher = ssl_object.cipher()
            tls = {
                "client_cert": cert,
                "tls_version": ssl_object.version(),
                "cipher_suite": cipher[0] if cipher else None,
            }
            inner = self.app

            async def app_with_tls(scope: Scope, receive: Receive, send: Send) -> None:
                scope.setdefault("extensions", {})["tls"] = tls
                await inner(scope, receive, send)

            self.app = app_with_tls

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        super().data_received(data)
        if (
            self._head_timer is not None
            and self.cycle is not None
            and not self.cycle.response_complete
        ):
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            REFUSALS.labels("header-timeout").inc()
            self.transport.close()

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.head_limit:
            REFUSALS.labels("header-size").inc()
            raise ValueError("request head too large")  # llhttp stops: uvicorn answers 400


def head_limit_of(perimeter: PerimeterSettings) -> int:
    """The protocol's request-head bound for these limits: heads up to twice the perimeter's
    limit reach it (a 431 with a reason); beyond, the protocol refuses them before they are
    held in memory."""
    return max(64 * 1024, 2 * perimeter.max_header_bytes)


def guarded_protocol(header_timeout: float, head_limit: int) -> type[GuardedHttpToolsProtocol]:
    """A protocol class with this head time-out and head limit (uvicorn builds one instance
    per connection)."""
    return type(
        "GuardedHttp",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "head_limit": head_limit},
    )


class ZoneGate:
    """One listener's gate: its allowlist, its paths, its zone tag (pure ASGI)."""

    def __init__(self, app: ASGIApp, zone: ZoneSettings) -> None:
        self.app = app
        self.zone = zone
        self.name = zone.name
        self.prefixes = zone.served_paths
        self._allowed: dict[str, bool] = {}

    def allows(self, address: str) -> bool:
        known = self._allowed.get(address)
        if known is None:
            try:
                ip = ip_address(address)
                known = any(ip in net for net in self.zone.allow)
            except ValueError:
                known = False
            if len(self._allowed) > 50_000:
                self._allowed.clear()
            self._allowed[address] = known
        return known

    def serves(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else ""
        if not self.allows(address):
            REFUSALS.labels(f"zone-{self.name}-address").inc()
            log.warning("zone.refused", zone=self.name, client=address)
            if scope["type"] == "http":
                await refuse(scope, send, 403, f"address not allowed on the {self.name} listener")
            return
        if scope["type"] != "http" or not self.serves(scope["path"]):
            if scope["type"] == "http":
                await refuse(
                    scope, send, 404, f"not served on the {self.name} listener", code="not-found"
                )
            return
        scope.setdefault("state", {})["zone"] = self.name
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Listener:
    """One planned server: zone (None = everything), address, TLS or not."""

    zone: ZoneSettings | None
    host: str
    port: int
    tls: bool


def plan(settings: Settings, host: str | None = None, port: int | None = None) -> list[Listener]:
    """The listeners ``serve`` starts: one per zone, or one for everything."""
    tls_on = settings.tls.enabled
    zones = settings.perimeter.zones
    if not zones:
        return [Listener(None, host or settings.server.host, port or settings.server.port, tls_on)]
    return [
        Listener(z, z.host, z.port, tls_on if z.tls is None else (z.tls and tls_on)) for z in zones
    ]


Ended = Callable[[], None]
"""Called once as a connection handed by another process ends (:meth:`ListenerGroup.take`)."""


class _Once:
    """``ended()`` at most once, whichever of the protocol and the handshake sees the end."""

    def __init__(self, ended: Ended) -> None:
        self._ended: Ended | None = ended

    def __call__(self) -> None:
        ended, self._ended = self._ended, None
        if ended is not None:
            ended()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :class:`ListenerGroup`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ListenerGroup:
    """Several uvicorn servers in one event loop, started and stopped together."""

    def __init__(self, app: ASGIApp, settings: Settings, listeners: list[Listener]) -> None:
        self.settings = settings
        self.listeners = listeners
        self.servers = [
            _Server(self._config(app, listener, primary=i == 0))
            for i, listener in enumerate(listeners)
        ]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handed: Ended | None = None
        self._connecting: set[asyncio.Future[None]] = set()  # TLS handshakes of handed ones

    def _config(self, app: ASGIApp, listener: Listener, *, primary: bool) -> uvicorn.Config:
        p: PerimeterSettings = self.settings.perimeter
        served: ASGIApp = ZoneGate(app, listener.zone) if listener.zone is not None else app
        extra: dict[str, Any] = {}
        if listener.tls:
            context = tls_context(self.settings.tls)
            extra["ssl_context_factory"] = lambda _config, _default: context
        return uvicorn.Config(
            served,
            host=listener.host,
            port=listener.port,
            lifespan="on" if primary else "off",  # one application, started once
            http=guarded_protocol(p.header_timeout_seconds, head_limit_of(p)),
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # client addresses are the peers' (allowlists rely on it)
            timeout_keep_alive=int(max(1, p.keep_alive_seconds)),
            limit_concurrency=p.max_connections,
            **extra,
        )

    async def serve(self, handed: Ended | None = None) -> None:
        """Run every server until :meth:`stop` (or SIGINT/SIGTERM in the main thread),
        binding its own sockets; with ``handed``, none: it serves the connections another
        process accepted (:meth:`take`, an HTTP worker process's) and calls ``handed()`` as
        each one ends."""
        loop = self._loop = asyncio.get_running_loop()
        self._handed = handed
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
        bound: list[socket.socket] | None = [] if handed is not None else None
        primary, *others = self.servers
        task = asyncio.create_task(primary.serve(sockets=bound))
        while not primary.started and not task.done():
            await asyncio.sleep(0.02)  # lifespan (journal sequencer, access control) first
        if task.done():
            await task
            return
        await asyncio.gather(task, *(s.serve(sockets=bound) for s in others))
        log.info("listeners.stopped", listeners=len(self.servers))

    def take(self, index: int, sock: socket.socket) -> None:
        """Serve ``sock``, accepted by another process on listener ``index``, as that
        listener's server would have (its TLS, zone gate and limits); from any thread. Its
        end is reported once (``handed()``), whether served, refused or never made."""
        loop, handed = self._loop, self._handed
        if loop is None or handed is None:
            sock.close()
            return
        if 0 <= index < len(self.servers):
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are stopping
                loop.call_soon_threadsafe(self._serve_handed, index, sock, _Once(handed))
                return
        sock.close()
        handed()

    def _serve_handed(self, index: int, sock: socket.socket, ended: _Once) -> None:
        server, loop = self.servers[index], self._loop
        assert loop is not None
        config = server.config

        def protocol() -> asyncio.Protocol:
            made = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=server.server_state, app_state=server.lifespan.state
            )
            assert isinstance(made, GuardedHttpToolsProtocol)  # ListenerGroup's own (_config)
            made.on_lost = ended
            return made

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(protocol, sock, ssl=config.ssl)
            except Exception as exc:  # e.g. a failed TLS handshake: never made
                log.debug("listener.handed-connection-failed", error=str(exc)[:200])
                sock.close()
                ended()

        self._connecting.add(task := asyncio.ensure_future(connect()))
        task.add_done_callback(self._connecting.discard)

    def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True

    @property
    def started(self) -> bool:
        return all(s.started for s in self.servers)

    def start_in_thread(self, timeout: float = 20.0, handed: Ended | None = None) -> None:
        """Serve from a background thread (tests, embedding, HTTP worker processes); returns
        once all serve."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(handed)), daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout
        while not self.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("listeners did not start")
            time.sleep(0.02)

    def join(self, timeout: float = 20.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)


def serve(
    app: ASGIApp, settings: Settings, host: str | None = None, port: int | None = None
) -> None:
    """``hdsvault serve`` with one process: every planned listener, until a signal."""
    listeners = plan(settings, host, port)
    for listener in listeners:
        log.info(
            "listener",
            zone=listener.zone.name if listener.zone else "all",
            host=listener.host,
            port=listener.port,
            tls=listener.tls,
        )
    asyncio.run(ListenerGroup(app, settings, listeners).serve())
