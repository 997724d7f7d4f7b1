"""hdsvault backups side by side with restic and borg, on the same corpus, in one run.

Run: ``uv run python bench/backup/run.py [--size-mib 1024] [--quick] [--workdir DIR]``
(``--quick`` = 200 MiB). Needs the Debian packages ``restic`` and ``borgbackup``.

Corpus (deterministic, seeded), built under the work directory:

* ``fhir/``    30 %: the Synthea FHIR R4 bundles of ``shared/data/synthea-r4`` decompressed,
  repeated with fresh UUIDs per copy (similar structure, different patients: compressible,
  little cross-copy dedup);
* ``imaging/`` 50 %: DICOM-like files (preamble, ``DICM``, a text header, 16-bit "pixels"
  whose high byte is smooth and low byte noise: about 2:1 compressible), 0.5 to 24 MiB;
* ``archives/`` 15 %: incompressible files (already compressed or encrypted media), 1-8 MiB;
* ``notes/``    5 %: many small text files (1-16 KiB): per-file metadata costs.

Phases, each timed as wall-clock seconds for each tool on the same data (page cache warm,
``sync`` before each phase; caches of restic/borg in the work directory):

1. initial backup of the corpus;
2. incremental backup after a 1 % change (in-place overwrites in images, appends to FHIR
   bundles, new notes and a new image), so change detection and dedup both matter;
3. restore of the latest snapshot to an empty directory (checked against the corpus digest);
4. full verification reading all data: ``verify(read_data=True)``, ``restic check
   --read-data``, ``borg check --verify-data``;
5. repository size on disk after both backups (``du``-style sum of file sizes).

Tool settings: each tool's defaults for encryption and compression — hdsvault zstd level 3,
1 MiB average chunks, 16 MiB packs; restic 0.14 repository v2 (zstd "auto"); borg 1.2
``repokey-blake2`` with its default lz4. restic uses both cores; borg 1.x is single-threaded;
hdsvault uses a thread pool of ``os.cpu_count()`` workers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.backup import BackupRepository, LocalRepository
from hdsvault.crypto.kek import FileKEK

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _table import print_table

MiB = 1024 * 1024
SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-r4"
PASSWORD = "bench-password-not-secret"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --------------------------------------------------------------------------- corpus


def _synthea_bundles() -> list[bytes]:
    base = SYNTHEA if SYNTHEA.is_dir() else Path("/work/shared/data/synthea-r4")
    return [gzip.decompress(p.read_bytes()) for p in sorted(base.glob("*.json.gz"))]


def _imaging(rng: random.Random, size: int) -> bytes:
    """A DICOM-like file: preamble, magic, text header, 16-bit pixels (smooth high byte)."""
    header = (
        f"(0010,0010) PN Patient^{rng.randrange(10**8)}\n(0008,0060) CS CT\n"
        f"(0020,000D) UI 1.2.826.0.1.{rng.randrange(10**12)}\n"
    ).encode()
    pixels = bytearray(size)
    pixels[0::2] = rng.randbytes(size // 2 + size % 2)  # low byte: noise
    ramp = bytes((i // 64) % 16 for i in range(4096))  # high byte: smooth anatomy-ish
    high = (ramp * (size // 2 // len(ramp) + 1))[: size // 2]
    pixels[1::2] = high
    return b"\0" * 128 + b"DICM" + header + bytes(pixels[: size - 132 - len(header)])


def build_corpus(root: Path, total: int, seed: int = 42) -> None:
    rng = random.Random(seed)
    bundles = _synthea_bundles()
    fhir, imaging, archives, notes = (root / d for d in ("fhir", "imaging", "archives", "notes"))
    for d in (fhir, imaging, archives, notes):
        d.mkdir(parents=True)
    budget = int(total * 0.30)
    copy = 0
    while budget > 0:
        for i, bundle in enumerate(bundles):
            if budget <= 0:
                break
            data = (
                bundle
                if copy == 0
                else _UUID.sub(lambda _m: str(uuid.UUID(int=rng.getrandbits(128))).encode(), bundle)
            )
            (fhir / f"copy{copy:02d}-bundle{i:03d}.json").write_bytes(data)
            budget -= len(data)
        copy += 1
    budget, n = int(total * 0.50), 0
    while budget > 0:
        size = min(budget, rng.choice([512 * 1024] * 6 + [4 * MiB, 12 * MiB, 24 * MiB]))
        series = imaging / f"series{n // 20:03d}"
        series.mkdir(exist_ok=True)
        (series / f"img{n:05d}.dcm").write_bytes(_imaging(rng, max(size, 4096)))
        budget -= size
        n += 1
    budget, n = int(total * 0.15), 0
    while budget > 0:
        size = min(budget, rng.randrange(1 * MiB, 8 * MiB))
        (archives / f"scan{n:04d}.pdf").write_bytes(rng.randbytes(max(size, 1)))
        budget -= size
        n += 1
    budget, n = int(total * 0.05), 0
    words = b" ".join(bundles[0][:4000].split()[:400])
    while budget > 0:
        size = rng.randrange(1024, 16 * 1024)
        sub = notes / f"d{n // 500:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"note{n:06d}.txt").write_bytes((words * (size // len(words) + 1))[:size])
        budget -= size
        n += 1


def change_one_percent(root: Path, total: int, seed: int = 7) -> int:
    """Modify about 1 % of the corpus bytes; returns the bytes changed or added."""
    rng = random.Random(seed)
    budget = total // 100
    changed = 0
    images = sorted(root.glob("imaging/*/*.dcm"))
    for path in rng.sample(images, min(len(images), 8)):  # in-place overwrites
        size = path.stat().st_size
        n = min(128 * 1024, size // 4, max(budget // 3 // 8, 4096))
        with open(path, "r+b") as f:
            f.seek(rng.randrange(0, size - n))
            f.write(rng.randbytes(n))
        changed += n
    bundles = sorted(root.glob("fhir/*.json"))
    for path in rng.sample(bundles, min(len(bundles), 6)):  # appended resources
        extra = b'\n{"resourceType":"Observation","id":"' + uuid.uuid4().hex.encode() + b'"}'
        extra = extra * max(1, budget // 3 // 6 // len(extra))
        with open(path, "ab") as f:
            f.write(extra)
        changed += len(extra)
    new = root / "notes" / "new"
    new.mkdir(exist_ok=True)
    for i in range(50):
        (new / f"n{i}.txt").write_bytes(os.urandom(2048).hex().encode())
        changed += 4096
    rest = max(budget - changed, 65536)
    (root / "imaging" / "new-study.dcm").write_bytes(_imaging(rng, rest))
    return changed + rest


def tree_digest(root: Path) -> str:
    """SHA-256 over every regular file's relative path and content (restore check)."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(4 * MiB):
                    h.update(block)
    return h.hexdigest()


def du(path: Path) -> int:
    return sum(Path(d, f).stat().st_size for d, _, fs in os.walk(path) for f in fs)


# --------------------------------------------------------------------------- tools


class Tool:
    name = ""

    def __init__(self, work: Path, corpus: Path) -> None:
        self.work, self.corpus = work, corpus
        self.repo = work / f"repo-{self.name}"

    def init(self) -> None: ...
    def backup(self) -> None: ...
    def restore(self, target: Path) -> Path:  # returns the restored corpus directory
        raise NotImplementedError

    def check(self) -> None: ...


class Hdsvault(Tool):
    name = "hdsvault"

    def init(self) -> None:
        self.kek = FileKEK(os.urandom(32))
        self.signing = Ed25519PrivateKey.generate()
        BackupRepository.init(LocalRepository(self.repo), kek=self.kek, signing_key=self.signing)

    def _open(self) -> BackupRepository:
        return BackupRepository.open(
            LocalRepository(self.repo), kek=self.kek, signing_key=self.signing
        )

    def backup(self) -> None:
        self.last = self._open().backup([self.corpus])

    def restore(self, target: Path) -> Path:
        self._open().restore("latest", target)
        return target / self.corpus.name

    def check(self) -> None:
        report = self._open().verify(read_data=True)
        if not report.ok:
            raise RuntimeError(report.summary())


def _run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


class Restic(Tool):
    name = "restic"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
        }

    def init(self) -> None:
        _run(["restic", "init"], self.env())

    def backup(self) -> None:
        _run(["restic", "backup", "--quiet", str(self.corpus)], self.env())

    def restore(self, target: Path) -> Path:
        _run(["restic", "restore", "latest", "--target", str(target)], self.env())
        return target / str(self.corpus).lstrip("/")

    def check(self) -> None:
        _run(["restic", "check", "--read-data"], self.env())


class Borg(Tool):
    name = "borg"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(self.work / "borg-home"),
        }

    def init(self) -> None:
        _run(["borg", "init", "-e", "repokey-blake2", str(self.repo)], self.env())
        self.n = 0

    def backup(self) -> None:
        self.n += 1
        _run(
            ["borg", "create", f"{self.repo}::s{self.n}", self.corpus.name],
            self.env(),
            cwd=self.corpus.parent,
        )

    def restore(self, target: Path) -> Path:
        target.mkdir()
        _run(["borg", "extract", f"{self.repo}::s{self.n}"], self.env(), cwd=target)
        return target / self.corpus.name

    def check(self) -> None:
        _run(["borg", "check", "--verify-data", str(self.repo)], self.env())


def platform_snapshot(work: Path, bundles: int) -> None:
    """Time ``hdsvault backup run`` on a platform loaded with ``bundles`` Synthea patients.

    The steps of a platform backup beyond the repository write: the consistent database copy
    (SQLite online backup API), checkpoints, manifest with record counts, then the repository
    backup of the staged files; and a restore as a runnable platform.
    """
    from hdsvault.access.roles import Role
    from hdsvault.access.tokens import Principal
    from hdsvault.backup.service import BackupService, restore_as_platform
    from hdsvault.config import load_settings
    from hdsvault.platform import Platform, init_platform
    from hdsvault.records import bulk
    from hdsvault.records.model import Caller
    from hdsvault.records.store import RecordStore
    from hdsvault.tenants.service import add_tenant

    root = work / "platform"
    settings = load_settings(
        data_dir=root / "var",
        backup={"repositories": [{"name": "bench", "kind": "local", "path": str(root / "repo")}]},
    )
    init_platform(settings)
    platform = Platform.open(settings)
    try:
        add_tenant(platform, "750712184", "Bench", by="bench")
        caller = Caller(
            Principal(subject="os:bench", tenant="750712184", role=Role.SERVICE), "750712184"
        )
        base = SYNTHEA if SYNTHEA.is_dir() else Path("/work/shared/data/synthea-r4")
        files = sorted(base.glob("*.json.gz"))[:bundles]
        t0 = time.perf_counter()
        report = bulk.import_paths(RecordStore(platform), caller, files, validate_resources=False)
        loaded = time.perf_counter() - t0
        service = BackupService(platform, "os:bench")
        result = service.run("bench")
        t0 = time.perf_counter()
        restored = restore_as_platform(
            service.open("bench"),
            "latest",
            root / "restored",
            f"sqlite:///{root / 'restored' / 'hdsvault.db'}",
        )
        restore_s = time.perf_counter() - t0
        db_mib = (root / "var" / "hdsvault.db").stat().st_size / MiB
        print(
            f"platform snapshot: {report.resources} resources ({len(files)} patients, loaded in "
            f"{loaded:.1f} s), database {db_mib:.1f} MiB: consistent snapshot "
            f"{result.seconds['platform snapshot']:.2f} s + repository "
            f"{result.seconds['repository backup']:.2f} s; restore as platform {restore_s:.2f} s "
            f"(counts {'match' if restored.ok else 'DIFFER'})"
        )
    finally:
        platform.close()


def timed(fn: Callable[[], object]) -> float:
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="200 MiB corpus")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--tools", default="hdsvault,restic,borg")
    parser.add_argument(
        "--platform-bundles",
        type=int,
        default=20,
        help="Synthea patients for the platform-snapshot timing (0: skip)",
    )
    args = parser.parse_args()
    total = 200 * MiB if args.quick else args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="hdsvault-bench-", dir=args.workdir))
    corpus = work / "corpus"
    classes = {c.name: c for c in (Hdsvault, Restic, Borg)}
    tools = [classes[n](work, corpus) for n in args.tools.split(",")]
    for t in tools:
        if t.name != "hdsvault" and shutil.which(t.name) is None:
            sys.exit(f"{t.name} is not installed: apt-get install -y restic borgbackup")
    try:
        t0 = time.perf_counter()
        build_corpus(corpus, total)
        size = du(corpus)
        files = sum(len(fs) for _, _, fs in os.walk(corpus))
        built = time.perf_counter() - t0
        print(f"corpus: {size / MiB:.0f} MiB in {files} files, built in {built:.1f} s")
        results: dict[str, dict[str, float]] = {t.name: {} for t in tools}
        for t in tools:
            t.init()
            results[t.name]["backup"] = timed(t.backup)
            print(f"  {t.name}: initial backup {results[t.name]['backup']:.2f} s")
        changed = change_one_percent(corpus, size)
        print(f"changed {changed / MiB:.1f} MiB ({100 * changed / size:.2f} %)")
        digest = tree_digest(corpus)
        for t in tools:
            results[t.name]["incr. 1 %"] = timed(t.backup)
        for t in tools:
            target = work / f"restore-{t.name}"
            os.sync()
            start = time.perf_counter()
            restored = t.restore(target)
            results[t.name]["restore"] = time.perf_counter() - start
            if tree_digest(restored) != digest:
                raise RuntimeError(f"{t.name}: restored tree differs from the corpus")
            shutil.rmtree(target)
        for t in tools:
            results[t.name]["verify data"] = timed(t.check)
            results[t.name]["repo MiB"] = du(t.repo) / MiB
        phases = list(results[tools[0].name])
        names = [t.name for t in tools]
        headers = ["phase", *names]
        rows = []
        for phase in phases:
            row: list[object] = [phase, *(results[n][phase] for n in names)]
            rows.append(row)
        others = [n for n in names if n != "hdsvault"]
        if "hdsvault" in names:
            headers += [f"÷ {o}" for o in others]
            for row, phase in zip(rows, phases, strict=True):
                row += [results["hdsvault"][phase] / results[o][phase] for o in others]
        print_table(
            f"Backup, {size / MiB:.0f} MiB corpus ({files} files), seconds (lower is better)",
            headers,
            rows,
            caption=f"÷ = hdsvault / other: < 1 means hdsvault is faster or smaller. "
            f"{os.cpu_count()} cores; every restore checked byte-identical to the corpus.",
        )
        if args.platform_bundles:
            platform_snapshot(work, args.platform_bundles)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
