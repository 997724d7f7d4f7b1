"""Signed journal checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes (Ed25519).

Why this format: a checkpoint is the log's signed promise "my tree of size N has root R".
Using https://c2sp.org/tlog-checkpoint inside https://c2sp.org/signed-note (the format of
the Go checksum database, Sigstore and the transparency-dev witnesses) lets auditors and
witnesses check hdsvault's journal with existing tools, and the text stays readable in a
ticket or an evidence pack. Exact bytes::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <root hash, standard base64>\\n
    [<extension line>\\n ...]
    \\n
    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n

The signature covers the body (the note text) including its final newline. The key ID is
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]`` and a verifier key is written
``<name>+<8 hex digits key ID>+<base64(0x01 || public key)>``, as in golang.org/x/mod/sumdb/note.

Parsing is strict (no CR, final newline required, canonical size and base64, 32-byte root)
and every failure is a :class:`CheckpointError`, so callers facing untrusted input have one
exception to handle and a message to show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hdsvault.journal.merkle import HASH_SIZE

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "format_body",
    "key_id",
    "open_note",
    "parse_body",
    "parse_verifier_key",
    "sign",
    "sign_note",
    "verifier_key",
    "verify_note",
]

ALG_ED25519 = 0x01
"""Signature type byte for Ed25519 in C2SP signed notes."""

MAX_SIGNATURES = 100
"""Signature lines accepted per note (the spec requires at least 16); bounds parsing work."""

_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIZE = 2**64 - 1  # tree sizes are uint64 in every checkpoint implementation
_ED25519_SIG_SIZE = 64
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdef")


class CheckpointError(ValueError):
    """A checkpoint or signed note is malformed, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log ``origin`` had ``size`` leaves with root ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


# ----------------------------------------------------------------------- helpers


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: right alphabet, padding, and canonical trailing bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc
    if _b64encode(raw) != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def _check_text(text: str, what: str) -> None:
    """Signed notes are UTF-8 with no ASCII control character except newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"{what} is not valid UTF-8 text") from exc
    for ch in text:
        if ch < " " and ch != "\n":
            raise CheckpointError(f"{what} contains control character U+{ord(ch):04X}")


def _check_key_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise CheckpointError("key name must be a non-empty string")
    _check_text(name, "key name")
    if "+" in name or any(ch.isspace() for ch in name):
        raise CheckpointError("key name must not contain spaces or '+'")


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: ``SHA-256(name || 0x0A || 0x01 || public_key)[:4]``.

    The algorithm byte is hashed in so that one key and name used with two signature types
    still yields two IDs (C2SP signed-note, "Signatures").
    """
    _check_key_name(name)
    if len(public_key) != 32:
        raise CheckpointError("an Ed25519 public key is 32 bytes")
    material = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """Encode the public half for verifiers: ``<name>+<hex key ID>+<base64(0x01||key)>``."""
    raw = _raw_public_key(public_key)
    return f"{name}+{key_id(name, raw).hex()}+{_b64encode(bytes([ALG_ED25519]) + raw)}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """Decode a verifier key into ``(name, key ID, public key)``, checking its key ID."""
    if not isinstance(vkey, str):
        raise CheckpointError("verifier key must be a string")
    parts = vkey.split("+", 2)  # base64 may itself contain '+', names may not
    if len(parts) != 3:
        raise CheckpointError("verifier key must look like <name>+<key id>+<key>")
    name, hex_id, key64 = parts
    _check_key_name(name)
    if len(hex_id) != 8 or not set(hex_id) <= _HEX:
        raise CheckpointError("verifier key ID must be 8 lowercase hex digits")
    raw = _b64decode(key64, "verifier public key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise CheckpointError("verifier key is not an Ed25519 key (0x01 || 32 bytes)")
    if key_id(name, raw[1:]).hex() != hex_id:
        raise CheckpointError("verifier key ID does not match its name and public key")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    except ValueError as exc:  # defensive: raw 32-byte keys load
        raise CheckpointError("verifier public key is invalid") from exc
    return name, bytes.fromhex(hex_id), public_key


# ------------------------------------------------------------------ checkpoint body


def format_body(checkpoint: Checkpoint) -> str:
    """The checkpoint note text (what gets signed), validated so that it parses back."""
    origin = checkpoint.origin
    if not isinstance(origin, str) or not origin:
        raise CheckpointError("origin must be a non-empty string")
    _check_text(origin, "origin")
    if "\n" in origin:
        raise CheckpointError("origin must be a single line")
    size = checkpoint.size
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise CheckpointError("tree size must be an integer in [0, 2**64)")
    root = checkpoint.root_hash
    if not isinstance(root, bytes | bytearray) or len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")
    lines = [origin, str(size), _b64encode(bytes(root))]
    for ext in checkpoint.extensions:
        if not isinstance(ext, str) or not ext or "\n" in ext:
            raise CheckpointError("extension lines must be non-empty single lines")
        _check_text(ext, "extension line")
        lines.append(ext)
    return "\n".join(lines) + "\n"


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint note text strictly (see module docstring for the grammar)."""
    if not isinstance(text, str):
        raise CheckpointError("checkpoint body must be text")
    _check_text(text, "checkpoint body")
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint body needs origin, tree size and root hash lines")
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if (
        not size_line
        or len(size_line) > 20
        or not set(size_line) <= _DIGITS
        or (size_line[0] == "0" and size_line != "0")
    ):
        raise CheckpointError(f"tree size {size_line!r} is not a canonical decimal number")
    size = int(size_line)
    if size > _MAX_SIZE:
        raise CheckpointError("tree size does not fit in 64 bits")
    root = _b64decode(root_line, "root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash is {len(root)} bytes, expected {HASH_SIZE}")
    if any(not ext for ext in extensions):
        raise CheckpointError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, size, root, tuple(extensions))


# --------------------------------------------------------------------- signed note


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign an arbitrary note text (ending in newline) with one Ed25519 key."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise CheckpointError("note text must end with a newline")
    _check_text(text, "note text")
    public = _raw_public_key(private_key.public_key())
    signature = private_key.sign(text.encode("utf-8"))
    blob = _b64encode(key_id(name, public) + signature)
    return f"{text}\n{_SIG_PREFIX}{name} {blob}\n"


def open_note(note: str | bytes, vkey: str) -> str:
    """Verify ``note`` against one verifier key and return its text.

    Follows C2SP signed-note: signatures from other keys (different name or key ID) are
    ignored, so cosignatures by witnesses do not get in the way; a signature from the
    verifier's key that fails rejects the whole note; at least one must verify.
    """
    name, kid, public_key = parse_verifier_key(vkey)
    if isinstance(note, bytes | bytearray):
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("signed note is not valid UTF-8") from exc
    if not isinstance(note, str):
        raise CheckpointError("signed note must be text")
    _check_text(note, "signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("signed note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise CheckpointError("signed note must end with signature lines and a newline")
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > MAX_SIGNATURES:
        raise CheckpointError(f"signed note has more than {MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    verified = False
    for line in sig_lines:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("signature line must start with an em dash and a space")
        sig_name, space, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not space:
            raise CheckpointError("signature line must be '— <key name> <signature>'")
        _check_key_name(sig_name)
        blob = _b64decode(sig64, "signature")
        if len(blob) < 5:
            raise CheckpointError("signature is too short")
        if sig_name != name or blob[:4] != kid:
            continue  # an unknown key: ignored, per the spec
        if len(blob) != 4 + _ED25519_SIG_SIZE:
            raise CheckpointError(f"signature by {name} has the wrong length")
        try:
            public_key.verify(blob[4:], message)
        except InvalidSignature as exc:
            raise CheckpointError(f"signature by {name} does not verify") from exc
        verified = True
    if not verified:
        raise CheckpointError(f"signed note carries no signature by key {name}+{kid.hex()}")
    return text


# ----------------------------------------------------------------- checkpoint note


def sign(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    """Format and sign a checkpoint; the result is the full signed-note text."""
    return sign_note(format_body(checkpoint), name, private_key)


def verify_note(text: str | bytes, vkey: str, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return the checkpoint it vouches for.

    ``origin``, when given, must equal the checkpoint's origin line: it stops a checkpoint
    of one journal (signed with a shared key) being passed off as another's.
    """
    checkpoint = parse_body(open_note(text, vkey))
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}"
        )
    return checkpoint
