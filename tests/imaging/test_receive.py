"""The association socket's reads: pynetdicom's contract, in fewer system calls."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom.transport import AssociationSocket

from hdsvault.dicom import receive

pytestmark = pytest.mark.timeout(60)


class _Association:
    """What ``recv`` uses of pynetdicom's association socket: its ``socket``."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _dribble(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    """Send ``data`` in pieces of ``piece`` bytes, pausing between them (a slow peer)."""

    def run() -> None:
        for i in range(0, len(data), piece):
            sock.sendall(data[i : i + piece])
            time.sleep(0.001)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_locked_pynetdicom_is_the_one_replaced() -> None:
    # A pynetdicom upgrade that changes its read fails here, not silently in production.
    assert receive.original_source_digest() == receive.PYNETDICOM_RECV_SHA256
    assert receive.install()
    assert AssociationSocket.recv is receive.recv


def test_a_changed_pynetdicom_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AssociationSocket, "recv", receive._original)
    monkeypatch.setattr(receive, "PYNETDICOM_RECV_SHA256", "0" * 64)
    assert not receive.install()
    assert AssociationSocket.recv is receive._original


@pytest.mark.parametrize("read", [receive.recv, receive._original], ids=["ours", "pynetdicom"])
def test_reads_exactly_what_was_asked_across_pieces(
    pair: tuple[socket.socket, socket.socket], read: Any
) -> None:
    """Both reads, on the same slow peer: exactly the bytes asked for, in order, across
    pieces of every size, the rest left for the next read."""
    ours, peer = pair
    data = os.urandom(300_000)
    sender = _dribble(peer, data, 7_001)
    first = read(_Association(ours), 6)
    second = read(_Association(ours), 262_144)
    third = read(_Association(ours), len(data) - 6 - 262_144)
    sender.join()
    assert (first, second, third) == (data[:6], data[6:262_150], data[262_150:])
    assert isinstance(second, bytearray)


def test_a_closed_connection_returns_what_was_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"abc")
    peer.close()
    assert receive.recv(_Association(ours), 10) == bytearray(b"abc")
    assert receive.recv(_Association(ours), 10) == bytearray()


def test_a_silent_peer_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    """The socket's time-out is raised, as pynetdicom's read raises it (its DUL turns it into
    a transport event)."""
    ours, peer = pair
    ours.settimeout(0.05)
    peer.sendall(b"ab")
    with pytest.raises(TimeoutError):
        receive.recv(_Association(ours), 10)
