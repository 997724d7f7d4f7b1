"""Verification of a repository: metadata-only, or reading (a sample of) every byte.

Why a structured report: "check failed" is useless to an operator at 3 a.m. and to an auditor.
Each :class:`Problem` names the object (``data/ab/<pack>``, ``snapshots/<id>``), what is wrong
with it, the chunks it breaks, and — by walking every snapshot's trees — exactly which files
of which snapshots are affected.

Two depths (as restic's ``check`` and ``check --read-data``):

* metadata (``read_data=False``): config, index files, every manifest (name, encryption,
  signature, chain, rollback against the caller's last seen ``seq``), every tree blob, every
  referenced chunk indexed, every indexed or listed pack present with a plausible size;
* read-data (``True``, or a fraction for a random sample of packs): additionally hashes every
  pack against its name, opens its header and every blob, and checks each blob's chunk ID.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hdsvault.backup.errors import CorruptObjectError, ObjectMissingError
from hdsvault.backup.index import Index, iter_pack_ids, load_index
from hdsvault.backup.manifest import (
    FORGET,
    Manifest,
    SignatureError,
    key_fingerprint,
    merkle_root,
    open_manifest,
)
from hdsvault.backup.pack import PackEntry, pack_name, parse_pack_header
from hdsvault.backup.store import BlobStore, ProgressFn
from hdsvault.backup.tree import DIR, FILE, Node, decode_tree

__all__ = ["Affected", "Problem", "ProblemKind", "VerifyReport", "verify"]


class ProblemKind(StrEnum):
    CONFIG_CHANGED = "config-changed"
    INDEX_UNREADABLE = "index-unreadable"
    INDEX_MISMATCH = "index-mismatch"
    PACK_MISSING = "pack-missing"
    PACK_TRUNCATED = "pack-truncated"
    PACK_CORRUPT = "pack-corrupt"
    PACK_UNINDEXED = "pack-unindexed"
    CHUNK_NOT_INDEXED = "chunk-not-indexed"
    TREE_UNREADABLE = "tree-unreadable"
    MERKLE_MISMATCH = "merkle-mismatch"
    MANIFEST_ALTERED = "manifest-altered"
    MANIFEST_SIGNATURE = "manifest-signature-invalid"
    MANIFEST_REPLAYED = "manifest-replayed"
    SNAPSHOT_MISSING = "snapshot-missing"
    CHAIN_BROKEN = "chain-broken"
    CHAIN_FORK = "chain-fork"
    ROLLBACK = "rollback"


WARNINGS = {ProblemKind.PACK_UNINDEXED}


@dataclass(frozen=True, order=True)
class Affected:
    """One file (or directory, for a tree blob) of one snapshot that a problem breaks."""

    snapshot: str
    path: str


@dataclass
class Problem:
    kind: ProblemKind
    subject: str
    """The object at fault: ``data/ab/<id>``, ``snapshots/<id>``, ``index/<id>``, ``config``."""
    detail: str
    chunks: list[str] = field(default_factory=list)
    affected: list[Affected] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return self.kind not in WARNINGS

    @property
    def snapshots(self) -> list[str]:
        return sorted({a.snapshot for a in self.affected})

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.subject}: {self.detail}"
        if self.affected:
            shown = ", ".join(f"{a.snapshot[:12]}:{a.path}" for a in self.affected[:5])
            more = f" (+{len(self.affected) - 5} more)" if len(self.affected) > 5 else ""
            text += f"; affects {shown}{more}"
        return text


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    snapshots_checked: int = 0
    packs_checked: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    latest_seq: int = 0
    read_data: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    def of_kind(self, kind: ProblemKind) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def affected_snapshots(self) -> set[str]:
        return {a.snapshot for p in self.problems for a in p.affected}

    @property
    def affected_files(self) -> set[Affected]:
        return {a for p in self.problems for a in p.affected}

    def summary(self) -> str:
        head = (
            f"{'OK' if self.ok else 'FAILED'}: {self.snapshots_checked} snapshots, "
            f"{self.packs_checked} packs ({self.packs_read} read, {self.bytes_read} bytes), "
            f"latest seq {self.latest_seq}, {len(self.errors)} error(s)"
        )
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


# --------------------------------------------------------------------------- manifests


def _check_manifests(
    store: BlobStore,
    trusted: dict[str, Ed25519PublicKey],
    last_seen_seq: int | None,
    report: VerifyReport,
) -> dict[str, Manifest]:
    """Open every ``snapshots/`` object and check the chain (format §8.4)."""
    backend = store.backend
    raw: dict[str, bytes] = {}
    for name in backend.list("snapshots"):
        raw[name.rsplit("/", 1)[-1]] = backend.get(name)
    hashes = {sid: hashlib.sha256(data).hexdigest() for sid, data in raw.items()}
    well_named = {digest for sid, digest in hashes.items() if digest == sid}
    valid: dict[str, Manifest] = {}
    for sid, data in raw.items():
        subject = f"snapshots/{sid}"
        actual = hashes[sid]
        if actual != sid:
            original = actual if actual in well_named else None
            try:  # a renamed copy of a genuine manifest still opens and verifies
                m = open_manifest(actual, data, store.keys.manifest, trusted)
            except CorruptObjectError:
                report.problems.append(
                    Problem(ProblemKind.MANIFEST_ALTERED, subject, "content does not match name")
                )
                continue
            where = f"a copy of snapshots/{original}" if original else "renamed"
            report.problems.append(
                Problem(
                    ProblemKind.MANIFEST_REPLAYED,
                    subject,
                    f"genuine manifest of seq {m.seq} ({m.time}) stored under another name "
                    f"({where}): replayed",
                )
            )
            continue
        try:
            m = open_manifest(sid, data, store.keys.manifest, trusted)
        except SignatureError as exc:
            report.problems.append(Problem(ProblemKind.MANIFEST_SIGNATURE, subject, str(exc)))
            continue
        except CorruptObjectError as exc:
            report.problems.append(Problem(ProblemKind.MANIFEST_ALTERED, subject, str(exc)))
            continue
        if m.repository != store.config.id:
            report.problems.append(
                Problem(ProblemKind.MANIFEST_REPLAYED, subject, "manifest of another repository")
            )
            continue
        if m.config != store.config_hash:
            report.problems.append(
                Problem(ProblemKind.CONFIG_CHANGED, "config", f"differs from {subject}'s record")
            )
        valid[sid] = m

    # The chain: seq -> ids from live objects and from forget records.
    ids_by_seq: dict[int, set[str]] = defaultdict(set)
    for sid, m in valid.items():
        ids_by_seq[m.seq].add(sid)
        if m.kind == FORGET:
            for r in m.removed:
                ids_by_seq[int(r["seq"])].add(str(r["id"]))
    top = max(ids_by_seq, default=0)
    report.latest_seq = top
    for seq in range(1, top + 1):
        ids = ids_by_seq.get(seq, set())
        if len(ids) > 1:
            names = ", ".join(sorted(f"snapshots/{i}" for i in ids))
            report.problems.append(
                Problem(ProblemKind.CHAIN_FORK, names, f"{len(ids)} manifests claim seq {seq}")
            )
        elif not ids:
            successor = next((s for s, m in valid.items() if m.seq == seq + 1), None)
            report.problems.append(
                Problem(
                    ProblemKind.SNAPSHOT_MISSING,
                    f"snapshots/{successor.__str__() if successor else '?'}",
                    f"the manifest of seq {seq} is missing (deleted without a forget record)",
                )
            )
    for sid, m in valid.items():
        expected = ids_by_seq.get(m.seq - 1, set()) if m.seq > 1 else {None}
        if m.parent not in expected and (m.seq == 1 or expected):
            report.problems.append(
                Problem(
                    ProblemKind.CHAIN_BROKEN,
                    f"snapshots/{sid}",
                    f"seq {m.seq} names parent {m.parent}, which is not the manifest of "
                    f"seq {m.seq - 1}",
                )
            )
    if last_seen_seq is not None and top < last_seen_seq:
        report.problems.append(
            Problem(
                ProblemKind.ROLLBACK,
                "snapshots/",
                f"newest manifest has seq {top}, but seq {last_seen_seq} was seen before: "
                "newer snapshots were deleted or the repository was rolled back",
            )
        )
    return valid


# --------------------------------------------------------------------------- packs


@dataclass
class _PackCheck:
    problem: Problem | None
    bad_chunks: list[bytes]
    size: int


def _read_pack(store: BlobStore, pack_id: bytes, indexed: list[PackEntry] | None) -> _PackCheck:
    """Hash, open and check every blob of one pack."""
    name = pack_name(pack_id)
    try:
        data = store.backend.get(name)
    except ObjectMissingError:
        return _PackCheck(None, [], 0)  # reported by the metadata pass
    details: list[str] = []
    if hashlib.sha256(data).digest() != pack_id:
        details.append("SHA-256 of the pack does not match its name")
    bad: list[bytes] = []
    try:
        entries = parse_pack_header(data, len(data), store.keys.header, name)
    except CorruptObjectError as exc:
        details.append(str(exc).removeprefix(f"{name}: "))
        bad = [e.chunk_id for e in indexed or []]
        details.append(f"all {len(bad)} indexed blobs of this pack are unreadable")
        problem = Problem(ProblemKind.PACK_CORRUPT, name, "; ".join(details))
        return _PackCheck(problem, bad, len(data))
    view = memoryview(data)
    codec = store.codec
    for e in entries:
        try:
            blob = view[e.offset : e.offset + e.length]
            codec.decode(e.chunk_id, blob, e.compression, e.raw_length)
        except CorruptObjectError:
            bad.append(e.chunk_id)
    if bad:
        details.append(f"{len(bad)} of {len(entries)} blobs fail authentication or ID check")
    if details:
        return _PackCheck(
            Problem(ProblemKind.PACK_CORRUPT, name, "; ".join(details)), bad, len(data)
        )
    if indexed is not None and sorted(indexed) != sorted(entries):
        return _PackCheck(
            Problem(ProblemKind.INDEX_MISMATCH, name, "index entries differ from the pack header"),
            [],
            len(data),
        )
    return _PackCheck(None, [], len(data))


# --------------------------------------------------------------------------- main


def verify(
    store: BlobStore,
    *,
    trusted_keys: Sequence[Ed25519PublicKey],
    read_data: bool | float = False,
    last_seen_seq: int | None = None,
    progress: ProgressFn | None = None,
    workers: int = 2,
    rng: random.Random | None = None,
) -> VerifyReport:
    """Check the repository; never raises for a problem found, reports it."""
    fraction = 1.0 if read_data is True else float(read_data or 0.0)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("read_data must be a bool or a fraction in [0, 1]")
    report = VerifyReport(read_data=fraction)
    trusted = {key_fingerprint(k): k for k in trusted_keys}
    backend = store.backend

    # Index files are reloaded: verify checks what is stored, not this process's cache.
    index, index_problems = load_index(backend, store.keys.index)
    for name, detail in index_problems:
        report.problems.append(
            Problem(ProblemKind.INDEX_UNREADABLE, name, f"{detail}; run rebuild_index")
        )
    store.index = index

    manifests = _check_manifests(store, trusted, last_seen_seq, report)
    snapshots = {sid: m for sid, m in manifests.items() if m.kind != FORGET}
    report.snapshots_checked = len(snapshots)

    # Packs present vs indexed vs listed by manifests.
    stored = {pid: pack_name(pid) for pid in iter_pack_ids(backend.list("data"))}
    bad_chunks: dict[bytes, Problem] = {}
    for pack_id, entries in index.packs.items():
        name = pack_name(pack_id)
        if pack_id not in stored:
            p = Problem(
                ProblemKind.PACK_MISSING, name, f"indexed pack is missing ({len(entries)} blobs)"
            )
            p.chunks = [e.chunk_id.hex() for e in entries]
            report.problems.append(p)
            for e in entries:
                bad_chunks[e.chunk_id] = p
            continue
        end = max((e.offset + e.length for e in entries), default=0)
        if backend.size(name) < end + 4:
            p = Problem(ProblemKind.PACK_TRUNCATED, name, "pack is shorter than its indexed blobs")
            p.chunks = [e.chunk_id.hex() for e in entries]
            report.problems.append(p)
            for e in entries:
                bad_chunks[e.chunk_id] = p
    for pack_id in stored:
        if pack_id not in index.packs:
            report.problems.append(
                Problem(
                    ProblemKind.PACK_UNINDEXED,
                    pack_name(pack_id),
                    "pack not in any index (interrupted backup?); prune removes it if unused, "
                    "rebuild_index indexes it",
                )
            )
    listed_missing: dict[str, Problem] = {}
    for sid, m in snapshots.items():
        for hexid in m.packs:
            if bytes.fromhex(hexid) not in stored and bytes.fromhex(hexid) not in index.packs:
                lost = listed_missing.get(hexid)
                if lost is None:
                    lost = Problem(
                        ProblemKind.PACK_MISSING,
                        pack_name(hexid),
                        "pack listed by a manifest is missing",
                    )
                    listed_missing[hexid] = lost
                    report.problems.append(lost)
                lost.affected.append(Affected(sid, "/"))
    report.packs_checked = len(set(stored) | set(index.packs))

    # Read data: every pack (or a random sample), in parallel.
    if fraction > 0:
        candidates = sorted(stored)
        count = len(candidates) if fraction >= 1 else math.ceil(fraction * len(candidates))
        chosen = (rng or random.SystemRandom()).sample(candidates, count)
        total = sum(backend.size(stored[p]) for p in chosen)
        done = 0
        lock = threading.Lock()
        with ThreadPoolExecutor(workers, thread_name_prefix="hdsvault-verify") as pool:
            futures = [pool.submit(_read_pack, store, p, index.packs.get(p)) for p in chosen]
            for fut in futures:
                check = fut.result()
                with lock:
                    done += check.size
                    report.packs_read += 1
                    report.bytes_read += check.size
                if progress is not None:
                    progress(done, total)
                if check.problem is not None:
                    check.problem.chunks = [c.hex() for c in check.bad_chunks]
                    report.problems.append(check.problem)
                    for c in check.bad_chunks:
                        bad_chunks[c] = check.problem

    _walk_snapshots(store, snapshots, bad_chunks, report)
    return report


def _walk_snapshots(
    store: BlobStore,
    snapshots: dict[str, Manifest],
    bad_chunks: dict[bytes, Problem],
    report: VerifyReport,
) -> None:
    """Walk every snapshot's trees: attribute bad chunks to files, find unindexed chunks."""
    index = store.index
    tree_cache: dict[bytes, list[Node] | CorruptObjectError] = {}
    unindexed: dict[bytes, Problem] = {}
    for sid, m in sorted(snapshots.items(), key=lambda kv: kv[1].seq):
        ids: set[bytes] = set()
        stack: list[tuple[str, bytes]] = [("", bytes.fromhex(m.tree))]
        tree_failed = False
        while stack:
            path, tree_id = stack.pop()
            ids.add(tree_id)
            cached = tree_cache.get(tree_id)
            if cached is None:
                try:
                    cached = decode_tree(store.load(tree_id), f"tree {tree_id.hex()}")
                except (CorruptObjectError, ObjectMissingError) as exc:
                    cached = CorruptObjectError(str(exc))
                tree_cache[tree_id] = cached
            if isinstance(cached, CorruptObjectError):
                tree_failed = True
                problem = bad_chunks.get(tree_id) or _unindexed(tree_id, index, unindexed, report)
                if problem is None:
                    loc = index.get(tree_id)
                    subject = pack_name(loc.pack_id) if loc else f"tree {tree_id.hex()}"
                    problem = Problem(ProblemKind.TREE_UNREADABLE, subject, str(cached))
                    problem.chunks = [tree_id.hex()]
                    report.problems.append(problem)
                    bad_chunks[tree_id] = problem
                problem.affected.append(Affected(sid, (path or "/") + " (directory listing)"))
                continue
            for node in cached:
                child = f"{path}/{node.display_name}"
                if node.type == DIR and node.subtree is not None:
                    stack.append((child, node.subtree))
                elif node.type == FILE:
                    hit: set[int] = set()
                    for cid in node.chunks:
                        ids.add(cid)
                        problem = bad_chunks.get(cid) or _unindexed(cid, index, unindexed, report)
                        if problem is not None and id(problem) not in hit:
                            hit.add(id(problem))
                            problem.affected.append(Affected(sid, child))
        if not tree_failed and (
            len(ids) != m.chunk_count or merkle_root(ids).hex() != m.merkle_root
        ):
            report.problems.append(
                Problem(
                    ProblemKind.MERKLE_MISMATCH,
                    f"snapshots/{sid}",
                    "the chunks reachable from the tree do not match the manifest's Merkle root",
                )
            )


def _unindexed(
    cid: bytes, index: Index, unindexed: dict[bytes, Problem], report: VerifyReport
) -> Problem | None:
    if cid in index:
        return None
    p = unindexed.get(cid)
    if p is None:
        p = Problem(
            ProblemKind.CHUNK_NOT_INDEXED,
            f"chunk {cid.hex()}",
            "referenced chunk is in no index (lost index or pack? run rebuild_index)",
        )
        p.chunks = [cid.hex()]
        unindexed[cid] = p
        report.problems.append(p)
    return p
