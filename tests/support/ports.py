"""Free loopback ports for the servers the tests start.

Why one place: a port found free by binding port 0 and closing the socket can be handed out
again by the kernel at the very next such call. Two ports taken that way for one server were
once the same (CI, 2026-11-30: ``hdsvault serve`` with DICOM and HL7 on one port, whose MLLP
listener then could not bind). :func:`free_ports` holds every socket until it has them all.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports of ``host`` free at the time of the call."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def free_port(host: str = "127.0.0.1") -> int:
    """One port of ``host`` free at the time of the call (several for one server:
    :func:`free_ports`)."""
    return free_ports(1, host)[0]
