"""The default blob backend: files under ``<data_dir>/blobs`` (included in backups of data_dir).

Atomic and durable writes: a replacement goes to a temporary file in the target directory,
which is fsynced, renamed over the final name and then the directory is fsynced, so after a
crash a key holds either its previous content or the complete new one (invariant 4). A new
key is written in place (see :func:`_create`): a crash mid-put leaves a partial file under a
key nothing refers to yet (an orphan, harmless). Files
and directories are created private (0600/0700): they hold ciphertext only, but nobody else
needs them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from hdsvault.blobs.base import BlobError, BlobInfo, BlobNotFound, Hasher, Payload, check_key
from hdsvault.blobs.base import chunks_of as _chunks

READ_CHUNK = 1024 * 1024


class FilesystemBlobStore:
    """Blobs as files; the key is the relative path."""

    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._dirs: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _ensure_dirs(self, directories: Iterable[Path]) -> None:
        """Create the missing ``directories`` (and missing parents under the root), then
        flush once each directory that gained an entry: a new directory's entry must survive
        a crash, at every level created (a fresh tenant adds two)."""
        created: set[Path] = set()
        for directory in directories:
            if directory in self._dirs:
                continue
            for d in (*reversed(directory.parents), directory):
                if self.root in d.parents and not d.exists():
                    d.mkdir(mode=0o700, exist_ok=True)
                    created.add(d)
            self._dirs.add(directory)
        for parent in {d.parent for d in created}:
            _fsync_dir(parent)

    def prepare(self, prefixes: Iterable[str]) -> None:
        """Create the directories of ``prefixes`` (keys' parent paths) now, with one flush per
        parent. Why: a fresh tenant's first instances would otherwise each create a fan-out
        directory and flush its parent on the write path (measured: a mkdir plus a directory
        fsync for half of the first 400 C-STOREs)."""
        self._ensure_dirs(self._path(prefix) for prefix in prefixes)

    def put(self, key: str, data: Payload) -> BlobInfo:
        path = self._path(key)
        self._ensure_dirs((path.parent,))
        hasher = Hasher()
        try:
            fd, tmp = _create(path)
        except OSError as exc:
            raise BlobError(f"cannot write blob {key}: {exc.strerror or exc}") from None
        written_to = tmp or path  # what to remove if the put fails: only a file it created
        try:
            try:
                for chunk in _chunks(data):
                    view = memoryview(chunk)
                    hasher.update(view)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if tmp is not None:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException as exc:  # the payload's iterator may fail too: leave nothing
            with contextlib.suppress(OSError):
                written_to.unlink()
            if isinstance(exc, OSError):
                raise BlobError(f"cannot write blob {key}: {exc.strerror or exc}") from None
            raise
        return hasher.info(key)

    def open(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {key}: {exc.strerror or exc}") from None
        return _read_chunks(f)

    def get(self, key: str) -> bytes:
        """The whole blob, read with one ``read`` of its size (plain strings and file
        descriptors, not pathlib nor a buffered file object: a retrieval gets tens of blobs
        per request: ``open().read()`` took 7.4 us per 39 KB blob, this 4.9 us, measured)."""
        try:
            fd = os.open(os.path.join(self._root, check_key(key)), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {key}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            if len(data) < size:  # short read (a file over 2 GiB): read the rest in chunks
                rest = [data]
                while chunk := os.read(fd, READ_CHUNK):
                    rest.append(chunk)
                data = b"".join(rest)
            return data
        except OSError as exc:
            raise BlobError(f"cannot read blob {key}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        for dirpath, _dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if name.startswith("."):
                    continue  # temporary files of puts in progress
                key = (rel / name).as_posix() if rel != Path(".") else name
                if key.startswith(prefix):
                    yield key

    def close(self) -> None:
        pass


def _create(path: Path) -> tuple[int, Path | None]:
    """Open the file a put writes: ``(fd, temporary path to rename over path, or None)``.

    A key that does not exist yet is written in place. Nobody reads it before ``put`` returns
    (the caller publishes a key only afterwards, e.g. by committing the row that names it), and
    skipping the rename saves the second journal commit an fsynced rename costs: the file's
    fsync already commits its new directory entry, so the directory fsync that follows (kept,
    as POSIX asks) finds nothing left to write. Replacing an existing key goes through a
    temporary file renamed over it, so readers see the old or the new blob, never a mix.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), None
    except FileExistsError:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp


def _read_chunks(f: object) -> Iterator[bytes]:
    import io

    assert isinstance(f, io.BufferedReader)
    with f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
