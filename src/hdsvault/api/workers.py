"""The HTTP API served by several processes (``[server] workers``), zones and TLS included.

Why: the application runs in one event loop under one interpreter lock, so one process uses
at most one core. With ``workers = N`` (N > 1) this process binds every planned listener
(:func:`hdsvault.api.listeners.plan`: one per zone, or one for everything), then starts N
worker processes (``python -m hdsvault.api.worker``, supervised by
:class:`hdsvault.supervision.WorkerPool`: restarted if they exit, stopped with this process).
This process accepts the connections and hands each one (its descriptor, and which listener
took it) to the ready worker with the fewest connections open, as the DIMSE listener does
(:mod:`hdsvault.dicom.handoff`); the worker serves it exactly as the single process would
(its own platform, the same :class:`~hdsvault.api.listeners.ListenerGroup`: zone gates, TLS,
connection guard, ``[perimeter]`` limits) and reports its end. The settings, secrets
included, go through the control socket only.

Why not let the workers accept on the shared sockets: the kernel gives a connection to
whichever waiting process runs first, and on a quiet server that is the same one again and
again: a viewer's four kept-alive connections, opened one after the other, went 4 to one
worker and 0 to the other, or 3 and 1, in six tries out of six; the other core stayed idle
(single-instance WADO-RS, concurrency 4: 746-935 requests/s served 4-0, 1,020-1,224 served
by both; docs/imaging-bench.md). Handing each connection on costs one ``accept`` here and one
message each way per connection (~0.15 ms of CPU, measured with a connection per request),
nothing per request on a kept-alive connection.

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

import structlog

from hdsvault.api.listeners import Listener
from hdsvault.api.shared_limits import SharedLimits
from hdsvault.config import Settings
from hdsvault.supervision import CONNECTION, ENDED, Worker, WorkerPool, WorkerStartError

log = structlog.get_logger("hdsvault.http")

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
        if len(self.sockets) > 255:
            self.close()
            raise ValueError("at most 255 listeners")
        self.pool = WorkerPool(
            "http",
            "hdsvault.api.worker",
            count,
            json.dumps(document).encode(),
            args=[str(self.limits.fd)],
            pass_fds=[self.limits.fd],
            on_message=self._message,
        )
        self._accepting: list[threading.Thread] = []

    def address(self, i: int) -> tuple[str, int]:
        host, port = self.sockets[i].getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start every worker, then accept (connections made meanwhile wait in the listen
        queues); returns once all serve. Raises :class:`WorkerStartError` (the ports closed)."""
        try:
            self.pool.start()
        except WorkerStartError:
            self.close()
            raise
        for i, sock in enumerate(self.sockets):  # the listener's index follows the byte
            accepting = threading.Thread(
                target=self.pool.accept,
                args=(sock, CONNECTION + bytes([i])),
                name=f"http-accept-{i}",
            )
            accepting.daemon = True
            accepting.start()
            self._accepting.append(accepting)

    def stop(self) -> None:
        """Stop accepting, stop the workers (each finishes its requests first), then close
        the ports."""
        self.pool.stop_accepting(self.sockets)
        for accepting in self._accepting:
            accepting.join()
        self.pool.stop()
        self.close()

    def _message(self, worker: Worker, kind: bytes, _body: bytes) -> None:
        if kind == ENDED:
            self.pool.ended(worker)
        else:
            log.warning("http.worker-message-unknown", worker=worker.index, kind=repr(kind))

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
