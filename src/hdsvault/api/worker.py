"""An HTTP worker process: serves the connections the listening process hands it.

Started by :class:`hdsvault.api.workers.HttpWorkers` as
``python -m hdsvault.api.worker CONTROL_FD LIMITS_FD`` (the perimeter's shared state,
:mod:`hdsvault.api.shared_limits`). It reads its settings from the control socket
(:mod:`hdsvault.supervision`), opens its own platform, and serves each connection it is
sent (:data:`~hdsvault.supervision.CONNECTION`, then the index of the listener that accepted
it in the order of :func:`hdsvault.api.listeners.plan`, the descriptor attached) as the
single-process ``hdsvault serve`` serves that listener's; it reports each one's end
(:data:`~hdsvault.supervision.ENDED`). It stops when the control socket closes (the parent
stops, or died: a worker never outlives it) or on SIGTERM; SIGINT is left to the parent,
which stops its workers itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import TYPE_CHECKING

import structlog

from hdsvault import supervision

if TYPE_CHECKING:
    from hdsvault.config import Settings

log = structlog.get_logger("hdsvault.http")


def serve(settings: Settings, control: socket.socket, args: list[str]) -> int:
    """Serve handed connections until the control socket closes; the exit status. ``args``:
    the shared perimeter state's descriptor."""
    from hdsvault.api.app import create_app
    from hdsvault.api.listeners import ListenerGroup, plan
    from hdsvault.api.shared_limits import SharedLimits
    from hdsvault.platform import Platform

    limits = SharedLimits.attach(int(args[0]))
    listeners = plan(settings)

    def ended() -> None:
        with contextlib.suppress(OSError):  # the listener is gone: we stop next
            control.send(supervision.ENDED)

    platform = Platform.open(settings)
    try:
        app = create_app(platform, freeze_heap=True, limits=limits)
        group = ListenerGroup(app, settings, listeners)
        group.start_in_thread(timeout=supervision.START_WAIT, handed=ended)
        try:
            control.send(supervision.READY)
            log.info("http.worker-ready", pid=os.getpid())
            for listener, conn in supervision.handed_connections(control):
                group.take(listener[0] if len(listener) == 1 else -1, conn)
        finally:
            group.join(timeout=supervision.STOP_WAIT)
    finally:
        platform.close()
    return 0


def main(argv: list[str]) -> int:
    return supervision.run_worker("http", argv, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
