"""Imaging ingest and retrieval, hdsvault beside Orthanc on the same files in the same run.

    python bench/imaging/run.py [--instances 400] [--large-instances 200] [--per-study 40]
                                [--stow-batch 50] [--wado-rounds 10] [--store-rounds 4]
                                [--concurrency 1]

- C-STORE ingest: dcmtk ``storescu`` (the same binary for both targets), one association per
  unit of concurrency, each sending its share of the files, in ``--store-rounds`` rounds
  alternating between the peers (each peer gets every file once; a drift of the machine's
  speed weighs on both alike; each round starts its own ``storescu``, for both);
- STOW-RS ingest: HTTP clients (as many as the concurrency) post multipart/related batches;
- WADO-RS retrieval: every study fetched as multipart/related ``--wado-rounds`` times, the
  rounds alternating between the peers, each after one untimed request (first-request
  costs); a handful of requests alone, or one peer measured after the other, is noise on a
  shared machine; twice, through httpx and through a minimal HTTP/1.1 client
  (:class:`MinimalClient`: httpx spends about as much CPU on a study as either server, so its
  row is partly a measure of httpx); afterwards (not timed) every instance's pixel data is
  checked byte-identical to what was sent, for both peers and both clients.

Fairness: both peers get the same files, the same clients and the same concurrency, on the
same machine, one after the other; each peer is its own server process (hdsvault is
``hdsvault serve`` with ``[dicom] enabled``, HTTP and DIMSE in one process, as deployed), so
the bench's clients never share a peer's interpreter. hdsvault runs with its encryption (AES-GCM per instance,
sealed metadata, blind-index tokens) and journal on, SQLite and filesystem blobs (the embedded
default), and acknowledges a write only once the blob and the index transaction are fsynced
(the WAL flushed before each commit returns); its ImagingStudy derivation after each association is let finish
before Orthanc is measured. Orthanc runs with its defaults, which are less strict: SQLite
index in WAL mode with ``synchronous=NORMAL`` (index commits are not fsynced), storage area
fsynced per file (``SyncStorageArea``), no compression; ``TCP_NODELAY=1`` is in its
environment. With ``--database postgresql`` both keep their index on the same durable
PostgreSQL cluster the bench starts (each its own database; Orthanc through its PostgreSQL
index plugin, Debian's ``orthanc-postgresql``, with as many connections as hdsvault's pool),
the files on the same disk. Both log at warning level. Two instance sizes, each with every operation:
CT_small.dcm (pydicom test data, 39 KB: what per-instance overhead costs) and the same with
its image tiled to 512x512 16-bit pixels (525 KB, a usual CT slice: MB/s), cloned with fresh
UIDs; the pixel data check covers both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench._table import print_table

from hdsvault.platform import Platform

from support.orthanc import INDEX_CONNECTIONS, Orthanc, missing_requirements
from support.ports import free_ports

T = TypeVar("T")

TENANT = "750712184"


SAMPLES = {
    128: "CT_small.dcm, 39 KB",
    512: "CT 512x512x16 bits, 525 KB",
}
"""Instance sizes of the bench: the pydicom test file (small-file overhead) and a CT slice
of the usual size (throughput in MB/s), both by edge (Rows = Columns) in pixels."""


def make_files(directory: Path, n: int, per_study: int, edge: int = 128) -> list[Path]:
    """``n`` clones of CT_small.dcm with fresh UIDs, ``per_study`` per study; with ``edge``
    512 its 128x128 image is tiled 4x4 into a 512x512 one (a CT slice of the usual size)."""
    directory.mkdir(parents=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if edge != base.Rows:  # native pixels, 2 bytes each: tile rows, then repeat them
        width = base.Columns * 2
        rows = [base.PixelData[r * width : (r + 1) * width] for r in range(base.Rows)]
        reps = edge // base.Columns
        base.PixelData = b"".join(rows[r % base.Rows] * reps for r in range(edge))
        base.Rows = base.Columns = edge
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` and of every process under it (hdsvault's DIMSE and
    HTTP workers), from ``/proc``: what a peer spent, whichever of its processes spent it."""
    total = 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass  # exited meanwhile
    return total


class Spent:
    """CPU seconds each peer spent, over the timed phases of one row."""

    def __init__(self, hv_pid: int, or_pid: int) -> None:
        self.pids = {"hv": hv_pid, "or": or_pid}
        self.seconds = {"hv": 0.0, "or": 0.0}

    def timed(self, peer: str, work: Callable[[], T]) -> T:
        start = cpu_seconds(self.pids[peer])
        try:
            return work()
        finally:
            self.seconds[peer] += cpu_seconds(self.pids[peer]) - start


def flush_ms(directory: Path, n: int = 9) -> float:
    """Median time in ms of a small durable write (file fsync, then directory fsync) on the
    bench's disk, right now. Why: both peers acknowledge after flushes (hdsvault one per
    C-STORE of at most 64 KiB, three above: blob file, directory, commit; Orthanc one), and on a shared disk their cost moves from ~0.2 ms to several ms
    with other jobs' writes; printed beside each row so that a slow row can be told apart."""
    directory.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(n):
        path = directory / f"probe{i}"
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        times.append(time.perf_counter() - start)
        path.unlink()
    return sorted(times)[n // 2] * 1000


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
    """A pynetdicom C-STORE SCP set up as hdsvault's listener (its loops, socket reads, UID
    copies, packed responses, logging and validation settings) whose handler builds the Part 10
    file as hdsvault's does and stores nothing: the ceiling of hdsvault's C-STORE on this
    machine, measured beside the two peers."""
    from pynetdicom import (
        AE,
        ALL_TRANSFER_SYNTAXES,
        PYNETDICOM_IMPLEMENTATION_UID,
        PYNETDICOM_IMPLEMENTATION_VERSION,
        AllStoragePresentationContexts,
        evt,
    )

    from hdsvault.dicom import reactor
    from hdsvault.dicom.server import nodelay, tune_pynetdicom
    from hdsvault.imaging import dicomfile

    def on_store(event: Any) -> int:  # builds the file as hdsvault's handler does, stores nothing
        request = event.request
        dicomfile.part10(
            request.DataSet.getvalue(),
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            (str(PYNETDICOM_IMPLEMENTATION_UID), PYNETDICOM_IMPLEMENTATION_VERSION),
        )
        return 0x0000

    tune_pynetdicom()  # the same loops, socket reads, copies and responses as the listener
    ae = AE(ae_title="NOOP")
    ae.maximum_pdu_size = max_pdu
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, nodelay),
            (evt.EVT_CONN_OPEN, reactor.wake_on_events),
            (evt.EVT_C_STORE, on_store),
        ],
    )
    return server, int(server.server_address[1])


def serve(
    config: Path, http_port: int, dicom_port: int, http_workers: int | None = None
) -> subprocess.Popen[bytes]:
    """``hdsvault serve`` on the bench's config; returns once HTTP and DIMSE both answer."""
    exe = Path(sys.executable).parent / "hdsvault"
    args = ["--config", str(config), "serve", "--port", str(http_port)]
    proc = subprocess.Popen(
        [str(exe), *args, *(["--workers", str(http_workers)] if http_workers else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"hdsvault serve exited with {proc.returncode}: {err[-2000:]}")
        try:
            ready = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code
        except httpx.TransportError:
            ready = 0
        if ready == 200:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", dicom_port)) == 0:
                    return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("hdsvault serve did not become ready in 120 s")
        time.sleep(0.1)


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

    clients = [httpx.Client(timeout=600) for _ in range(concurrency)]  # made untimed (wado)

    def post(worker: int) -> None:
        for body in bodies[worker::concurrency]:
            r = clients[worker].post(url, content=body, headers={**headers, "Content-Type": ctype})
            if r.status_code != 200:
                raise RuntimeError(f"STOW {url}: {r.status_code} {r.text[:300]}")

    try:
        return _parallel(concurrency, post)
    finally:
        for client in clients:
            client.close()


def wado(
    base: str, paths: list[str], headers: dict[str, str], concurrency: int, rounds: int
) -> tuple[float, dict[str, bytes]]:
    """Fetch every resource of ``paths`` (studies or instances, under ``base``: multipart/
    related) ``rounds`` times, after one untimed request (a peer's first retrieval pays
    one-time costs: imports, key unwrapping, caches); returns the time of one round (the mean)
    and the bodies by path.

    The clients are made (and used once) before the timing starts: an ``httpx.Client`` builds
    an SSL context as it is made, ~20 ms of CPU, which until 2026-11-30 01:15 was timed in
    every round of both peers (a 40 x 525 KB study takes ~25 ms)."""
    bodies: dict[str, bytes] = {}
    accept = {**headers, "Accept": 'multipart/related; type="application/dicom"'}

    def get(client: httpx.Client, path: str) -> httpx.Response:
        r = client.get(base + path, headers=accept)
        if r.status_code != 200:
            raise RuntimeError(f"WADO {base}: {r.status_code} {r.text[:200]}")
        return r

    clients = [httpx.Client(timeout=600) for _ in range(concurrency)]
    for client in clients:
        get(client, paths[0])

    def fetch(worker: int) -> None:
        client = clients[worker]
        for _ in range(rounds):
            for path in paths[worker::concurrency]:
                r = get(client, path)
                bodies[path] = r.content + b"|" + r.headers["content-type"].encode()

    try:
        return _parallel(concurrency, fetch) / rounds, bodies
    finally:
        for client in clients:
            client.close()


class MinimalClient:
    """HTTP/1.1 GETs with as little client work as possible: the request written once, the
    response read into a buffer allocated once (by ``Content-Length``, or until the server
    closes the connection, as Orthanc does after each WADO-RS response), its head parsed once.

    Why: httpx spends 2.2-2.7 ms of CPU on a 40 x 39 KB study (1.6 MB), about what either
    server spends to produce it, so a row timed through httpx mostly measures httpx; this
    client spends a few tens of microseconds. Both rows are printed."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        rest = url.split("://", 1)[1]
        hostport, _, self.prefix = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.address = (host, int(port))
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.buffer = bytearray(64 * 1024 * 1024)
        self.sock: socket.socket | None = None

    def get(self, path: str) -> tuple[bytes, str]:
        """The body and the content type of ``GET path`` (status 200 required)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = f"GET /{self.prefix}{path} HTTP/1.1\r\nHost: bench\r\n{self.head}\r\n"
        self.sock.sendall(request.encode())
        view = memoryview(self.buffer)
        got = 0
        while (end := self.buffer.find(b"\r\n\r\n", 0, got)) < 0:
            n = self.sock.recv_into(view[got:])
            if not n:
                raise RuntimeError(f"{self.address}: connection closed before the headers")
            got += n
        lines = bytes(view[:end]).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        if lines[0].split()[1] != "200" or "transfer-encoding" in fields:
            raise RuntimeError(f"{self.address}: {lines[0]} {fields.get('transfer-encoding', '')}")
        length = fields.get("content-length")
        while length is None or got < end + 4 + int(length):
            n = self.sock.recv_into(view[got:])
            if not n:
                if length is not None:
                    raise RuntimeError(f"{self.address}: response cut short")
                break
            got += n
        if length is None or fields.get("connection", "").lower() == "close":
            self.close()
        return bytes(view[end + 4 : got]), fields["content-type"]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def wado_minimal(
    base: str, paths: list[str], headers: dict[str, str], concurrency: int, rounds: int
) -> tuple[float, dict[str, bytes]]:
    """:func:`wado` through :class:`MinimalClient` instead of httpx. The clients (their
    buffers, and for a server that keeps connections open, their connection) are made and
    used once before the timing starts."""
    bodies: dict[str, bytes] = {}
    accept = {**headers, "Accept": 'multipart/related; type="application/dicom"'}
    clients = [MinimalClient(base, accept) for _ in range(concurrency)]
    for client in clients:
        client.get(paths[0])

    def fetch(worker: int) -> None:
        client = clients[worker]
        for _ in range(rounds):
            for path in paths[worker::concurrency]:
                body, ctype = client.get(path)
                bodies[path] = body + b"|" + ctype.encode()

    try:
        return _parallel(concurrency, fetch) / rounds, bodies
    finally:
        for client in clients:
            client.close()


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


@dataclass
class Sample:
    """The files of one instance size: one set for C-STORE (split into rounds, each round into
    one directory per association), another (fresh UIDs) for STOW-RS and WADO-RS."""

    label: str
    n: int
    rounds: list[list[Path]]
    stow_files: list[bytes]
    sent: dict[str, bytes]
    studies: list[str]  # WADO-RS paths: /studies/{uid}
    instances: list[str]  # /studies/{uid}/series/{uid}/instances/{uid}
    mb: float


def make_sample(
    work: Path, edge: int, n: int, per_study: int, n_conc: int, n_rounds: int
) -> Sample:
    root = work / f"edge{edge}"
    dimse_files = make_files(root / "dimse", n, per_study, edge)
    per_round = -(-n // n_rounds)
    rounds = [
        [root / "dimse" / f"r{r}" / f"a{i}" for i in range(n_conc)]
        for r in range(-(-n // per_round))
    ]
    for i, p in enumerate(dimse_files):  # contiguous per round (studies stay together)
        target = rounds[i // per_round][i % n_conc]
        target.mkdir(parents=True, exist_ok=True)
        p.rename(target / p.name)
    stow_paths = make_files(root / "stow", n, per_study, edge)
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in stow_paths]
    return Sample(
        SAMPLES[edge],
        n,
        [[d for d in r if d.is_dir()] for r in rounds],
        [p.read_bytes() for p in stow_paths],
        pixel_data(stow_paths),
        sorted({f"/studies/{ds.StudyInstanceUID}" for ds in heads}),
        [
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
            for ds in heads
        ],
        sum(p.stat().st_size for p in root.glob("dimse/r*/a*/*.dcm")) / 1e6,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=400, help="small (39 KB) instances")
    ap.add_argument(
        "--large-instances", type=int, default=200, help="CT slices of 525 KB (0: none)"
    )
    ap.add_argument("--per-study", type=int, default=40)
    ap.add_argument("--stow-batch", type=int, default=50)
    ap.add_argument(
        "--wado-rounds",
        type=int,
        default=10,
        help="times every study is fetched, alternating between the peers (after warm-up)",
    )
    ap.add_argument(
        "--store-rounds",
        type=int,
        default=4,
        help="C-STORE files sent in this many rounds, alternating between the peers",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="associations / HTTP clients in parallel, the same for both peers",
    )
    ap.add_argument(
        "--http-workers",
        type=int,
        default=None,
        help="hdsvault serve --workers (HTTP processes; default: the configuration's, one per "
        "core)",
    )
    ap.add_argument(
        "--dicom-workers",
        type=int,
        default=None,
        help="hdsvault's [dicom] workers (default: the configuration's default)",
    )
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="hdsvault's index and journal: the embedded default, or a durable PostgreSQL "
        "cluster started for the run (initdb, on a free loopback port)",
    )
    args = ap.parse_args()
    problem = missing_requirements()
    if problem or not Path("/usr/bin/storescu").exists():
        print(f"imaging bench skipped: {problem or 'dcmtk missing'}")
        return 0

    from hdsvault.access.roles import Role
    from hdsvault.access.tokens import create_token
    from hdsvault.config import load_settings
    from hdsvault.logs import configure_logging
    from hdsvault.platform import init_platform
    from hdsvault.tenants.service import add_tenant

    configure_logging("warning")
    n_conc = max(1, args.concurrency)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hdsv-bench-img-"))
        work = Path(tmp)
        database = ""
        orthanc_index: tuple[int, str, str] | None = None  # Orthanc's, on PostgreSQL too
        if args.database == "postgresql":
            from support.orthanc import postgresql_index_plugin
            from support.pgcluster import SUPERUSER, PostgresCluster
            from support.pgcluster import missing_requirements as pg_missing

            if pg := pg_missing() or (
                None if postgresql_index_plugin() else "apt-get install orthanc-postgresql"
            ):
                print(f"imaging bench skipped: {pg}")
                return 0
            cluster = stack.enter_context(PostgresCluster(durable=True, name="bench-imaging"))
            database = f'[database]\nurl = "{cluster.create_database("bench")}"\n'
            cluster.create_database("orthanc")
            assert cluster.port is not None
            orthanc_index = (cluster.port, SUPERUSER, "orthanc")
        sizes = [(128, args.instances), (512, args.large_instances)]
        samples = [
            make_sample(work, e, n, args.per_study, n_conc, args.store_rounds)
            for e, n in sizes
            if n > 0
        ]

        http_port, dport = free_ports(2)
        config = work / "hdsvault.toml"
        config.write_text(
            f'data_dir = "{work / "hdsvault"}"\n' + database + '[logging]\nlevel = "warning"\n'
            f"[dicom]\nenabled = true\nport = {dport}\n"
            + (f"workers = {args.dicom_workers}\n" if args.dicom_workers else "")
            + f'[[dicom.peers]]\nae_title = "BENCH"\ntenant = "{TENANT}"\n'
            # One client retrieving instance by instance as fast as it can: over the default
            # per-address and per-identity rates (200 and 100 requests/s), as a viewer's
            # gateway would be; the limits are still checked on every request.
            + "[perimeter.per_address]\nrate = 100000\nburst = 100000\n"
            + "[perimeter.per_identity]\nrate = 100000\nburst = 100000\n"
        )
        settings = load_settings(config)
        init_platform(settings)
        platform = Platform.open(settings)
        add_tenant(platform, TENANT, "Bench", by="bench")
        token = create_token(
            platform.engine, tenant=TENANT, role=Role.RADIOLOGY, ttl=timedelta(days=1), by="bench"
        ).token
        auth = {"Authorization": f"Bearer {token}"}
        # hdsvault runs as it is deployed, `hdsvault serve` in its own process (HTTP and DIMSE),
        # like Orthanc: the bench's HTTP clients never share its interpreter.
        server = serve(config, http_port, dport, args.http_workers)
        dhost = "127.0.0.1"
        hv_base = f"http://127.0.0.1:{http_port}/dicomweb/{TENANT}"

        try:
            # (operation, sample, hdsvault s, Orthanc s, flush ms, CPU ms per instance: hdsvault,
            # Orthanc; None where the row has no such peer)
            rows: list[tuple[str, Sample, float, float, float, float | None, float]] = []
            probe = work / "hdsvault" / "flush-probe"  # the disk both peers write to
            load = os.getloadavg()
            with Orthanc(work / "orthanc", postgresql=orthanc_index) as orthanc:
                o_base = f"{orthanc.url}/dicom-web"
                assert orthanc.proc is not None
                pids = (server.pid, orthanc.proc.pid)

                def per_instance(spent: Spent, n: int) -> tuple[float, float]:
                    return 1000 * spent.seconds["hv"] / n, 1000 * spent.seconds["or"] / n

                for sample in samples:
                    flush = flush_ms(probe)
                    t_hv = t_or = 0.0
                    spent = Spent(*pids)
                    for dirs in sample.rounds:  # alternating, as WADO-RS below
                        t_hv += spent.timed(
                            "hv",
                            lambda d=dirs: storescu(dhost, dport, settings.dicom.ae_title, d),
                        )
                        # the ImagingStudy derivation is part of hdsvault's ingest cost
                        spent.timed("hv", lambda: wait_for_fhir_sync(platform))
                        t_or += spent.timed(
                            "or",
                            lambda d=dirs: storescu("127.0.0.1", orthanc.dicom_port, "ORTHANC", d),
                        )
                    cpu = per_instance(spent, sample.n)
                    rows.append(("C-STORE ingest (storescu)", sample, t_hv, t_or, flush, *cpu))
                    flush = flush_ms(probe)
                    noop, noop_port = noop_scp(settings.dicom.max_pdu)
                    t_noop = sum(
                        storescu("127.0.0.1", noop_port, "NOOP", dirs) for dirs in sample.rounds
                    )
                    noop.shutdown()
                    no_op = "C-STORE, no-op pynetdicom SCP as hdsvault"
                    rows.append((no_op, sample, t_noop, t_or, flush, None, cpu[1]))
                    files, batch = sample.stow_files, args.stow_batch
                    flush = flush_ms(probe)
                    spent = Spent(*pids)
                    t_hv = t_or = 0.0
                    per_round = batch * n_conc  # one batch per client, then the other peer
                    for start in range(0, len(files), per_round):
                        part = files[start : start + per_round]
                        t_hv += spent.timed(
                            "hv",
                            lambda p=part: stow(f"{hv_base}/studies", p, batch, auth, n_conc),
                        )
                        spent.timed("hv", lambda: wait_for_fhir_sync(platform))
                        t_or += spent.timed(
                            "or", lambda p=part: stow(f"{o_base}/studies", p, batch, {}, n_conc)
                        )
                    cpu = per_instance(spent, sample.n)
                    what = f"STOW-RS ingest (batches of {batch})"
                    rows.append((what, sample, t_hv, t_or, flush, *cpu))
                    # Rounds alternate between the peers: a drift of the machine's speed
                    # during the measure (a shared VM) weighs on both alike.
                    retrievals = [
                        (level, client, fetch, paths, per_path)
                        for level, paths, per_path in (
                            ("per study", sample.studies, args.per_study),
                            ("per instance", sample.instances, 1),
                        )
                        for client, fetch in (("httpx", wado), ("minimal client", wado_minimal))
                    ]
                    for level, client, fetch, paths, per_path in retrievals:
                        flush = flush_ms(probe)
                        t_hv = t_or = 0.0
                        spent = Spent(*pids)
                        for _ in range(args.wado_rounds):
                            dt, b_hv = spent.timed(
                                "hv", lambda f=fetch, p=paths: f(hv_base, p, auth, n_conc, 1)
                            )
                            t_hv += dt / args.wado_rounds
                            dt, b_or = spent.timed(
                                "or", lambda f=fetch, p=paths: f(o_base, p, {}, n_conc, 1)
                            )
                            t_or += dt / args.wado_rounds
                        # each round also fetches one first resource per client, untimed
                        fetched = args.wado_rounds * (sample.n + n_conc * per_path)
                        cpu = per_instance(spent, fetched)
                        what = f"WADO-RS retrieve ({level}), {client}"
                        rows.append((what, sample, t_hv, t_or, flush, *cpu))
                        check_identical(f"hdsvault ({client})", b_hv, sample.sent)
                        check_identical(f"Orthanc ({client})", b_or, sample.sent)
                    load = tuple(max(a, b) for a, b in zip(load, os.getloadavg(), strict=True))
        finally:  # a failed run must not leave the server behind
            server.terminate()
            server.wait(timeout=60)
            platform.close()

    table = [
        (
            what,
            f"{sample.label} x {sample.n}",
            f"{sample.n / t_hv:.0f}",
            f"{sample.mb / t_hv:.1f}",
            f"{sample.n / t_or:.0f}",
            f"{sample.mb / t_or:.1f}",
            f"{t_or / t_hv:.2f}",
            ("-" if cpu_hv is None else f"{cpu_hv:.2f}") + f" / {cpu_or:.2f}",
            f"{flush:.2f}",
        )
        for what, sample, t_hv, t_or, flush, cpu_hv, cpu_or in rows
    ]
    print_table(
        f"Imaging: hdsvault and Orthanc on the same files, concurrency {n_conc} for both",
        [
            "operation",
            "instances",
            "hdsvault inst/s",
            "hdsvault MB/s",
            "Orthanc inst/s",
            "Orthanc MB/s",
            "hdsvault/Orthanc",
            "server CPU ms/inst hdsvault / Orthanc",
            "disk flush ms",
        ],
        table,
        caption="hdsvault: AES-GCM per instance, sealed metadata, blind-index tokens, journal; "
        + (
            "PostgreSQL (a durable cluster: fsync, synchronous commits)"
            if args.database == "postgresql"
            else "SQLite (WAL, flushed before each commit returns)"
        )
        + " + filesystem blobs (instances <= 64 KiB in the index transaction), every ack "
        "after fsync. "
        + (
            "Orthanc: its PostgreSQL index plugin on the same cluster (another database, "
            f"{INDEX_CONNECTIONS} connections), storage on files fsynced, "
            if args.database == "postgresql"
            else "Orthanc: defaults (SQLite WAL synchronous=NORMAL, storage fsync on), "
        )
        + "TCP_NODELAY=1. Pixel data checked identical after WADO-RS. Ratio > 1: hdsvault "
        "faster. Server CPU: user + system time of each peer's processes (hdsvault's "
        "workers included; its ImagingStudy derivation counted with its ingest) over the "
        "row's timed phases, per instance (WADO-RS: per instance sent). "
        "hdsvault's perimeter rate limits raised for the per-instance rows (still checked). "
        "Disk flush: median file + directory fsync just before the row. "
        f"Load average (max over the run, 1/5/15 min): "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
