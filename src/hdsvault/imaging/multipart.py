"""``multipart/related`` (RFC 2387) as DICOMweb uses it: parse STOW-RS bodies, frame responses.

Small and strict on purpose: the body is already bounded in size by the face, parts are
found with ``bytes.find`` on the delimiter (linear), and every malformation is reported as
INVALID with what was expected, never a crash.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from hdsvault.imaging.errors import ImagingError, Kind


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=X`` -> media type, params."""
    media, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, sep, val = item.partition("=")
        if sep:
            params[name.strip().lower()] = val.strip().strip('"')
    return media.strip().lower(), params


def parse(body: bytes, boundary: str) -> list[Part]:
    if not boundary or len(boundary) > 200:
        raise ImagingError(Kind.INVALID, "multipart/related without a valid boundary parameter")
    delim = b"--" + boundary.encode("latin-1")
    pos = body.find(delim)
    if pos < 0:
        raise ImagingError(Kind.INVALID, "multipart body does not contain its boundary")
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if body[pos : pos + 2] == b"--":
            return parts
        if body[pos : pos + 2] == b"\r\n":
            pos += 2
        elif body[pos : pos + 1] == b"\n":
            pos += 1
        end = body.find(b"\r\n" + delim, pos)
        if end < 0:
            raise ImagingError(Kind.INVALID, "multipart body is truncated (no closing boundary)")
        # Sliced once from the body (a part is an instance: copies are its size).
        head_end = body.find(b"\r\n\r\n", pos, end)
        if head_end >= 0:
            head, content = body[pos:head_end], body[head_end + 4 : end]
        elif body.startswith(b"\r\n", pos, end):
            head, content = b"", body[pos + 2 : end]
        else:
            raise ImagingError(Kind.INVALID, "multipart part without a header/body separator")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        parts.append(Part(headers, content))
        pos = end + 2


def new_boundary() -> str:
    return "hdsvault-" + secrets.token_hex(16)


def part_head(ctype: str, boundary: str) -> bytes:
    """The delimiter and header of one part of a multipart/related response."""
    return b"--" + boundary.encode() + b"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n"


def closing(boundary: str) -> bytes:
    """The closing delimiter of a multipart/related response."""
    return b"--" + boundary.encode() + b"--\r\n"


def frame(items: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response: each (content type, chunks) as one part."""
    for ctype, chunks in items:
        yield part_head(ctype, boundary)
        yield from chunks
        yield b"\r\n"
    yield closing(boundary)


def framed_length(items: Iterable[tuple[str, int]], boundary: str) -> int:
    """The length of what :func:`frame` yields for parts of these (content type, size).

    Why: a response whose length is declared goes out without chunked transfer encoding (no
    chunk framing for the server to write and the client to parse), and the client knows how
    much is coming; the sizes are in the index (plaintext bytes of each stored file)."""
    return len(closing(boundary)) + sum(
        len(part_head(ctype, boundary)) + size + 2 for ctype, size in items
    )


def frame_into(
    parts: Sequence[tuple[str, int]], boundary: str, *, close: bool = True
) -> tuple[bytearray, list[memoryview]]:
    """The body :func:`frame` would yield for parts of these (content type, size), with every
    delimiter and part header written and each part's bytes left to fill: returns the body
    and, per part, the writable view of its ``size`` bytes. With ``close`` false, the closing
    delimiter is left out: the buffer is then one piece of a body sent in pieces.

    Why: a retrieval then decrypts each instance straight into its place (one buffer, no
    copy per instance and no join), and the body goes out as it is."""
    heads = [(part_head(ctype, boundary), size) for ctype, size in parts]
    tail = closing(boundary) if close else b""
    body = bytearray(sum(len(head) + size + 2 for head, size in heads) + len(tail))
    view = memoryview(body)
    slots = []
    pos = 0
    for head, size in heads:
        view[pos : pos + len(head)] = head
        pos += len(head)
        slots.append(view[pos : pos + size])
        pos += size
        view[pos : pos + 2] = b"\r\n"
        pos += 2
    view[pos:] = tail
    return body, slots


def coalesce(chunks: Iterable[bytes | memoryview], size: int) -> Iterator[bytes | memoryview]:
    """``chunks`` regrouped into pieces of at least ``size`` bytes (the last one may be less).

    A piece at least ``size`` long goes out as it is (no copy of large instances)."""
    pending: list[bytes | memoryview] = []
    held = 0
    for c in chunks:
        if len(c) >= size and not pending:
            yield c
            continue
        pending.append(c)
        held += len(c)
        if held >= size:
            yield b"".join(pending)
            pending.clear()
            held = 0
    if pending:
        yield b"".join(pending)
