"""Connections accepted by one process and served by another (``ListenerGroup.take``, what an
HTTP worker does with the connections ``hdsvault serve --workers N`` hands it): served as
the listener's own (TLS, client certificates, zone gate), and each one's end reported exactly
once, whether it was served, failed its TLS handshake or was refused, so that the parent's
count of open connections per worker, which decides where the next one goes, stays true."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan

from .kit import tls_settings
from support.loopback import Pki, make_pki
from support.ports import free_port


@dataclass
class Handed:
    group: ListenerGroup
    pki: Pki
    url: str
    ended: list[int]


@pytest.fixture
def handed(make_edge_platform, tmp_path: Path) -> Iterator[Handed]:  # type: ignore[no-untyped-def]
    """A TLS listener group serving handed connections only; the test accepts them on its
    own socket and hands each one over, as the parent process does."""
    pki = make_pki(tmp_path)
    platform = make_edge_platform(tls=tls_settings(pki))
    ended: list[int] = []
    group = ListenerGroup(
        create_app(platform), platform.settings, plan(platform.settings, "127.0.0.1", 0)
    )
    group.start_in_thread(handed=lambda: ended.append(1))
    listener = socket.create_server(("127.0.0.1", free_port()))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            group.take(0, conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield Handed(group, pki, f"https://127.0.0.1:{listener.getsockname()[1]}", ended)
    finally:
        listener.close()
        group.join()


def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _ctx(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def test_a_handed_connection_is_served_as_the_listeners_own(handed: Handed) -> None:
    with httpx.Client(verify=_ctx(handed.pki), trust_env=False, timeout=10) as client:
        first = client.get(handed.url + "/healthz")
        assert first.status_code == 200
        assert first.headers["strict-transport-security"].startswith("max-age=")
        assert client.get(handed.url + "/healthz").status_code == 200  # kept alive
        assert handed.ended == []  # still open
    _until(lambda: handed.ended == [1])  # one connection, its end reported once
    machine = _ctx(handed.pki, cert=(handed.pki.client_cert, handed.pki.client_key))
    with httpx.Client(verify=machine, trust_env=False, timeout=10) as client:
        whoami = client.get(handed.url + "/api/whoami")
    assert whoami.status_code == 200 and whoami.json()["subject"] == "mtls:lis-gateway"
    _until(lambda: handed.ended == [1, 1])


def test_a_connection_never_made_is_reported_ended_once(handed: Handed) -> None:
    old = ssl.create_default_context(cafile=str(handed.pki.ca_file))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1  # refused by the listener's TLS context
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(handed.url + "/healthz", verify=old, trust_env=False)
    _until(lambda: handed.ended == [1])
    port = int(handed.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:  # plain HTTP on TLS: garbage
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(10)
        while raw.recv(4096):
            pass  # until the listener closes it
    _until(lambda: handed.ended == [1, 1])
    time.sleep(0.2)
    assert handed.ended == [1, 1]  # never twice


def test_a_connection_for_an_unknown_listener_is_closed_and_reported(handed: Handed) -> None:
    ours, theirs = socket.socketpair()
    with ours:
        handed.group.take(7, theirs)  # one listener only
        ours.settimeout(10)
        assert ours.recv(1) == b""  # closed
    assert handed.ended == [1]
