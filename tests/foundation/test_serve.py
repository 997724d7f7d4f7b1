"""`hdsvault init` + `hdsvault serve` as an operator runs them (what `make run` does)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support.serving import start_on_free_port


def _started(tmp_path: Path, workers: int, **env_vars: str) -> tuple[subprocess.Popen[str], int]:
    """``hdsvault init`` then ``hdsvault serve`` (``workers`` processes), answering /readyz
    itself (``support.serving``)."""
    env = {**os.environ, "HDSVAULT_DATA_DIR": str(tmp_path / "var"), **env_vars}
    env.pop("HDSVAULT_CONFIG", None)
    subprocess.run(["hdsvault", "init"], env=env, check=True, capture_output=True)

    def launch(port: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["hdsvault", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start_on_free_port(launch, lambda proc: proc.communicate(timeout=30)[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_init_then_serve_answers_readyz(tmp_path: Path, workers: int) -> None:
    server, port = _started(tmp_path, workers)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/whoami").status_code == 401
        assert "hdsvault_http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines)  # every log line is JSON
    # Each serving process (the worker processes, with --workers 2) settles its heap once
    # started (hdsvault.heap): full collections no longer traverse the start-up objects.
    frozen = [json.loads(line)["objects"] for line in lines if '"heap.frozen"' in line]
    assert len(frozen) == workers and all(n > 10_000 for n in frozen)
    assert "Bearer" not in stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_the_perimeter_head_time_out_holds_with_workers(tmp_path: Path, workers: int) -> None:
    """``[perimeter] header_timeout_seconds`` cuts a client that never finishes its request
    head, whether one process serves or worker processes do (they used to keep the
    protocol's built-in 10 s)."""
    server, port = _started(tmp_path, workers, HDSVAULT_PERIMETER__HEADER_TIMEOUT_SECONDS="1")
    try:
        for _ in range(2 * workers):  # connections spread over the workers
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # head never finished
                assert s.recv(100) == b""  # closed by the server
            assert 0.8 < time.monotonic() - started < 4
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "postgresql+psycopg://hds:topsecret@db/hds"\n')
    out = subprocess.run(
        ["hdsvault", "--config", str(cfg), "config", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "topsecret" not in out and "hds:***@db/hds" in out


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nport = -1\n")
    result = subprocess.run(
        ["hdsvault", "--config", str(cfg), "serve"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr
