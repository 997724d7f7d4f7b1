"""The worker side of :mod:`hdsvault.supervision`, shared by the DIMSE and HTTP workers: a
worker that is not handed its settings first says so and exits. Real processes."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from hdsvault import supervision


@pytest.mark.parametrize(
    ("module", "name"), [("hdsvault.dicom.worker", "dicom"), ("hdsvault.api.worker", "http")]
)
def test_a_worker_given_no_settings_exits_at_once(module: str, name: str) -> None:
    """Garbage instead of the settings (or a closed channel): the worker says so and exits."""
    assert supervision.SETTINGS != b"\xff"
    for first in (b"\xffgarbage", None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stderr=subprocess.PIPE,
            )
            theirs.close()
            if first is None:
                ours.shutdown(socket.SHUT_WR)
            else:
                ours.send(first)
            _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        assert f"{name}.worker-not-configured".encode() in err


def test_a_worker_keeps_the_handed_connections_and_closes_every_other_descriptor() -> None:
    """What the listener sends a worker (supervision.handed_connections): each connection
    with the bytes after the kind; descriptors sent with anything else, or one too many,
    closed at once (never leaked); the end of the control socket ends it."""
    listener, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pairs = [socket.socketpair() for _ in range(4)]
    with listener, worker:
        socket.send_fds(listener, [supervision.CONNECTION + b"\x01"], [pairs[0][1].fileno()])
        socket.send_fds(listener, [b"Xgarbage"], [pairs[1][1].fileno()])
        socket.send_fds(
            listener, [supervision.CONNECTION], [pairs[2][1].fileno(), pairs[3][1].fileno()]
        )
        listener.send(supervision.CONNECTION)  # no descriptor: nothing to serve
        for _, theirs in pairs:
            theirs.close()  # the worker's copies are the only ones left
        listener.shutdown(socket.SHUT_WR)
        got = list(supervision.handed_connections(worker))
        assert [rest for rest, _ in got] == [b"\x01", b""]
        for ours, _ in pairs:
            ours.settimeout(5)
        for (_, conn), (ours, _) in zip(got, [pairs[0], pairs[2]], strict=True):
            with conn:
                conn.sendall(b"ok")
                assert ours.recv(2) == b"ok"  # the very connection, open
        assert pairs[1][0].recv(1) == b""  # sent with garbage: closed
        assert pairs[3][0].recv(1) == b""  # one too many: closed
    for ours, _ in pairs:
        ours.close()
