"""A server process under test, started on a free loopback port and used once it answers
there itself.

Why: a port found free (``support.ports``) can be handed to another test's server by the
kernel before this one binds it; polling the port alone then finds the other server ready
(CI, 2026-11-30: a restore test got 401 from a server that did not know its token). A server
is used here only once its own process listens on the port (``listens_on``); if it exits
while another process holds the port, it is started again on another port.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

from support.ports import free_port
from support.processes import listens_on

Launch = Callable[[int], "subprocess.Popen[Any]"]
"""Starts the server on the given port."""

TRIES = 3


def start_on_free_port(
    launch: Launch,
    output: Callable[[subprocess.Popen[Any]], str],
    *,
    ready_path: str = "/readyz",
    timeout: float = 60.0,
) -> tuple[subprocess.Popen[Any], int]:
    """The process ``launch(port)`` started and its port, once ``ready_path`` answers 200
    from it; else AssertionError with the end of ``output(process)`` (called once it has
    exited)."""
    for attempt in range(1, TRIES + 1):
        port = free_port()
        proc = launch(port)
        deadline = time.monotonic() + timeout
        taken = False  # another process answered on the port
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200
                if ok and listens_on(proc.pid, port):
                    return proc, port
                taken = taken or ok
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise AssertionError(f"not ready in {timeout} s: {output(proc)[-3000:]}")
        if not taken or attempt == TRIES:
            raise AssertionError(f"exited with {proc.returncode}: {output(proc)[-3000:]}")
    raise AssertionError("unreachable")
