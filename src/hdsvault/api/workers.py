"""The HTTP API served by several processes (``[server] workers``), zones and TLS included.

Why: the application runs in one event loop under one interpreter lock, so one process uses
at most one core. With ``workers = N`` (N > 1) this process binds every planned listener
(:func:`hdsvault.api.listeners.plan`: one per zone, or one for everything), then starts N
worker processes (``python -m hdsvault.api.worker``, supervised by
:class:`hdsvault.supervision.WorkerPool`: restarted if they exit, stopped with this process).
Each worker inherits the listening sockets and serves them exactly as the single process
would (its own platform, the same :class:`~hdsvault.api.listeners.ListenerGroup`: zone gates,
TLS, connection guard, ``[perimeter]`` limits); the kernel gives each accepted connection to
one of the processes waiting on the socket. The settings, secrets included, go through the
control socket only.

The perimeter's rate limits and login back-off are shared by the workers
(:mod:`hdsvault.api.shared_limits`): they hold for the whole server as configured. Per
process: ``max_connections``, caches.
Prometheus metrics are aggregated over the workers (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import json
import signal
import socket
import threading

from hdsvault.api.listeners import Listener
from hdsvault.api.shared_limits import SharedLimits
from hdsvault.config import Settings
from hdsvault.supervision import WorkerPool, WorkerStartError

BACKLOG = 2048
"""Listen queue of each socket (uvicorn's default)."""


def bind(listener: Listener) -> socket.socket:
    """The listening socket of ``listener``, as uvicorn would bind it."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    return socket.create_server((listener.host, listener.port), family=family, backlog=BACKLOG)


class HttpWorkers:
    """``count`` worker processes serving ``listeners``, whose sockets are bound here."""

    def __init__(self, settings: Settings, listeners: list[Listener], count: int) -> None:
        self.limits = SharedLimits.create()  # the perimeter's state, one for all workers
        self.sockets: list[socket.socket] = []
        try:
            for listener in listeners:
                self.sockets.append(bind(listener))
        except OSError:
            self.close()
            raise
        document = settings.with_secrets()
        if not settings.perimeter.zones:  # the one listener: the address bound, as planned
            document["server"]["host"], document["server"]["port"] = self.address(0)
        fds = [self.limits.fd, *(s.fileno() for s in self.sockets)]
        self.pool = WorkerPool(
            "http",
            "hdsvault.api.worker",
            count,
            json.dumps(document).encode(),
            args=[str(fd) for fd in fds],
            pass_fds=fds,
        )

    def address(self, i: int) -> tuple[str, int]:
        host, port = self.sockets[i].getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start every worker; returns once all serve. Raises :class:`WorkerStartError` (the
        ports closed)."""
        try:
            self.pool.start()
        except WorkerStartError:
            self.close()
            raise

    def stop(self) -> None:
        """Stop the workers (each finishes its requests first), then close the ports."""
        self.pool.stop()
        self.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.limits.close()

    def serve(self) -> None:
        """Start, serve until SIGINT or SIGTERM, stop."""
        stopping = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stopping.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.start()
            stopping.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
