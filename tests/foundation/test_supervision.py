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
