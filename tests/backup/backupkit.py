"""Helpers shared by the backup tests (imported by conftest and by test modules).

Small chunker and pack sizes (1/4/16 KiB chunks, 64 KiB packs) make a few hundred KiB of test
data span many chunks and packs, so dedup, pack and tamper behaviour is exercised in
milliseconds; cheap scrypt parameters keep escrow tests fast (the defaults are documented and
stored in each key file).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from hdsvault.backup import ChunkerParams, ScryptParams

SMALL_CHUNKS = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
FAST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)
ESCROW = "correct horse battery staple"
MARKER = b"PATIENT-MARKER-7f3a9c"


def write_tree(root: Path, seed: int = 1) -> dict[str, bytes]:
    """A tree with small, large, empty, unicode-named, non-UTF-8-named files and symlinks."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {
        "notes/empty.txt": b"",
        "notes/small.json": b'{"resourceType":"Patient","name":"' + MARKER + b'"}',
        "notes/Compte-rendu é à ü 患者.txt": ("Données de santé " * 300).encode() + MARKER,
        "imaging/series1/large.bin": rng.randbytes(300 * 1024),
        "imaging/series1/text.log": (b"line of log with " + MARKER + b"\n") * 2000,
        "imaging/series2/medium.bin": rng.randbytes(40 * 1024),
        "deep/a/b/c/d/leaf.txt": b"leaf\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()
    os.symlink("notes/small.json", root / "link-to-small")
    os.symlink("/nonexistent/target", root / "dangling-link")
    raw_name = os.fsencode(root) + b"/latin1-\xe9t\xe9.txt"
    with open(raw_name, "wb") as f:
        f.write(b"non-utf8 name")
    os.chmod(root / "notes/small.json", 0o640)
    os.utime(root / "notes/empty.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return files


def flip_byte(path: Path, offset: int) -> None:
    """Flip every bit of one byte of a stored object, in place (what bit rot or a hand does)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
