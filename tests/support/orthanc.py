"""A throwaway Orthanc (the open PACS) on loopback: its own config, ports and storage.

Used by the imaging interoperability tests and by ``bench/imaging``. Orthanc is started
with ``TCP_NODELAY=1`` in its environment: dcmtk (inside Orthanc) leaves Nagle's algorithm
on otherwise, and every DIMSE reply then waits ~40 ms for the delayed ACK.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from support.ports import free_ports
from support.processes import listens_on

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def missing_requirements() -> str | None:
    if not (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists()):
        return "Orthanc not installed (apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "Orthanc DICOMweb plugin not installed (apt-get install orthanc-dicomweb)"
    return None


def dicomweb_plugin() -> str | None:
    return _plugin("libOrthancDicomWeb.so*")


def postgresql_index_plugin() -> str | None:
    """Orthanc's PostgreSQL index plugin (Debian's ``orthanc-postgresql``), or None."""
    return _plugin("libOrthancPostgreSQLIndex.so*")


def _plugin(pattern: str) -> str | None:
    for d in PLUGIN_DIRS:
        for p in sorted(Path(d).glob(pattern)) if Path(d).is_dir() else []:
            return str(p)
    return None


INDEX_CONNECTIONS = 5
"""Connections of Orthanc's PostgreSQL index: hdsvault's pool size (``[database]
pool_size``), so that both peers run as many database sessions."""


class Orthanc:
    """``with Orthanc(workdir, modalities=..., dicomweb=...) as o: o.rest.get("/system")``."""

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        dicomweb_servers: dict[str, dict[str, Any]] | None = None,
        postgresql: tuple[int, str, str] | None = None,
    ) -> None:
        """``postgresql``: (port, user, database) on loopback: the index there (Orthanc's
        PostgreSQL plugin, ``postgresql_index_plugin``), the files still in ``workdir``."""
        self.workdir = workdir
        self.aet = aet
        self.http_port, self.dicom_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "hdsvault-test-peer",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {name: [a, h, p] for name, (a, h, p) in (modalities or {}).items()},
            "Plugins": [p for p in [dicomweb_plugin()] if p],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": dicomweb_servers or {},
            },
            "StableAge": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "HttpTimeout": 60,
            "ConcurrentJobs": 2,
            "SaveJobs": False,
            "StorageCompression": False,
            "OverwriteInstances": True,
        }
        if postgresql is not None:
            plugin = postgresql_index_plugin()
            if plugin is None:
                raise RuntimeError("apt-get install orthanc-postgresql")
            port, user, database = postgresql
            config["Plugins"].append(plugin)
            config["PostgreSQL"] = {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": "127.0.0.1",
                "Port": port,
                "Username": user,
                "Password": "",
                "Database": database,
                "Lock": False,
                "IndexConnectionsCount": INDEX_CONNECTIONS,
            }
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.proc: subprocess.Popen[bytes] | None = None
        self.rest = httpx.Client(base_url=self.url, timeout=120)

    def __enter__(self) -> Orthanc:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        env = {**os.environ, "TCP_NODELAY": "1"}
        log = (self.workdir / "orthanc.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}"
                )
            try:  # this Orthanc, not another process handed the same free port
                if self.rest.get("/system").status_code == 200 and listens_on(
                    self.proc.pid, self.http_port
                ):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start within 30 s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.rest.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- helpers ------------------------------------------------------------------------------

    def upload(self, data: bytes) -> str:
        r = self.rest.post("/instances", content=data)
        r.raise_for_status()
        return str(r.json()["ID"])

    def instances(self) -> list[str]:
        return list(self.rest.get("/instances").json())

    def clear(self) -> None:
        for pid in self.rest.get("/patients").json():
            self.rest.delete(f"/patients/{pid}")

    def file(self, instance_id: str) -> bytes:
        r = self.rest.get(f"/instances/{instance_id}/file")
        r.raise_for_status()
        return r.content

    def post_json(self, path: str, body: Any) -> Any:
        r = self.rest.post(path, content=json.dumps(body))
        if r.status_code >= 400:
            raise RuntimeError(f"Orthanc {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None
