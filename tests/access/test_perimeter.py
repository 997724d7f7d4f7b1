"""The perimeter on real loopback listeners: floods, sizes, failed logins, slow clients."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx

from hdsvault.access.roles import Role
from hdsvault.api.perimeter import REFUSALS

from .kit import local_token

LIMITS = {
    "per_identity": {"rate": 20, "burst": 40},
    "per_address": {"rate": 5, "burst": 100},
    "max_body_bytes": 4096,
    "max_header_bytes": 8192,
    "header_timeout_seconds": 1.0,
    "login_failures_allowed": 5,
}


def _client(url: str, source: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        transport=httpx.HTTPTransport(local_address=source),
        timeout=10,
        trust_env=False,
    )


def _url(group) -> str:  # type: ignore[no-untyped-def]
    listener = group.listeners[0]
    return f"http://127.0.0.1:{listener.port}"


def test_a_flooding_client_gets_429_while_others_are_served(make_edge_platform, serve) -> None:  # type: ignore[no-untyped-def]
    platform = make_edge_platform(perimeter=LIMITS)
    url = _url(serve(platform))
    flood_token, calm_token = local_token(platform, Role.SERVICE), local_token(platform, Role.NURSE)
    flooder, calm, anon = (
        _client(url, "127.0.0.1"),
        _client(url, "127.0.0.2"),
        _client(url, "127.0.0.3"),
    )
    statuses: list[int] = []
    calm_statuses: list[int] = []
    retry_after: set[str] = set()
    for i in range(300):  # bounded loop, loopback only
        r = flooder.get("/api/whoami", headers={"Authorization": f"Bearer {flood_token}"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            retry_after.add(r.headers["retry-after"])
        if i % 15 == 0:
            c = calm.get("/api/whoami", headers={"Authorization": f"Bearer {calm_token}"})
            calm_statuses.append(c.status_code)
    assert statuses.count(200) >= 40 and statuses.count(429) >= 100, statuses
    assert set(statuses) == {200, 429}
    assert retry_after and all(int(v) >= 1 for v in retry_after)
    assert calm_statuses == [200] * 20

    # an anonymous flood from one address hits the per-address bucket
    anon_statuses = [anon.get("/healthz").status_code for _ in range(300)]
    assert anon_statuses.count(429) >= 100 and anon_statuses[0] == 200
    assert (
        calm.get("/api/whoami", headers={"Authorization": f"Bearer {calm_token}"}).status_code
        == 200
    )
    metrics = calm.get("/metrics").text
    assert 'hdsvault_perimeter_refusals_total{reason="rate-identity"}' in metrics
    for c in (flooder, calm, anon):
        c.close()


def test_failed_logins_back_off_per_address(make_edge_platform, serve) -> None:  # type: ignore[no-untyped-def]
    platform = make_edge_platform(perimeter=LIMITS)
    url = _url(serve(platform))
    guesser, other = _client(url, "127.0.0.4"), _client(url, "127.0.0.5")
    bad = {"Authorization": "Bearer hdsv_000000000000000000000000_guess"}
    codes = [guesser.get("/api/whoami", headers=bad).status_code for _ in range(5)]
    assert codes == [401] * 5
    r = guesser.get("/api/whoami", headers=bad)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    good = {"Authorization": f"Bearer {local_token(platform, Role.NURSE)}"}
    assert guesser.get("/api/whoami", headers=good).status_code == 429  # even a good one waits
    assert other.get("/api/whoami", headers=bad).status_code == 401  # other addresses unaffected
    time.sleep(1.1)  # first back-off is 1 s
    assert guesser.get("/api/whoami", headers=good).status_code == 200  # success clears it
    assert guesser.get("/api/whoami", headers=bad).status_code == 401
    guesser.close()
    other.close()


def test_body_and_header_limits(make_edge_platform, serve) -> None:  # type: ignore[no-untyped-def]
    platform = make_edge_platform(perimeter=LIMITS)
    url = _url(serve(platform))
    client = _client(url, "127.0.0.6")
    token = {"Authorization": f"Bearer {local_token(platform, Role.NURSE)}"}
    r = client.post("/api/whoami", content=b"x" * 10_000, headers=token)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    r = client.post(
        "/admin/access/750712184/explain",
        content=chunks(),
        headers={**token, "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    r = client.get("/healthz", headers={"x-filler": "z" * 9000})
    assert r.status_code == 431
    r = client.get("/healthz", headers={f"x-h{i}": "1" for i in range(150)})
    assert r.status_code == 431
    ok = client.get("/healthz")
    assert ok.status_code == 200
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert ok.headers["content-security-policy"].startswith("default-src 'none'")
    assert "strict-transport-security" not in ok.headers  # no TLS here
    client.close()


def test_slow_clients_are_cut(make_edge_platform, serve) -> None:  # type: ignore[no-untyped-def]
    platform = make_edge_platform(perimeter=LIMITS)
    group = serve(platform)
    port = group.listeners[0].port
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # head never finished
        assert s.recv(100) == b""  # closed by the server
    assert 0.8 < time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # silent client
        assert s.recv(100) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # a normal client works
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")


def _head_refused(port: int, head: bytes) -> bytes:
    """What the server answers a request whose head is ``head``, until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head)  # may be cut while the head is still being sent: refused early
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_oversized_heads_are_refused_by_the_protocol(make_edge_platform, serve) -> None:  # type: ignore[no-untyped-def]
    """A head over twice max_header_bytes (at least 64 KiB) never reaches the application:
    400 and the connection closed (llhttp does not bound heads: our protocol does), in one
    header, in many, in the request line. Under it the perimeter answers 431, and the
    listener goes on serving."""
    platform = make_edge_platform(perimeter=LIMITS)
    group = serve(platform)
    port = group.listeners[0].port
    for head in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"z" * 70_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
        + b"\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        answer = _head_refused(port, head)
        assert answer.startswith(b"HTTP/1.1 400") or answer == b"", answer[:100]
    assert _head_refused(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-F: " + b"z" * 9000 + b"\r\n\r\n"
    ).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    refused = REFUSALS.labels("header-size")._value.get()
    assert refused >= 3
