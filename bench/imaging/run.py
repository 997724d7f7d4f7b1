"""Imaging ingest and retrieval, hdsvault beside Orthanc on the same files in the same run.

    python bench/imaging/run.py [--instances 400] [--per-study 40] [--stow-batch 50]

- C-STORE ingest: dcmtk ``storescu`` (the same binary for both targets) sends every file of
  a directory over one association;
- STOW-RS ingest: one HTTP client posts multipart/related batches;
- WADO-RS retrieval: every study fetched as multipart/related.

hdsvault runs with its encryption (AES-GCM per instance, sealed metadata, blind-index
tokens) and journal on, SQLite and filesystem blobs (the embedded default, fsync on).
Orthanc runs with its defaults (SQLite index, filesystem storage) and ``TCP_NODELAY=1`` in
its environment. Files are CT_small.dcm (pydicom test data) cloned with fresh UIDs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench._table import print_table

from support.orthanc import Orthanc, missing_requirements

TENANT = "750712184"


def make_files(directory: Path, n: int, per_study: int) -> list[Path]:
    directory.mkdir(parents=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    study = series = ""
    for i in range(n):
        if i % per_study == 0:
            study, series = generate_uid(), generate_uid()
            base.PatientID = f"BENCH{i // per_study:04d}"
            base.PatientName = f"BENCH^PATIENT{i // per_study:04d}"
        base.StudyInstanceUID, base.SeriesInstanceUID = study, series
        base.SOPInstanceUID = generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.InstanceNumber = i % per_study + 1
        p = directory / f"{i:05d}.dcm"
        base.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def storescu(host: str, port: int, aec: str, directory: Path) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/storescu", "-aet", "BENCH", "-aec", aec, "+sd", host, str(port), str(directory)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-1000:]}")
    return elapsed


def stow(
    client: httpx.Client, url: str, files: list[bytes], batch: int, headers: dict[str, str]
) -> float:
    start = time.perf_counter()
    for i in range(0, len(files), batch):
        boundary = "benchboundary0123456789"
        body = (
            b"".join(
                b"--"
                + boundary.encode()
                + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + f
                + b"\r\n"
                for f in files[i : i + batch]
            )
            + b"--"
            + boundary.encode()
            + b"--\r\n"
        )
        r = client.post(
            url,
            content=body,
            headers={
                **headers,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
        )
        if r.status_code not in (200, 202):
            raise RuntimeError(f"STOW {url}: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - start


def wado(
    client: httpx.Client, base: str, studies: list[str], headers: dict[str, str]
) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    for uid in studies:
        r = client.get(
            f"{base}/studies/{uid}",
            headers={**headers, "Accept": 'multipart/related; type="application/dicom"'},
        )
        if r.status_code != 200:
            raise RuntimeError(f"WADO {base}: {r.status_code} {r.text[:200]}")
        total += len(r.content)
    return time.perf_counter() - start, total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--per-study", type=int, default=40)
    ap.add_argument("--stow-batch", type=int, default=50)
    args = ap.parse_args()
    problem = missing_requirements()
    if problem or not Path("/usr/bin/storescu").exists():
        print(f"imaging bench skipped: {problem or 'dcmtk missing'}")
        return 0

    import uvicorn

    from hdsvault.access.roles import Role
    from hdsvault.access.tokens import create_token
    from hdsvault.api.app import create_app
    from hdsvault.config import DicomPeerSettings, load_settings
    from hdsvault.dicom.server import DimseServer
    from hdsvault.imaging.store import ImagingStore
    from hdsvault.platform import Platform, init_platform
    from hdsvault.tenants.service import add_tenant

    with tempfile.TemporaryDirectory(prefix="hdsv-bench-img-") as tmp:
        work = Path(tmp)
        dimse_files = make_files(work / "dimse", args.instances, args.per_study)
        stow_files = [
            p.read_bytes() for p in make_files(work / "stow", args.instances, args.per_study)
        ]
        mb = sum(p.stat().st_size for p in dimse_files) / 1e6
        studies = sorted(
            {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in dimse_files}
        )

        settings = load_settings(data_dir=work / "hdsvault", logging={"level": "warning"})
        init_platform(settings)
        platform = Platform.open(settings)
        add_tenant(platform, TENANT, "Bench", by="bench")
        settings.dicom.port = 0
        settings.dicom.peers = [DicomPeerSettings(ae_title="BENCH", tenant=TENANT)]
        dimse = DimseServer(ImagingStore(platform))
        dhost, dport = dimse.start()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(platform),
                host="127.0.0.1",
                port=0 or _port(),
                log_config=None,
                access_log=False,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        http_port = server.config.port
        token = create_token(
            platform.engine, tenant=TENANT, role=Role.RADIOLOGY, ttl=timedelta(days=1), by="bench"
        ).token
        auth = {"Authorization": f"Bearer {token}"}
        hv_base = f"http://127.0.0.1:{http_port}/dicomweb/{TENANT}"

        rows = []
        with Orthanc(work / "orthanc") as orthanc, httpx.Client(timeout=600) as client:
            o_base = f"{orthanc.url}/dicom-web"
            t_hv = storescu(dhost, dport, settings.dicom.ae_title, work / "dimse")
            t_or = storescu("127.0.0.1", orthanc.dicom_port, "ORTHANC", work / "dimse")
            rows.append(("C-STORE ingest (storescu)", t_hv, t_or))
            t_hv = stow(client, f"{hv_base}/studies", stow_files, args.stow_batch, auth)
            t_or = stow(client, f"{o_base}/studies", stow_files, args.stow_batch, {})
            rows.append((f"STOW-RS ingest (batches of {args.stow_batch})", t_hv, t_or))
            t_hv, _b_hv = wado(client, hv_base, studies, auth)
            t_or, _b_or = wado(client, o_base, studies, {})
            rows.append(("WADO-RS retrieve (per study)", t_hv, t_or))
        server.should_exit = True
        thread.join(timeout=10)
        dimse.stop()
        platform.close()

    n = args.instances
    table = []
    for what, t_hv, t_or in rows:
        table.append(
            (
                what,
                f"{n / t_hv:.0f}",
                f"{mb / t_hv:.1f}",
                f"{n / t_or:.0f}",
                f"{mb / t_or:.1f}",
                f"{t_or / t_hv:.2f}",
            )
        )
    print_table(
        f"Imaging: {n} instances ({mb:.1f} MB), {len(studies)} studies",
        [
            "operation",
            "hdsvault inst/s",
            "hdsvault MB/s",
            "Orthanc inst/s",
            "Orthanc MB/s",
            "hdsvault/Orthanc",
        ],
        table,
        caption="hdsvault: AES-GCM per instance, sealed metadata, blind-index tokens, journal; "
        "SQLite + filesystem blobs. Orthanc: defaults, TCP_NODELAY=1. Ratio > 1: hdsvault faster.",
    )
    return 0


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
