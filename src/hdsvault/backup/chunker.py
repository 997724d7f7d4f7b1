"""Content-defined chunking (FastCDC 2020), keyed by the repository.

Why content-defined: an insertion in the middle of a file shifts fixed-size blocks and defeats
deduplication; FastCDC cuts where the content says, so only the chunks around a change are new.
Why keyed: the gear table is XORed with a seed derived from the master key (format §9), so the
sequence of chunk sizes does not fingerprint a known file. The cut loop runs in C without the
GIL (``pyfastcdc``). Files up to ``WHOLE_FILE_LIMIT`` are read in one call and cut in place
(the chunks are views of that buffer: no copy, and no per-file 2 * max_size stream buffer,
which would dominate for small files); larger files are streamed, never read whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc import FastCDC

from hdsvault.backup.config import ChunkerParams

__all__ = ["WHOLE_FILE_LIMIT", "Chunker"]

WHOLE_FILE_LIMIT = 16 * 1024 * 1024


class Chunker:
    """Cuts a byte stream into chunks; one instance per thread (FastCDC is not re-entrant)."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=seed,
        )

    def file(self, f: BinaryIO, size_hint: int) -> Iterator[memoryview]:
        """Chunks of an open file; each view stays valid as long as it is referenced.

        ``size_hint`` (from ``fstat``) only picks the strategy: a file that grows meanwhile is
        still read to its end.
        """
        if size_hint <= WHOLE_FILE_LIMIT:
            data = f.read(size_hint + 1)
            if len(data) <= size_hint:
                yield from self.buffer(data)
                return
            rest = f.read()  # grew since fstat: take what is there now
            yield from self.buffer(data + rest)
            return
        for view in self.stream(f):
            yield memoryview(bytes(view))

    def stream(self, f: BinaryIO) -> Iterator[memoryview]:
        """Chunks of ``f``; each view is valid only until the next one is produced."""
        for chunk in self._cdc.cut_stream(f):
            yield chunk.data

    def buffer(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Chunks of an in-memory buffer (views into it, valid as long as it is)."""
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data
