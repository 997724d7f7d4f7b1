"""An HTTP worker process: serves the listening sockets it inherited.

Started by :class:`hdsvault.api.workers.HttpWorkers` as
``python -m hdsvault.api.worker CONTROL_FD LISTEN_FD...`` (the listening descriptors in the
order of :func:`hdsvault.api.listeners.plan`). It reads its settings from the control socket
(:mod:`hdsvault.supervision`), opens its own platform, and serves the application on every
listener, as the single-process ``hdsvault serve`` does. It stops when the control socket
closes (the parent stops, or died: a worker never outlives it) or on SIGTERM; SIGINT is left
to the parent, which stops its workers itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any

import structlog

from hdsvault import supervision

log = structlog.get_logger("hdsvault.http")


def serve(control: socket.socket, listening: list[socket.socket]) -> int:
    """Serve until the control socket closes; the exit status."""
    from hdsvault.api.app import create_app
    from hdsvault.api.listeners import ListenerGroup, plan
    from hdsvault.config import Settings
    from hdsvault.logs import configure_logging
    from hdsvault.platform import Platform

    configure_logging()  # JSON on stderr until the settings say otherwise
    first = control.recv(supervision.MESSAGE_MAX)
    if first[:1] != supervision.SETTINGS:
        log.error("http.worker-not-configured", received=len(first))
        return 2
    settings = Settings(**json.loads(first[1:]))
    configure_logging(settings.logging.level, json_output=settings.logging.json_output)
    listeners = plan(settings)
    if len(listeners) != len(listening):
        log.error("http.worker-sockets-mismatch", planned=len(listeners), given=len(listening))
        return 2
    platform = Platform.open(settings)
    try:
        group = ListenerGroup(create_app(platform, freeze_heap=True), settings, listeners)
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
    control = socket.socket(fileno=int(argv[1]))
    listening = [socket.socket(fileno=int(fd)) for fd in argv[2:]]
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(*_: Any) -> None:  # stop as if the parent had closed the control socket
        with contextlib.suppress(OSError):
            control.shutdown(socket.SHUT_RD)

    signal.signal(signal.SIGTERM, on_term)
    with control:
        return serve(control, listening)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
