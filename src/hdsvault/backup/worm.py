"""A hardened local repository: write once, immutable until a retention date (WORM).

Why: a backup that the backed-up host (or ransomware running on it, or a mistaken ``prune``)
can delete is not a backup. Each object is made immutable with the filesystem's immutable
attribute (``chattr +i``: no write, no rename, no unlink, even by its owner) as soon as it is
written, and its retention date is kept in an equally immutable sidecar
``retention/<object name>``. Directories are append-only (``chattr +a``: entries can be
added, never removed or renamed), so a pack cannot be hidden by moving its directory either.
Deleting is refused before the retention date (:class:`ObjectLockedError`); after it, the
backend lifts the attributes itself and deletes.

Limits, stated plainly: only a process with ``CAP_LINUX_IMMUTABLE`` (root) can set or clear
these attributes, so this protects against everything that does not run as root on the
repository host — the usual case when the repository sits on a dedicated backup host or
mount. Root can clear the flags; against root, use S3 Object Lock in compliance mode or
offline media. Supported on ext2/3/4, XFS, Btrfs and others implementing ``FS_IOC_SETFLAGS``.
``locks/`` stays mutable (the writer lock must be removable).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hdsvault.backup.config import format_time, parse_time
from hdsvault.backup.errors import BackupError, ObjectLockedError, ObjectMissingError
from hdsvault.backup.repository import LocalRepository, fsync_dir

__all__ = [
    "FS_APPEND_FL",
    "FS_IMMUTABLE_FL",
    "HardenedLocalRepository",
    "get_flags",
    "immutability_problem",
    "set_flags",
]

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
RETENTION_PREFIX = "retention"
MUTABLE_PREFIXES = ("locks/",)
_STAGING = ".staging"


def get_flags(path: str | os.PathLike[str] | bytes) -> int:
    """The inode flags (``lsattr``) of ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])
    finally:
        os.close(fd)


def set_flags(path: str | os.PathLike[str] | bytes, add: int = 0, remove: int = 0) -> None:
    """Add/remove inode flags (``chattr +i/-i/+a/-a``); needs CAP_LINUX_IMMUTABLE."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        current = int(struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0])
        wanted = (current | add) & ~remove
        if wanted != current:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", wanted))
    finally:
        os.close(fd)


def immutability_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why immutable files cannot be made in ``directory`` (None if they can)."""
    probe = Path(directory) / f".immutability-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        set_flags(probe, add=FS_IMMUTABLE_FL)
    except OSError as exc:
        reason = {
            errno.EPERM: "needs root (CAP_LINUX_IMMUTABLE)",
            errno.ENOTTY: "the filesystem has no immutable attribute",
            errno.EOPNOTSUPP: "the filesystem has no immutable attribute",
        }.get(exc.errno or 0, str(exc))
        return f"cannot make files immutable in {directory}: {reason}"
    finally:
        if probe.exists():
            with contextlib.suppress(OSError):
                set_flags(probe, remove=FS_IMMUTABLE_FL)
            probe.unlink()
    return None


class HardenedLocalRepository(LocalRepository):
    """A :class:`LocalRepository` whose objects are immutable for ``retention``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        retention: timedelta,
        *,
        durable: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(path, durable=durable)
        if retention < timedelta(0):
            raise ValueError("retention must not be negative")
        self.retention = retention
        self.clock = clock
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe_dir = self.root
        if get_flags(self.root) & FS_APPEND_FL:  # re-opened: nothing can be unlinked in root
            probe_dir = self.root / _STAGING
            probe_dir.mkdir(mode=0o700, exist_ok=True)
        problem = immutability_problem(probe_dir)
        if problem is not None:
            raise BackupError(f"hardened repository unavailable: {problem}")
        set_flags(self.root, add=FS_APPEND_FL)

    def __repr__(self) -> str:
        return f"HardenedLocalRepository({str(self.root)!r}, retention={self.retention})"

    # -- hooks of LocalRepository -------------------------------------------------------------

    def _tmp_dir(self, directory: Path) -> Path:
        staging = self.root / _STAGING  # mutable: temporary files are unlinked after linking
        if not staging.is_dir():
            staging.mkdir(mode=0o700, exist_ok=True)
        return staging

    def _after_mkdir(self, directory: Path) -> None:
        rel = directory.relative_to(self.root).as_posix() + "/"
        if not rel.startswith(MUTABLE_PREFIXES):
            set_flags(directory, add=FS_APPEND_FL)

    def _after_put(self, name: str, path: Path) -> None:
        if name.startswith(MUTABLE_PREFIXES):
            return
        if not name.startswith(RETENTION_PREFIX + "/"):
            until = self.clock() + self.retention
            sidecar = {"object": name, "retain_until": format_time(until)}
            self.put(f"{RETENTION_PREFIX}/{name}", json.dumps(sidecar).encode())
        set_flags(path, add=FS_IMMUTABLE_FL)

    # -- retention ------------------------------------------------------------------------------

    def retain_until(self, name: str) -> datetime | None:
        """The retention date of ``name`` (None: no sidecar)."""
        try:
            doc = json.loads(super().get(f"{RETENTION_PREFIX}/{name}"))
            return parse_time(str(doc["retain_until"]))
        except ObjectMissingError:
            return None

    def is_locked(self, name: str) -> bool:
        if name.startswith(MUTABLE_PREFIXES):
            return False
        until = self.retain_until(name)
        if until is None:  # no sidecar: locked as long as the attribute says so
            path = self._path(name)
            return path.exists() and bool(get_flags(path) & FS_IMMUTABLE_FL)
        return self.clock() < until

    def delete(self, name: str) -> None:
        if self.is_locked(name):
            until = self.retain_until(name)
            when = format_time(until) if until else "its immutable attribute is lifted"
            raise ObjectLockedError(f"{name} is immutable until {when}; not deleted")
        if name.startswith(MUTABLE_PREFIXES):
            super().delete(name)
            return
        path = self._path(name)
        if not path.exists():
            raise ObjectMissingError(f"{name} is missing from {self.root}")
        sidecar = self._path(f"{RETENTION_PREFIX}/{name}")
        for target in (path, sidecar):
            if target.exists():
                self._unlink_protected(target)

    def _unlink_protected(self, path: Path) -> None:
        parent = path.parent
        set_flags(path, remove=FS_IMMUTABLE_FL)
        set_flags(parent, remove=FS_APPEND_FL)
        try:
            path.unlink()
        finally:
            set_flags(parent, add=FS_APPEND_FL)
        if self.durable:
            fsync_dir(parent)
