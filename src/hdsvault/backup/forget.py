"""Retention (which snapshots to keep) and pruning (which packs are no longer needed).

Why forget and prune are separate: forgetting only removes manifests (cheap, signed, recorded
in a forget record so the chain stays checkable); pruning reads every remaining snapshot's
trees to find packs no snapshot needs. Why prune never repacks: packs are listed in signed
manifests and may sit on immutable storage; rewriting them would break both. And a pack (or a
manifest) the backend reports as locked is never deleted, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hdsvault.backup.errors import BackupError, CorruptObjectError, ObjectMissingError
from hdsvault.backup.index import encode_index_file, iter_pack_ids
from hdsvault.backup.pack import PackEntry, pack_name, read_pack_header
from hdsvault.backup.snapshot import Snapshot
from hdsvault.backup.store import BlobStore
from hdsvault.backup.tree import DIR, FILE, decode_tree

__all__ = [
    "ForgetPlan",
    "PruneResult",
    "RetentionPolicy",
    "plan_forget",
    "prune",
    "reachable_chunks",
]


@dataclass(frozen=True)
class RetentionPolicy:
    """How many snapshots to keep per period (0 = rule unused). UTC calendar periods."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def rules(self) -> list[tuple[str, int, Callable[[datetime], object]]]:
        return [
            ("last", self.keep_last, lambda t: t),
            ("daily", self.keep_daily, lambda t: t.date()),
            ("weekly", self.keep_weekly, lambda t: t.isocalendar()[:2]),
            ("monthly", self.keep_monthly, lambda t: (t.year, t.month)),
            ("yearly", self.keep_yearly, lambda t: t.year),
        ]

    @property
    def empty(self) -> bool:
        return not any(n for _, n, _ in self.rules())


@dataclass
class ForgetPlan:
    keep: list[tuple[Snapshot, list[str]]] = field(default_factory=list)
    remove: list[Snapshot] = field(default_factory=list)


def plan_forget(snapshots: Sequence[Snapshot], policy: RetentionPolicy) -> ForgetPlan:
    """restic's semantics: per rule, the newest snapshot of each of the N newest periods."""
    if policy.empty:
        raise BackupError("refusing to forget with an empty policy (it would remove everything)")
    ordered = sorted(snapshots, key=lambda s: (s.datetime, s.seq), reverse=True)
    state: dict[str, tuple[int, object]] = {}
    plan = ForgetPlan()
    for snap in ordered:
        when = snap.datetime
        reasons: list[str] = []
        for rule, limit, bucket in policy.rules():
            if not limit:
                continue
            kept, last = state.get(rule, (0, None))
            key = bucket(when) if rule != "last" else snap.id
            if kept < limit and key != last:
                reasons.append(rule)
                state[rule] = (kept + 1, key)
        if reasons:
            plan.keep.append((snap, reasons))
        else:
            plan.remove.append(snap)
    return plan


def reachable_chunks(store: BlobStore, tree_id: bytes) -> set[bytes]:
    """Every chunk ID reachable from a root tree; raises if a tree blob cannot be read."""
    ids: set[bytes] = set()
    stack = [tree_id]
    seen: set[bytes] = set()
    while stack:
        tid = stack.pop()
        ids.add(tid)
        if tid in seen:
            continue
        seen.add(tid)
        for node in decode_tree(store.load(tid), f"tree {tid.hex()}"):
            if node.type == DIR and node.subtree is not None:
                stack.append(node.subtree)
            elif node.type == FILE:
                ids.update(node.chunks)
    return ids


@dataclass
class PruneResult:
    packs_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    packs_locked: list[str] = field(default_factory=list)
    """Unreferenced packs kept because the backend reports them immutable."""
    packs_partly_used: int = 0
    index_written: str | None = None
    index_deleted: list[str] = field(default_factory=list)


def prune(store: BlobStore, snapshots: Sequence[Snapshot], *, dry_run: bool = False) -> PruneResult:
    """Delete packs no live snapshot references; rewrite the index first (format §11)."""
    backend = store.backend
    referenced: set[bytes] = set()
    for snap in snapshots:
        try:
            referenced |= reachable_chunks(store, bytes.fromhex(snap.manifest.tree))
        except (CorruptObjectError, ObjectMissingError) as exc:
            raise BackupError(
                f"prune refused: snapshot {snap.id} cannot be walked ({exc}); "
                "run verify and rebuild_index first"
            ) from exc
    index = store.index
    stored = set(iter_pack_ids(backend.list("data")))
    keep: dict[bytes, list[PackEntry]] = {}
    unused: list[bytes] = []
    for pack_id in sorted(stored):
        entries = index.packs.get(pack_id)
        if entries is None:  # unindexed (interrupted backup): judge by its header
            try:
                entries = read_pack_header(backend, pack_name(pack_id), store.keys.header)
            except CorruptObjectError:
                continue  # unreadable: keep it, verify reports it
        used = sum(1 for e in entries if e.chunk_id in referenced)
        if used:
            keep[pack_id] = entries
        else:
            unused.append(pack_id)
    partly = sum(1 for es in keep.values() if any(e.chunk_id not in referenced for e in es))
    result = PruneResult(packs_partly_used=partly)
    deletable: list[bytes] = []
    for pack_id in unused:
        name = pack_name(pack_id)
        if backend.is_locked(name):
            result.packs_locked.append(name)
            keep[pack_id] = index.packs.get(pack_id) or []
        else:
            deletable.append(pack_id)
    if dry_run or not deletable:
        result.packs_deleted = [pack_name(p) for p in deletable] if dry_run else []
        return result
    # 1. the new index, superseding every current index file (format §7)
    old_files = list(index.files)
    listed = {p: e for p, e in keep.items() if e}
    name, data = encode_index_file(listed, old_files, store.keys.index)
    backend.put(name, data)
    result.index_written = name
    for old in old_files:
        if not backend.is_locked(old):
            backend.delete(old)
            result.index_deleted.append(old)
    index.files = [name, *(f for f in old_files if f not in result.index_deleted)]
    # 2. then the packs
    for pack_id in deletable:
        pname = pack_name(pack_id)
        size = backend.size(pname)
        backend.delete(pname)
        index.remove_pack(pack_id)
        result.packs_deleted.append(pname)
        result.bytes_freed += size
    return result
