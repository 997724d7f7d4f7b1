"""Connections accepted by one process and served by another (``ListenerGroup.take``, what an
HTTP worker does with the connections ``hdsvault serve --workers N`` hands it): served as
the listener's own (TLS, client certificates, zone gate), and each one's end reported exactly
once, whether it was served, failed its TLS handshake or was refused, so that the parent's
count of open connections per worker, which decides where the next one goes, stays true."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hdsvault.access.roles import Role
from hdsvault.api.app import create_app
from hdsvault.api.listeners import ListenerGroup, plan

from .kit import local_token, tls_settings
from support.loopback import Pki, make_pki
from support.ports import free_ports


@dataclass
class Handed:
    group: ListenerGroup
    pki: Pki
    url: str
    ended: list[int]


@contextlib.contextmanager
def _handing(group: ListenerGroup, listeners: int) -> Iterator[list[str]]:
    """The parent's part: one listening socket per listener of ``group``, each accepted
    connection handed to it with that listener's index; yields the sockets' addresses."""
    sockets = [socket.create_server(("127.0.0.1", port)) for port in free_ports(listeners)]

    def accept(index: int) -> None:
        while True:
            try:
                conn, _ = sockets[index].accept()
            except OSError:
                return
            group.take(index, conn)

    for index in range(listeners):
        threading.Thread(target=accept, args=(index,), daemon=True).start()
    try:
        yield [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


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
    try:
        with _handing(group, 1) as (address,):
            yield Handed(group, pki, f"https://{address}", ended)
    finally:
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


def test_handed_connections_keep_their_zone_and_their_peer_address(make_edge_platform) -> None:  # type: ignore[no-untyped-def]
    """Each connection is served by the listener that accepted it (its zone's paths) and
    judged on its own client's address (the zone's allowlist), as when the worker accepted
    it itself: an address outside the admin zone's allowlist is refused there."""
    zones = [("clinical", "127.0.0.0/8"), ("admin", "127.0.0.2/32")]
    platform = make_edge_platform(
        access={"policy": "builtin"},
        perimeter={
            "zones": [
                {"name": name, "port": port, "allow": [allow]}
                for (name, allow), port in zip(zones, free_ports(2), strict=True)
            ]
        },
    )
    group = ListenerGroup(create_app(platform), platform.settings, plan(platform.settings))
    group.start_in_thread(handed=lambda: None)
    operator = {"Authorization": f"Bearer {local_token(platform, Role.PLATFORM_OPERATOR, None)}"}
    try:
        with _handing(group, 2) as (clinical, admin):

            def get(address: str, path: str, source: str = "127.0.0.1") -> int:
                transport = httpx.HTTPTransport(local_address=source)
                with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
                    return client.get(f"http://{address}{path}", headers=operator).status_code

            assert get(admin, "/admin/access/policy", "127.0.0.2") == 200
            assert get(admin, "/admin/access/policy", "127.0.0.1") == 403  # not in its allowlist
            assert get(clinical, "/admin/access/policy") == 404  # not the clinical zone's
            assert get(clinical, "/api/whoami") == 200
    finally:
        group.join()
