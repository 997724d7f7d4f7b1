"""DICOM and HL7 listeners as an operator runs them: inside ``hdsvault serve`` when enabled,
or alone (``hdsvault dicom serve``, ``hdsvault hl7 serve``); real processes, real peers
(dcmtk's ``echoscu``, python-hl7's MLLP client), stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import httpx
import pytest
from hl7.client import MLLPClient

from support.components import require_component
from support.ports import free_port, free_ports
from support.processes import children, gone, listens_on

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
from samples import adt_a01

TENANT = "750712184"
ECHOSCU = "/usr/bin/echoscu"  # dcmtk's (pynetdicom installs a Python tool of the same name)

pytestmark = pytest.mark.timeout(180)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(port: int, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    """Until ``proc`` itself listens on ``port`` (not another test's server handed the same
    free port: then ``proc`` exits, and this says so)."""
    deadline = time.monotonic() + seconds
    while not listens_on(proc.pid, port):
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {port} after {seconds} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM; the exit code and what the process logged (stdout and stderr)."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def frozen_at_start(logged: str) -> int:
    """Objects the serving process froze once started (``heap.frozen``; 0 if it did not)."""
    for line in logged.splitlines():
        if '"heap.frozen"' in line:
            return int(json.loads(line)["objects"])
    return 0


@pytest.fixture
def ports() -> dict[str, int]:
    return dict(zip(("http", "dicom", "hl7"), free_ports(3), strict=True))


@pytest.fixture
def configured(tmp_path: Path, ports: dict[str, int]) -> Iterator[list[str]]:
    """``hdsvault --config FILE`` of an initialised platform with one tenant, both enabled."""
    if not shutil.which(ECHOSCU):
        require_component("dcmtk", f"{ECHOSCU} not found (apt install dcmtk)")
    cfg = tmp_path / "hdsvault.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f"[dicom]\nenabled = true\nport = {ports['dicom']}\n"
        f'[[dicom.peers]]\nae_title = "ECHOSCU"\ntenant = "{TENANT}"\n'
        f"[hl7]\nenabled = true\nport = {ports['hl7']}\n"
        f'[[hl7.senders]]\napplication = "SIH_ADT"\ntenant = "{TENANT}"\n'
    )
    base = ["hdsvault", "--config", str(cfg)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDSVAULT_")}
    subprocess.run([*base, "init"], check=True, capture_output=True, env=env)
    subprocess.run(
        [*base, "tenant", "add", TENANT, "--name", "CHU test"],
        check=True,
        capture_output=True,
        env=env,
    )
    yield base


def popen(args: list[str], **settings: str) -> subprocess.Popen[str]:
    """``args`` with no HDSVAULT_ variable of ours, but ``settings`` (``HDSVAULT_<name>``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDSVAULT_")}
    env.update({f"HDSVAULT_{k}": v for k, v in settings.items()})
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def echo(port: int) -> int:
    return subprocess.run(
        [ECHOSCU, "-aet", "ECHOSCU", "-aec", "HDSVAULT", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=60,
    ).returncode


def ack_code(port: int) -> str:
    with MLLPClient("127.0.0.1", port, encoding="utf-8") as client:
        raw = client.send_message(adt_a01("SERVE-1").encode("utf-8"))
    return str(hl7.parse(raw.decode("utf-8").strip("\x0b\x1c\r")).segment("MSA")[1])


def test_serve_runs_the_enabled_listeners_and_stops_them(
    configured: list[str], ports: dict[str, int]
) -> None:
    server = popen([*configured, "serve", "--port", str(ports["http"])])
    try:
        wait_for(ports["http"], server)
        assert httpx.get(f"http://127.0.0.1:{ports['http']}/readyz", timeout=10).status_code == 200
        assert listening(ports["dicom"]) and listening(ports["hl7"])
        assert echo(ports["dicom"]) == 0
        assert ack_code(ports["hl7"]) == "AA"
    finally:
        code, logged = stop(server)
    assert code == 0
    assert not listening(ports["dicom"]) and not listening(ports["hl7"])
    # Settled once started (hdsvault.heap): full collections skip the start-up objects.
    assert frozen_at_start(logged) > 10_000


@pytest.mark.parametrize("listener", ["dicom", "hl7"])
def test_each_listener_alone_answers_and_stops_on_sigterm(
    configured: list[str], ports: dict[str, int], listener: str
) -> None:
    port = free_port()  # --port overrides the configured one
    proc = popen([*configured, listener, "serve", "--port", str(port)])
    try:
        wait_for(port, proc)
        if listener == "dicom":
            assert echo(port) == 0
        else:
            assert ack_code(port) == "AA"
        assert not listening(ports[listener]) and not listening(ports["http"])
    finally:
        code, logged = stop(proc)
    assert code == 0
    assert not listening(port)
    assert frozen_at_start(logged) > 10_000


def test_dicom_workers_never_outlive_their_listener(
    configured: list[str], ports: dict[str, int]
) -> None:
    """``[dicom] workers = 2``: two worker processes serve; when the listening process is
    killed (SIGKILL: it cannot stop them), they see their control socket close and exit."""
    port = free_port()
    proc = popen([*configured, "dicom", "serve", "--port", str(port)], DICOM__WORKERS="2")
    try:
        wait_for(port, proc)
        assert echo(port) == 0 and echo(port) == 0
        workers = children(proc.pid)
        assert len(workers) == 2, workers
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while not all(gone(w) for w in workers):
        assert time.monotonic() < deadline, [w for w in workers if not gone(w)]
        time.sleep(0.1)
    assert not listening(port)


@pytest.mark.parametrize(
    ("command", "section", "missing"),
    [
        (["serve"], "[dicom]\nenabled = true\n", "dicom.peers"),
        (["dicom", "serve"], "", "dicom.peers"),
        (["hl7", "serve"], "", "hl7.senders"),
    ],
)
def test_a_listener_without_peers_is_refused_before_binding(
    tmp_path: Path, command: list[str], section: str, missing: str
) -> None:
    cfg = tmp_path / "hdsvault.toml"
    port = free_port()
    cfg.write_text(f'data_dir = "{tmp_path / "var"}"\n{section}')
    subprocess.run(["hdsvault", "--config", str(cfg), "init"], check=True, capture_output=True)
    out = subprocess.run(
        ["hdsvault", "--config", str(cfg), *command, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert missing in out.stdout + out.stderr
    assert not listening(port)
