"""``hdsvault serve --workers 2`` with zones and TLS: the listeners bound by the parent,
served by two worker processes (``api/workers.py``, ``api/worker.py``), as an operator runs
it. Real processes, real TLS (a test CA), real signals."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.loopback import Pki, make_pki
from support.ports import free_ports
from support.processes import children, gone, socket_inodes, tcp_inodes

pytestmark = pytest.mark.timeout(180)

SECRET = "pg-s3cr3t-for-workers"


@dataclass
class Served:
    proc: subprocess.Popen[str]
    pki: Pki
    clinical: str  # https
    metrics: str  # http


def _workers(pid: int) -> list[int]:
    return [
        c
        for c in children(pid)
        if b"hdsvault.api.worker" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def _until(check: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@contextmanager
def _serving(tmp_path: Path, perimeter: str = "") -> Iterator[Served]:
    """``hdsvault serve --workers 2``: a TLS clinical zone and a plain metrics zone, plus
    ``perimeter`` (TOML lines of ``[perimeter]``)."""
    pki = make_pki(tmp_path)
    clinical, metrics = free_ports(2)
    config = tmp_path / "hdsvault.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        '[logging]\nlevel = "info"\n'
        f'[tls]\ncert_file = "{pki.server_cert}"\nkey_file = "{pki.server_key}"\n'
        f'[blobs]\ns3_secret_key = "{SECRET}"\n'
        f"[perimeter]\n{perimeter}\n"
        "[[perimeter.zones]]\n"
        f'name = "clinical"\nhost = "127.0.0.1"\nport = {clinical}\nallow = ["127.0.0.0/8"]\n'
        "[[perimeter.zones]]\n"
        f'name = "metrics"\nhost = "127.0.0.1"\nport = {metrics}\nallow = ["127.0.0.0/8"]\n'
        "tls = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDSVAULT_")}
    exe = str(Path(sys.executable).parent / "hdsvault")
    subprocess.run([exe, "--config", str(config), "init"], env=env, check=True, capture_output=True)
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads while the test runs
    with log.open("w") as err:
        proc = subprocess.Popen(
            [exe, "--config", str(config), "serve", "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    run = Served(proc, pki, f"https://127.0.0.1:{clinical}", f"http://127.0.0.1:{metrics}")
    try:
        # every worker started (one may answer before the other is ready)
        _until(lambda: proc.poll() is not None or "http.workers-ready" in log.read_text(), 120)
        assert proc.poll() is None and _ready(run), log.read_text()[-3000:]
        yield run
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serving(tmp_path) as run:
        yield run


def _tls(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def _ready(run: Served) -> bool:
    try:
        return httpx.get(run.clinical + "/readyz", verify=_tls(run.pki), timeout=2).is_success
    except httpx.TransportError:
        return False


def test_zones_and_tls_are_served_by_two_worker_processes(served: Served) -> None:
    workers = _workers(served.proc.pid)
    assert len(workers) == 2, workers
    ctx = _tls(served.pki)
    # each zone on its own listener, TLS where configured, paths per zone
    r = httpx.get(served.clinical + "/healthz", verify=ctx)
    assert r.status_code == 200 and r.headers["strict-transport-security"].startswith("max-age=")
    assert httpx.get(served.clinical + "/api/whoami", verify=ctx).status_code == 401
    assert httpx.get(served.clinical + "/metrics", verify=ctx).status_code == 404
    with pytest.raises(httpx.ConnectError):  # TLS 1.1: refused by the workers' context too
        old = ssl.create_default_context(cafile=str(served.pki.ca_file))
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        httpx.get(served.clinical + "/healthz", verify=old)
    # metrics aggregated over the workers, on the plain-HTTP metrics zone only
    for _ in range(20):
        httpx.get(served.clinical + "/healthz", verify=ctx)
    text = httpx.get(served.metrics + "/metrics").text
    assert "hdsvault_http_requests_total" in text
    # the parent accepts: no worker holds a listening socket
    listening = tcp_inodes(lambda local, _remote, state: state == "0A")
    for pid in workers:
        assert not socket_inodes(pid) & listening


def _worker_of(served: Served, sock: socket.socket) -> int:
    """The worker process serving the server side of ``sock`` (a client connection)."""
    port, mine = int(served.metrics.rsplit(":", 1)[1]), sock.getsockname()[1]
    inodes = tcp_inodes(lambda local, remote, state: (local, remote, state) == (port, mine, "01"))
    owners = [pid for pid in _workers(served.proc.pid) if socket_inodes(pid) & inodes]
    assert len(owners) == 1, owners
    return owners[0]


def _connected(served: Served) -> socket.socket:
    """A kept-alive connection to the metrics zone, once it has been answered."""
    sock = socket.create_connection(("127.0.0.1", int(served.metrics.rsplit(":", 1)[1])))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: hdsvault\r\n\r\n")
    sock.settimeout(10)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, "closed before the answer"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:100]
    return sock


def test_connections_go_to_the_worker_with_the_fewest_open(served: Served) -> None:
    """A viewer's connections, opened one after another on a quiet server, are shared by the
    workers (the kernel gave them all to one process: api/workers.py); a worker whose
    connections end gets the next ones."""
    socks = [_connected(served) for _ in range(4)]
    try:
        owners = [_worker_of(served, s) for s in socks]
        assert sorted(Counter(owners).values()) == [2, 2], owners
        freed = owners[0]
        for sock, owner in zip(socks, owners, strict=True):
            if owner == freed:
                sock.close()
        socks = [s for s, o in zip(socks, owners, strict=True) if o != freed]

        def next_goes_to_freed() -> bool:  # once its ends were reported
            sock = _connected(served)
            if _worker_of(served, sock) == freed:
                socks.append(sock)
                return True
            sock.close()  # its end reported too: the counts are as before
            return False

        _until(next_goes_to_freed, 20)
        socks.append(_connected(served))
        assert _worker_of(served, socks[-1]) == freed  # 1 against 2
    finally:
        for sock in socks:
            sock.close()


def test_secrets_reach_the_workers_through_the_socket_only(served: Served) -> None:
    for pid in _workers(served.proc.pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:3] == [b"-m", b"hdsvault.api.worker"]
        assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes() + b"".join(argv)


def test_a_killed_worker_is_restarted_and_the_service_goes_on(served: Served) -> None:
    before = _workers(served.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    _until(
        lambda: len(_workers(served.proc.pid)) == 2 and before[0] not in _workers(served.proc.pid)
    )
    ctx = _tls(served.pki)
    for _ in range(10):  # whichever worker accepts, it answers
        assert httpx.get(served.clinical + "/healthz", verify=ctx).status_code == 200


def test_stopping_the_server_stops_its_workers_and_closes_the_ports(served: Served) -> None:
    workers = _workers(served.proc.pid)
    served.proc.send_signal(signal.SIGINT)  # Ctrl-C: the parent stops its workers
    assert served.proc.wait(timeout=60) == 0
    _until(lambda: all(gone(w) for w in workers))
    port = int(served.clinical.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_workers_exit_when_the_parent_is_killed(served: Served) -> None:
    workers = _workers(served.proc.pid)
    served.proc.kill()
    served.proc.wait(timeout=30)
    _until(lambda: all(gone(w) for w in workers))


def _statuses(run: Served, path: str, n: int, **kw: object) -> list[int]:
    """``n`` requests from 127.0.0.2, each on a new connection (so that both workers get
    some: the kernel hands each connection to one of them)."""
    out = []
    for _ in range(n):
        transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=_tls(run.pki))
        with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
            out.append(client.get(run.clinical + path, **kw).status_code)  # type: ignore[arg-type]
    return out


def test_rate_limits_and_login_back_off_hold_for_the_whole_server(tmp_path: Path) -> None:
    """The perimeter's buckets and failed-login counts are shared by the workers: an address
    gets its configured burst, not one per worker; its failed logins are counted once."""
    with _serving(tmp_path, "per_address = { rate = 0.001, burst = 12 }") as run:
        statuses = _statuses(run, "/healthz", 30)
        assert statuses.count(200) == 12 and statuses.count(429) == 18, statuses
    (tmp_path / "logins").mkdir()
    with _serving(tmp_path / "logins", "login_backoff_seconds = 30") as run:
        bad = {"Authorization": "Bearer not-a-token"}
        statuses = _statuses(run, "/api/whoami", 12, headers=bad)
        assert statuses == [401] * 5 + [429] * 7, statuses  # login_failures_allowed = 5
