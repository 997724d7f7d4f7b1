"""Tree blobs: the JSON listing of one directory (format §8.2).

Why one blob per directory (as restic): an unchanged directory gives a byte-identical blob,
hence the same chunk ID, and costs nothing in the next snapshot; a manifest holding the whole
file list would be rewritten in full every time. Names are kept as raw bytes in memory
(filesystem names need not be UTF-8) and written as UTF-8 strings when they are, base64
otherwise.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from hdsvault.backup.errors import CorruptObjectError

__all__ = ["DIR", "FILE", "SYMLINK", "Node", "decode_tree", "encode_tree"]

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"


@dataclass
class Node:
    """One entry of a directory."""

    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    size: int = 0
    chunks: list[bytes] = field(default_factory=list)
    subtree: bytes | None = None
    target: bytes | None = None

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")


def _put_text(doc: dict[str, Any], key: str, raw: bytes) -> None:
    try:
        doc[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc[key + "_b64"] = base64.b64encode(raw).decode("ascii")


def _get_text(doc: dict[str, Any], key: str) -> bytes:
    if key in doc:
        return str(doc[key]).encode("utf-8")
    return base64.b64decode(doc[key + "_b64"], validate=True)


def encode_tree(nodes: list[Node]) -> bytes:
    """Deterministic JSON of a directory: nodes sorted by name, keys sorted, no spaces."""
    out: list[dict[str, Any]] = []
    for n in sorted(nodes, key=lambda n: n.name):
        doc: dict[str, Any] = {"type": n.type, "uid": n.uid, "gid": n.gid, "mtime_ns": n.mtime_ns}
        _put_text(doc, "name", n.name)
        if n.type == FILE:
            doc.update(
                mode=n.mode,
                ctime_ns=n.ctime_ns,
                inode=n.inode,
                size=n.size,
                chunks=[c.hex() for c in n.chunks],
            )
        elif n.type == DIR:
            assert n.subtree is not None
            doc.update(mode=n.mode, subtree=n.subtree.hex())
        elif n.type == SYMLINK:
            assert n.target is not None
            _put_text(doc, "target", n.target)
        out.append(doc)
    doc_json = json.dumps({"nodes": out}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return doc_json.encode()


def decode_tree(data: bytes, what: str) -> list[Node]:
    """Parse a tree blob; :class:`CorruptObjectError` if it is not one."""
    try:
        doc = json.loads(data)
        nodes: list[Node] = []
        for d in doc["nodes"]:
            kind = d["type"]
            node = Node(
                name=_get_text(d, "name"),
                type=kind,
                mode=int(d.get("mode", 0)),
                uid=int(d.get("uid", 0)),
                gid=int(d.get("gid", 0)),
                mtime_ns=int(d.get("mtime_ns", 0)),
            )
            if kind == FILE:
                node.ctime_ns = int(d.get("ctime_ns", 0))
                node.inode = int(d.get("inode", 0))
                node.size = int(d["size"])
                node.chunks = [bytes.fromhex(c) for c in d["chunks"]]
            elif kind == DIR:
                node.subtree = bytes.fromhex(d["subtree"])
            elif kind == SYMLINK:
                node.target = _get_text(d, "target")
            else:
                raise ValueError(f"unknown node type {kind!r}")
            if not node.name or b"/" in node.name or node.name in (b".", b".."):
                raise ValueError("invalid node name")
            nodes.append(node)
        return nodes
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptObjectError(f"{what}: not a valid tree blob ({exc})") from exc
