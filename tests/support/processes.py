"""Processes of a server under test, read from ``/proc``: its children (worker supervision
tests), the sockets it holds, whether it is the one listening on a port."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (whichever of its threads started them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    """``pid`` has exited (a zombie not reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def tcp_inodes(keep: Callable[[int, int, str], bool]) -> set[str]:
    """Inodes of this host's TCP sockets (IPv4 and IPv6) for which ``keep(local port, remote
    port, state)`` (``/proc/net/tcp``; state ``0A`` listens, ``01`` is established)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                if keep(local, remote, fields[3]):
                    found.add(fields[9])
    return found


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` holds open."""
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    found.add(link[8:-1])
    return found


def listens_on(pid: int, port: int) -> bool:
    """Process ``pid`` holds the socket listening on TCP ``port``: the server answering there
    is the one the test started, not another test's that was handed the same free port by
    the kernel meanwhile (``support.ports``) and bound it first."""
    listening = tcp_inodes(lambda local, _remote, state: local == port and state == "0A")
    return bool(listening & socket_inodes(pid))
