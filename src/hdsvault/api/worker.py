"""An HTTP worker process: serves the listening sockets it inherited.

Started by :class:`hdsvault.api.workers.HttpWorkers` as
``python -m hdsvault.api.worker CONTROL_FD LIMITS_FD LISTEN_FD...`` (the perimeter's shared
state, :mod:`hdsvault.api.shared_limits`, then the listening descriptors in the order of
:func:`hdsvault.api.listeners.plan`). It reads its settings from the control socket
(:mod:`hdsvault.supervision`), opens its own platform, and serves the application on every
listener, as the single-process ``hdsvault serve`` does. It stops when the control socket
closes (the parent stops, or died: a worker never outlives it) or on SIGTERM; SIGINT is left
to the parent, which stops its workers itself.
"""

from __future__ import annotations

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
    """Serve until the control socket closes; the exit status. ``args``: the shared perimeter
    state's descriptor, then the listening sockets'."""
    from hdsvault.api.app import create_app
    from hdsvault.api.listeners import ListenerGroup, plan
    from hdsvault.api.shared_limits import SharedLimits
    from hdsvault.platform import Platform

    limits = SharedLimits.attach(int(args[0]))
    listening = [socket.socket(fileno=int(fd)) for fd in args[1:]]
    listeners = plan(settings)
    if len(listeners) != len(listening):
        log.error("http.worker-sockets-mismatch", planned=len(listeners), given=len(listening))
        return 2
    platform = Platform.open(settings)
    try:
        app = create_app(platform, freeze_heap=True, limits=limits)
        group = ListenerGroup(app, settings, listeners)
        group.start_in_thread(timeout=supervision.START_WAIT, sockets=listening)
        try:
            control.send(supervision.READY)
            log.info("http.worker-ready", pid=os.getpid())
            while control.recv(supervision.MESSAGE_MAX):
                pass  # nothing is sent after the settings: the end is what counts
        finally:
            group.join(timeout=supervision.STOP_WAIT)
    finally:
        platform.close()
    return 0


def main(argv: list[str]) -> int:
    return supervision.run_worker("http", argv, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
