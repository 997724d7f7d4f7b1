"""Imaging ingest and retrieval, hdsvault beside Orthanc on the same files in the same run.

    python bench/imaging/run.py [--instances 400] [--per-study 40] [--stow-batch 50]
                                [--concurrency 1]

- C-STORE ingest: dcmtk ``storescu`` (the same binary for both targets), one association per
  unit of concurrency, each sending its share of the files;
- STOW-RS ingest: HTTP clients (as many as the concurrency) post multipart/related batches;
- WADO-RS retrieval: every study fetched as multipart/related; afterwards (not timed) every
  instance's pixel data is checked byte-identical to what was sent, for both peers.

Fairness: both peers get the same files, the same clients and the same concurrency, on the
same machine, one after the other. hdsvault runs with its encryption (AES-GCM per instance,
sealed metadata, blind-index tokens) and journal on, SQLite and filesystem blobs (the embedded
default), and acknowledges a write only once the blob and the index transaction are fsynced
(``synchronous=FULL``); its ImagingStudy derivation after each association is let finish
before Orthanc is measured. Orthanc runs with its defaults, which are less strict: SQLite
index in WAL mode with ``synchronous=NORMAL`` (index commits are not fsynced), storage area
fsynced per file (``SyncStorageArea``), no compression; ``TCP_NODELAY=1`` is in its
environment. Both log at warning level. Files are CT_small.dcm (pydicom test data) cloned
with fresh UIDs.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench._table import print_table

from hdsvault.platform import Platform

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


def storescu(host: str, port: int, aec: str, directories: list[Path]) -> float:
    """One dcmtk ``storescu`` per directory, all at once (one association each)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["/usr/bin/storescu", "-aet", "BENCH", "-aec", aec, "+sd", host, str(port), str(d)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for d in directories
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - start
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-1000:]}")
    return elapsed


def noop_scp(max_pdu: int) -> tuple[Any, int]:
    """A pynetdicom C-STORE SCP that stores nothing: the ceiling of any pynetdicom server on
    this machine (hdsvault's DIMSE listener is one), measured beside the two peers."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    from hdsvault.dicom.server import nodelay

    def on_store(event: Any) -> int:
        event.encoded_dataset(include_meta=True)
        return 0x0000

    ae = AE(ae_title="NOOP")
    ae.maximum_pdu_size = max_pdu
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_C_STORE, on_store)],
    )
    return server, int(server.server_address[1])


def _parallel(n: int, work: Callable[[int], object]) -> float:
    """Run ``work(0..n-1)`` in n threads; the wall time of the slowest."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(work, range(n)))
    return time.perf_counter() - start


def stow(
    url: str, files: list[bytes], batch: int, headers: dict[str, str], concurrency: int
) -> float:
    boundary = "benchboundary0123456789"
    bodies = [
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n"
            for f in files[i : i + batch]
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
        for i in range(0, len(files), batch)
    ]
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'

    def post(worker: int) -> None:
        with httpx.Client(timeout=600) as client:
            for body in bodies[worker::concurrency]:
                r = client.post(url, content=body, headers={**headers, "Content-Type": ctype})
                if r.status_code != 200:
                    raise RuntimeError(f"STOW {url}: {r.status_code} {r.text[:300]}")

    return _parallel(concurrency, post)


def wado(
    base: str, studies: list[str], headers: dict[str, str], concurrency: int
) -> tuple[float, dict[str, bytes]]:
    """Fetch every study (multipart/related); returns the time and the bodies by study."""
    bodies: dict[str, bytes] = {}
    accept = {**headers, "Accept": 'multipart/related; type="application/dicom"'}

    def fetch(worker: int) -> None:
        with httpx.Client(timeout=600) as client:
            for uid in studies[worker::concurrency]:
                r = client.get(f"{base}/studies/{uid}", headers=accept)
                if r.status_code != 200:
                    raise RuntimeError(f"WADO {base}: {r.status_code} {r.text[:200]}")
                bodies[uid] = r.content + b"|" + r.headers["content-type"].encode()

    return _parallel(concurrency, fetch), bodies


def pixel_data(paths: list[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> Pixel Data bytes, of the files sent."""
    out = {}
    for p in paths:
        ds = pydicom.dcmread(p)
        out[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return out


def check_identical(who: str, bodies: dict[str, bytes], sent: dict[str, bytes]) -> None:
    """Every instance came back, with its pixel data byte for byte (outside the timing)."""
    got: dict[str, bytes] = {}
    for tagged in bodies.values():
        body, _, ctype = tagged.rpartition(b"|")
        boundary = ctype.decode().split("boundary=")[1].split(";")[0].strip('"')
        for part in body.split(b"--" + boundary.encode())[1:-1]:
            data = part.split(b"\r\n\r\n", 1)[1][:-2]
            ds = pydicom.dcmread(io.BytesIO(data))
            got[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    if got != sent:
        raise RuntimeError(f"{who}: WADO-RS returned different pixel data or instances")


def wait_for_fhir_sync(platform: Platform, timeout: float = 120) -> None:
    """Let hdsvault finish deriving ImagingStudy resources (after each association) before
    the next measurement, so that it does not compete with the other peer for the CPU."""
    from sqlalchemy import func, select

    from hdsvault.db.schema import imaging_studies

    deadline = time.monotonic() + timeout
    st = imaging_studies.c
    while time.monotonic() < deadline:
        with platform.engine.connect() as conn:
            lagging = conn.execute(
                select(func.count()).where(st.revision != st.fhir_revision)
            ).scalar_one()
        if not lagging:
            return
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--per-study", type=int, default=40)
    ap.add_argument("--stow-batch", type=int, default=50)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="associations / HTTP clients in parallel, the same for both peers",
    )
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
    from hdsvault.logs import configure_logging
    from hdsvault.platform import init_platform
    from hdsvault.tenants.service import add_tenant

    configure_logging("warning")
    n_conc = max(1, args.concurrency)
    with tempfile.TemporaryDirectory(prefix="hdsv-bench-img-") as tmp:
        work = Path(tmp)
        dimse_files = make_files(work / "dimse", args.instances, args.per_study)
        dirs = [work / "dimse" / f"a{i}" for i in range(n_conc)]
        for i, p in enumerate(dimse_files):
            dirs[i % n_conc].mkdir(exist_ok=True)
            p.rename(dirs[i % n_conc] / p.name)
        dimse_files = sorted(work.glob("dimse/a*/*.dcm"))
        stow_paths = make_files(work / "stow", args.instances, args.per_study)
        stow_files = [p.read_bytes() for p in stow_paths]
        sent = pixel_data(stow_paths)
        mb = sum(p.stat().st_size for p in dimse_files) / 1e6
        studies = sorted(
            {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in stow_paths}
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
                port=_port(),
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
        load = os.getloadavg()
        with Orthanc(work / "orthanc") as orthanc:
            o_base = f"{orthanc.url}/dicom-web"
            t_hv = storescu(dhost, dport, settings.dicom.ae_title, dirs)
            wait_for_fhir_sync(platform)
            t_or = storescu("127.0.0.1", orthanc.dicom_port, "ORTHANC", dirs)
            rows.append(("C-STORE ingest (storescu)", t_hv, t_or))
            noop, noop_port = noop_scp(settings.dicom.max_pdu)
            t_noop = storescu("127.0.0.1", noop_port, "NOOP", dirs)
            noop.shutdown()
            rows.append(("C-STORE, no-op pynetdicom SCP in hdsvault's place", t_noop, t_or))
            t_hv = stow(f"{hv_base}/studies", stow_files, args.stow_batch, auth, n_conc)
            t_or = stow(f"{o_base}/studies", stow_files, args.stow_batch, {}, n_conc)
            rows.append((f"STOW-RS ingest (batches of {args.stow_batch})", t_hv, t_or))
            t_hv, b_hv = wado(hv_base, studies, auth, n_conc)
            t_or, b_or = wado(o_base, studies, {}, n_conc)
            rows.append(("WADO-RS retrieve (per study)", t_hv, t_or))
            load = tuple(max(a, b) for a, b in zip(load, os.getloadavg(), strict=True))
            check_identical("hdsvault", b_hv, sent)
            check_identical("Orthanc", b_or, sent)
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
        f"Imaging: {n} instances ({mb:.1f} MB), {len(studies)} studies, "
        f"concurrency {n_conc} for both",
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
        "SQLite (WAL, synchronous=FULL) + filesystem blobs, every ack after fsync. "
        "Orthanc: defaults (SQLite WAL synchronous=NORMAL, storage fsync on), "
        "TCP_NODELAY=1. Pixel data checked identical after WADO-RS. Ratio > 1: hdsvault "
        f"faster. Load average (max over the run): {load[0]:.2f}.",
    )
    return 0


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
