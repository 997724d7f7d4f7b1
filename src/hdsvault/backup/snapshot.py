"""Backup of a directory tree into a snapshot, and restore of a snapshot.

Backup walks the paths depth-first. The main thread reads and cuts files (FastCDC, GIL
released) and hands each chunk to a worker pool that computes its keyed ID, checks the index
and, for a new chunk only, compresses and seals it into a pack. Incremental backups cost little
twice over: unchanged chunks are never stored again (deduplication), and files whose size,
mtime, ctime and inode match the parent snapshot are not even read (their chunk list is
reused, as restic does).

Restore is all-or-nothing by default: it builds the tree in a hidden staging directory beside
the target and renames it into place only when every file was read back and checked; any
missing or corrupt blob aborts it with the file, chunk and pack named. With ``salvage=True``
it restores every intact file and lists the broken ones instead (they are not written).
The restored top directory gets mode 0700 (it holds health data); everything below it gets
the modes, times (and, when restoring as root, owners) recorded in the snapshot.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.backup.chunker import Chunker
from hdsvault.backup.config import parse_time, utc_now
from hdsvault.backup.errors import BackupError, CorruptObjectError, ObjectMissingError, RestoreError
from hdsvault.backup.manifest import SNAPSHOT, Manifest, merkle_root, seal_manifest
from hdsvault.backup.pack import BlobType, pack_name
from hdsvault.backup.store import BlobStore, ProgressFn
from hdsvault.backup.tree import DIR, FILE, SYMLINK, Node, decode_tree, encode_tree

__all__ = ["BrokenFile", "RestoreResult", "Snapshot", "backup", "restore"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as seen by callers: its ID and its (verified) manifest."""

    id: str
    manifest: Manifest

    @property
    def seq(self) -> int:
        return self.manifest.seq

    @property
    def time(self) -> str:
        return self.manifest.time

    @property
    def tags(self) -> list[str]:
        return self.manifest.tags

    @property
    def paths(self) -> list[str]:
        return self.manifest.paths

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.stats

    @property
    def datetime(self) -> datetime:
        return parse_time(self.manifest.time)


# --------------------------------------------------------------------------- backup


class _Backup:
    """One backup run: walks paths, feeds chunks to the pool, builds tree blobs."""

    def __init__(
        self,
        store: BlobStore,
        pool: ThreadPoolExecutor,
        workers: int,
        parent_tree: bytes | None,
        progress: ProgressFn | None,
        reread: bool,
    ) -> None:
        self.store = store
        self.pool = pool
        self.chunker = Chunker(store.config.chunker, store.keys.chunker_seed)
        self.window = threading.BoundedSemaphore(max(2, workers * 4))
        self.parent_tree = parent_tree
        self.progress = progress
        self.reread = reread
        self.total = 0
        self.done = 0
        self.ids: set[bytes] = set()
        self.stats: dict[str, Any] = {
            "files": 0,
            "dirs": 0,
            "symlinks": 0,
            "bytes": 0,
            "unchanged_files": 0,
            "skipped": [],
        }

    # -- helpers --------------------------------------------------------------------------------

    def _store_data(self, data: memoryview) -> bytes:
        try:
            return self.store.store(BlobType.DATA, data)
        finally:
            self.window.release()

    def _parent_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        if tree_id is None:
            return {}
        try:
            return {n.name: n for n in decode_tree(self.store.load(tree_id), "parent tree")}
        except (CorruptObjectError, ObjectMissingError):
            return {}  # an unreadable parent only costs re-reading the files

    def _skip(self, path: bytes, reason: str) -> None:
        self.stats["skipped"].append({"path": os.fsdecode(path), "reason": reason})

    def _unchanged(self, prev: Node | None, st: os.stat_result) -> bool:
        return (
            not self.reread
            and prev is not None
            and prev.type == FILE
            and prev.size == st.st_size
            and prev.mtime_ns == st.st_mtime_ns
            and prev.ctime_ns == st.st_ctime_ns
            and prev.inode == st.st_ino
            and all(c in self.store.index for c in prev.chunks)
        )

    def scan_total(self, paths: Sequence[bytes]) -> None:
        """Sum of regular file sizes, for the progress bar (one lstat per entry)."""
        total = 0
        for top in paths:
            st = os.lstat(top)
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                continue
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    with contextlib.suppress(OSError):
                        st = os.lstat(os.path.join(dirpath, name))
                        if stat.S_ISREG(st.st_mode):
                            total += st.st_size
        self.total = total

    # -- walk -------------------------------------------------------------------------------------

    def node(
        self, path: bytes, name: bytes, st: os.stat_result, prev: Node | None
    ) -> tuple[Node | None, list[Future[bytes]] | None]:
        """The node of one directory entry; file data is still being stored (futures)."""
        mode = st.st_mode
        node = Node(
            name=name,
            type=FILE,
            mode=stat.S_IMODE(mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
        )
        if stat.S_ISDIR(mode):
            node.type = DIR
            subtree_prev = prev.subtree if prev is not None and prev.type == DIR else None
            node.subtree = self.directory(path, subtree_prev)
            self.stats["dirs"] += 1
            return node, None
        if stat.S_ISLNK(mode):
            node.type, node.mode, node.target = SYMLINK, 0, os.readlink(path)
            self.stats["symlinks"] += 1
            return node, None
        if stat.S_ISREG(mode):
            node.ctime_ns, node.inode = st.st_ctime_ns, st.st_ino
            if prev is not None and self._unchanged(prev, st):
                node.size, node.chunks = prev.size, list(prev.chunks)
                self.ids.update(node.chunks)
                self.stats["files"] += 1
                self.stats["unchanged_files"] += 1
                self.stats["bytes"] += node.size
                self._advance(node.size)
                return node, None
            futures = self.file(path, node)
            if futures is None:
                return None, None
            self.stats["files"] += 1
            return node, futures
        self._skip(path, f"special file (mode {stat.filemode(mode)}) not backed up")
        return None, None

    def _advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    def file(self, path: bytes, node: Node) -> list[Future[bytes]] | None:
        futures: list[Future[bytes]] = []
        size = 0
        try:
            with open(path, "rb", buffering=0) as f:
                for data in self.chunker.file(f, os.fstat(f.fileno()).st_size):
                    self.window.acquire()
                    futures.append(self.pool.submit(self._store_data, data))
                    size += len(data)
                    self._advance(len(data))
        except OSError as exc:
            self._skip(path, f"unreadable: {exc.strerror or exc}")
            return None
        node.size = size
        self.stats["bytes"] += size
        return futures

    def directory(self, path: bytes, prev_tree: bytes | None) -> bytes:
        prev_nodes = self._parent_nodes(prev_tree)
        nodes: list[Node] = []
        pending: list[tuple[Node, list[Future[bytes]]]] = []
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._skip(path, f"directory unreadable: {exc.strerror or exc}")
            entries = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                node, futures = self.node(entry.path, entry.name, st, prev_nodes.get(entry.name))
            except FileNotFoundError:
                self._skip(entry.path, "vanished during backup")
                continue
            except OSError as exc:
                self._skip(entry.path, f"unreadable: {exc.strerror or exc}")
                continue
            if node is None:
                continue
            nodes.append(node)
            if futures is not None:
                pending.append((node, futures))
        return self.save_tree(nodes, pending)

    def save_tree(
        self, nodes: list[Node], pending: list[tuple[Node, list[Future[bytes]]]]
    ) -> bytes:
        """Store a tree once the chunks of its files (``pending``, still hashing) are known."""
        for node, futures in pending:
            node.chunks = [f.result() for f in futures]
            self.ids.update(node.chunks)
        tree_id = self.store.store(BlobType.TREE, encode_tree(nodes))
        self.ids.add(tree_id)
        return tree_id

    def root(self, paths: Sequence[bytes]) -> bytes:
        prev_nodes = self._parent_nodes(self.parent_tree)
        nodes: list[Node] = []
        pending: list[tuple[Node, list[Future[bytes]]]] = []
        for path in paths:
            name = os.path.basename(path.rstrip(b"/")) or b"root"
            st = os.lstat(path)
            node, futures = self.node(path, name, st, prev_nodes.get(name))
            if node is not None:
                nodes.append(node)
                if futures is not None:
                    pending.append((node, futures))
        return self.save_tree(nodes, pending)


def backup(
    store: BlobStore,
    paths: Sequence[str | os.PathLike[str]],
    *,
    signing_key: Ed25519PrivateKey,
    seq: int,
    parent_id: str | None,
    parent_tree: bytes | None = None,
    host: str | None = None,
    tags: Iterable[str] = (),
    progress: ProgressFn | None = None,
    workers: int = 2,
    reread: bool = False,
) -> Snapshot:
    """Back up ``paths``; writes packs, one index file and the signed manifest.

    ``seq``/``parent_id`` place the manifest in the chain; ``parent_tree`` is the root tree of
    the snapshot used for change detection (None: read every file).
    """
    if not paths:
        raise BackupError("nothing to back up: no paths given")
    raw = [os.fsencode(os.path.abspath(p)) for p in paths]
    names = [os.path.basename(p.rstrip(b"/")) or b"root" for p in raw]
    if len(set(names)) != len(names):
        raise BackupError("two backup paths have the same last component; back up their parent")
    for p in raw:
        if not os.path.lexists(p):
            raise BackupError(f"backup path {os.fsdecode(p)} does not exist")
    started = utc_now()
    with ThreadPoolExecutor(workers, thread_name_prefix="hdsvault-backup") as pool:
        run = _Backup(store, pool, workers, parent_tree, progress, reread)
        if progress is not None:
            run.scan_total(raw)
        tree = run.root(raw)
    store.write_index()
    ids = run.ids
    packs: set[str] = set()
    for cid in ids:
        loc = store.index.get(cid)
        if loc is None:  # cannot happen: every id was stored or found in the index
            raise BackupError(f"chunk {cid.hex()} vanished from the index during backup")
        packs.add(loc.pack_id.hex())
    stats = dict(run.stats)
    stats.update(
        new_chunks=store.stats.new_chunks,
        new_bytes=store.stats.new_bytes,
        new_tree_bytes=store.stats.new_tree_bytes,
        stored_bytes=store.stats.stored_bytes,
        packs_written=store.stats.packs,
    )
    manifest = Manifest(
        kind=SNAPSHOT,
        repository=store.config.id,
        config=store.config_hash,
        seq=seq,
        parent=parent_id,
        time=started,
        host=host or socket.gethostname(),
        tags=sorted(set(tags)),
        paths=[os.fsdecode(p) for p in raw],
        tree=tree.hex(),
        chunk_count=len(ids),
        merkle_root=merkle_root(ids).hex(),
        packs=sorted(packs),
        stats=stats,
    )
    snapshot_id, data = seal_manifest(manifest, store.keys.manifest, signing_key)
    store.backend.put(f"snapshots/{snapshot_id}", data)
    return Snapshot(snapshot_id, manifest)


# --------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class BrokenFile:
    """A file that could not be restored intact."""

    path: str
    chunk: str
    pack: str | None
    reason: str


@dataclass
class RestoreResult:
    target: Path
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    broken: list[BrokenFile] = field(default_factory=list)


@dataclass
class _Item:
    rel: bytes
    node: Node


def _walk_trees(
    store: BlobStore, root: bytes, broken: list[BrokenFile], salvage: bool
) -> list[_Item]:
    """Every node of the snapshot, parents before children (trees are read here)."""
    items: list[_Item] = []
    stack: list[tuple[bytes, bytes]] = [(b"", root)]
    while stack:
        rel, tree_id = stack.pop()
        try:
            nodes = decode_tree(store.load(tree_id), f"tree {tree_id.hex()}")
        except (CorruptObjectError, ObjectMissingError) as exc:
            loc = store.index.get(tree_id)
            bad = BrokenFile(
                os.fsdecode(rel) or "/",
                tree_id.hex(),
                pack_name(loc.pack_id) if loc else None,
                f"directory listing unreadable: {exc}",
            )
            if not salvage:
                raise RestoreError(f"restore refused: {bad.path}: {bad.reason}") from exc
            broken.append(bad)
            continue
        for node in nodes:
            child = os.path.join(rel, node.name) if rel else node.name
            items.append(_Item(child, node))
            if node.type == DIR and node.subtree is not None:
                stack.append((child, node.subtree))
    return items


def _ordered(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[Future[R]]:
    """Submit ``fn(item)`` with at most ``window`` in flight; yield futures in input order."""
    queue: deque[Future[R]] = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= window:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _prepare_target(target: Path) -> Path:
    if (target.exists() or target.is_symlink()) and (
        not target.is_dir() or target.is_symlink() or any(target.iterdir())
    ):
        raise RestoreError(f"restore target {target} exists and is not an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.restoring-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    return staging


def _apply_meta(path: bytes, node: Node, as_root: bool) -> None:
    if as_root:
        with contextlib.suppress(OSError):
            os.chown(path, node.uid, node.gid, follow_symlinks=False)
    if node.type != SYMLINK:
        os.chmod(path, node.mode)
    os.utime(path, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)


def _restore_file(
    store: BlobStore,
    item: _Item,
    sroot: bytes,
    stream: Iterator[Future[bytes]],
    result: RestoreResult,
    salvage: bool,
    as_root: bool,
    done: int,
) -> int:
    """Write one file from the ordered blob stream; a broken file is removed, never kept."""
    path = os.path.join(sroot, item.rel)
    bad: BrokenFile | None = None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for cid in item.node.chunks:
            future = next(stream)
            if bad is not None:
                future.cancel()
                continue
            try:
                data = future.result()
            except (CorruptObjectError, ObjectMissingError) as exc:
                loc = store.index.get(cid)
                pack = pack_name(loc.pack_id) if loc else None
                bad = BrokenFile(os.fsdecode(item.rel), cid.hex(), pack, str(exc))
                continue
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            done += len(data)
    finally:
        os.close(fd)
    if bad is not None:
        os.unlink(path)
        if not salvage:
            raise RestoreError(f"restore refused: {bad.path}: {bad.reason} (chunk {bad.chunk})")
        result.broken.append(bad)
        return done
    _apply_meta(path, item.node, as_root)
    result.files += 1
    result.bytes += item.node.size
    return done


def restore(
    store: BlobStore,
    snapshot: Snapshot,
    target_dir: str | os.PathLike[str],
    *,
    salvage: bool = False,
    progress: ProgressFn | None = None,
    workers: int = 2,
) -> RestoreResult:
    """Restore ``snapshot`` into ``target_dir`` (absent or empty). See the module docstring."""
    target = Path(target_dir).absolute()
    result = RestoreResult(target=target)
    items = _walk_trees(store, bytes.fromhex(snapshot.manifest.tree), result.broken, salvage)
    files = [i for i in items if i.node.type == FILE]

    # Cheap pre-check: every chunk indexed, every pack present. Refuse before writing anything.
    present: dict[bytes, bool] = {}
    doomed: dict[int, BrokenFile] = {}
    for n, item in enumerate(files):
        for cid in item.node.chunks:
            loc = store.index.get(cid)
            if loc is not None and loc.pack_id not in present:
                present[loc.pack_id] = store.backend.exists(pack_name(loc.pack_id))
            if loc is None or not present[loc.pack_id]:
                reason = "chunk not in the index" if loc is None else "pack missing"
                pack = pack_name(loc.pack_id) if loc is not None else None
                doomed[n] = BrokenFile(os.fsdecode(item.rel), cid.hex(), pack, reason)
                break
    if doomed and not salvage:
        first = next(iter(doomed.values()))
        raise RestoreError(
            f"restore refused: {len(doomed)} file(s) cannot be restored, e.g. {first.path}: "
            f"{first.reason} ({first.pack or first.chunk})"
        )

    staging = _prepare_target(target)
    as_root = os.geteuid() == 0
    total = sum(i.node.size for i in files)
    done = 0
    sroot = os.fsencode(staging)
    try:
        for item in items:  # directories first (parents precede children in `items`)
            if item.node.type == DIR:
                os.mkdir(os.path.join(sroot, item.rel), 0o700)
                result.dirs += 1

        wanted = [cid for n, i in enumerate(files) if n not in doomed for cid in i.node.chunks]
        with ThreadPoolExecutor(workers, thread_name_prefix="hdsvault-restore") as pool:
            stream = _ordered(pool, store.load, wanted, max(4, workers * 4))
            for n, item in enumerate(files):
                if n in doomed:
                    result.broken.append(doomed[n])
                    continue
                done = _restore_file(store, item, sroot, stream, result, salvage, as_root, done)
                if progress is not None:
                    progress(done, total)
        for item in items:
            if item.node.type == SYMLINK and item.node.target is not None:
                path = os.path.join(sroot, item.rel)
                os.symlink(item.node.target, path)
                _apply_meta(path, item.node, as_root)
                result.symlinks += 1
        for item in reversed(items):  # children before parents: mtimes stick
            if item.node.type == DIR:
                _apply_meta(os.path.join(sroot, item.rel), item.node, as_root)
        if target.is_dir():
            target.rmdir()
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
