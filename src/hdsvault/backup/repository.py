"""Storage backends of a backup repository: a flat namespace of write-once objects.

Why a small interface: the engine above only needs to create an object atomically, read it
(whole or a byte range), list names, and delete — and to ask whether an object is locked.
Immutability lives *below* this interface: the plain :class:`LocalRepository` locks nothing;
a hardened local backend (``chattr +i`` with a retention date) and S3 Object Lock only change
``delete``/``is_locked``. The engine never deletes an object the backend reports as locked,
and a backend refuses such a deletion anyway (:class:`ObjectLockedError`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol, runtime_checkable

from hdsvault.backup.errors import ObjectExistsError, ObjectLockedError, ObjectMissingError

__all__ = ["LocalRepository", "RepositoryBackend", "fsync_dir"]

Buffer = bytes | bytearray | memoryview


@runtime_checkable
class RepositoryBackend(Protocol):
    """Where repository objects live. Names are ``/``-separated relative paths (see format §2)."""

    def put(self, name: str, data: Buffer) -> None:
        """Create ``name`` atomically and durably; :class:`ObjectExistsError` if it exists."""
        ...

    def get(self, name: str) -> bytes:
        """The whole object; :class:`ObjectMissingError` if absent."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only if the object is shorter)."""
        ...

    def size(self, name: str) -> int:
        """The object's size in bytes."""
        ...

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Names of every object under the folder ``prefix`` (e.g. ``"data"``), recursively."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name``; :class:`ObjectLockedError` if it is immutable."""
        ...

    def is_locked(self, name: str) -> bool:
        """Whether the backend would refuse to delete ``name`` now (immutability hook)."""
        ...


def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create, rename, unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalRepository:
    """A repository in a local directory (any POSIX filesystem; one file per object).

    ``put`` writes a temporary file beside the target, fsyncs it, then *links* it to its final
    name — ``link(2)`` fails if the name exists, which makes creation exclusive and atomic — and
    fsyncs the directory. Readers never see a partial object.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(path)
        self.durable = durable

    def __repr__(self) -> str:
        return f"LocalRepository({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts) or name.startswith("/"):
            raise ValueError(f"invalid object name {name!r}")
        return self.root.joinpath(*parts)

    # -- interface ---------------------------------------------------------------------------

    def put(self, name: str, data: Buffer) -> None:
        target = self._path(name)
        directory = target.parent
        if not directory.is_dir():
            self._makedirs(directory)
        tmp = self._tmp_dir(directory) / f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise ObjectExistsError(f"{name} already exists in {self.root}") from None
        finally:
            tmp.unlink(missing_ok=True)
        if self.durable:
            fsync_dir(directory)
        self._after_put(name, target)

    def _after_put(self, name: str, path: Path) -> None:
        """Hook for hardened backends (make the new object immutable). No-op here."""

    def _tmp_dir(self, directory: Path) -> Path:
        """Where ``put`` writes before linking into ``directory`` (same filesystem)."""
        return directory

    def _after_mkdir(self, directory: Path) -> None:
        """Hook for hardened backends (make a new directory append-only). No-op here."""

    def _makedirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            if self.durable:
                fsync_dir(d.parent)
            self._after_mkdir(d)

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissingError(f"{name} is missing from {self.root}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectMissingError(f"{name} is missing from {self.root}") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise ObjectMissingError(f"{name} is missing from {self.root}") from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        names: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            names.extend(f"{rel}/{f}" for f in filenames if not f.startswith(".tmp-"))
        names.sort()
        return names

    def delete(self, name: str) -> None:
        if self.is_locked(name):
            raise ObjectLockedError(f"{name} is immutable (retention not expired); not deleted")
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ObjectMissingError(f"{name} is missing from {self.root}") from None
        if self.durable:
            fsync_dir(path.parent)

    def is_locked(self, name: str) -> bool:
        return False
