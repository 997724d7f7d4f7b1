"""Standalone verifier of hdsvault journal checkpoints and proofs (format: docs/journal.md).

It imports only the Python standard library and `cryptography`, never hdsvault, so an auditor
can read it whole and run it on any machine against files the operator handed over.

usage:
  verify_journal.py checkpoint  --key VKEY CHECKPOINT
  verify_journal.py inclusion   --key VKEY --checkpoint CHECKPOINT PROOF.json
  verify_journal.py consistency --key VKEY --old CHECKPOINT --new CHECKPOINT PROOF.json
exit status: 0 valid, 1 invalid (reason on stderr), 2 usage error or unreadable file.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Invalid(Exception):
    """The input does not verify; the message says why."""


class Usage(Exception):
    """The command line is not one of the forms in the module docstring."""


def b64(text, what):
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise Invalid(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise Invalid(f"{what} is not canonical base64")
    return raw


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def read_checkpoint(path, vkey):
    """Verify a signed note with verifier key VKEY; return (origin, size, root)."""
    name, key_id, key64 = [*vkey.split("+", 2), "", ""][:3]
    raw = b64(key64, "verifier key")
    if len(raw) != 33 or raw[0] != 1 or not name or " " in name:
        raise Invalid("verifier key is not <name>+<key id>+<base64(0x01 || Ed25519 key)>")
    if (
        hashlib.sha256(name.encode(errors="surrogateescape") + b"\n" + raw).digest()[:4].hex()
        != key_id
    ):
        raise Invalid("verifier key ID does not match its name and key")
    with open(path, "rb") as f:
        try:
            note = f.read().decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(f"{path}: not UTF-8") from None
    if any(c < " " and c != "\n" for c in note):
        raise Invalid(f"{path}: control character in note")
    cut = note.rfind("\n\n")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    if cut < 0 or not sigs.endswith("\n"):
        raise Invalid(f"{path}: not a signed note (text, blank line, signature lines)")
    signed = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):  # em dash, space
            raise Invalid(f"{path}: malformed signature line")
        sig_name, _, sig64 = line[2:].partition(" ")
        blob = b64(sig64, "signature")
        if len(blob) < 5:
            raise Invalid(f"{path}: malformed signature line")
        if sig_name == name and blob[:4].hex() == key_id:
            try:
                Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], text.encode())
            except InvalidSignature:
                raise Invalid(f"{path}: signature by {name} does not verify") from None
            signed = True
    if not signed:
        raise Invalid(f"{path}: no signature by key {name}+{key_id}")
    lines = text[:-1].split("\n")
    size = lines[1] if len(lines) >= 3 else ""
    canonical = size.isascii() and size.isdigit() and len(size) <= 20 and size == str(int(size))
    canonical = canonical and int(size) < 2**64
    if not canonical or not lines[0]:
        raise Invalid(f"{path}: checkpoint needs origin, canonical tree size and root lines")
    root = b64(lines[2], "root hash")
    if len(root) != 32 or "" in lines[3:]:
        raise Invalid(f"{path}: root hash must be 32 bytes, extension lines non-empty")
    return lines[0], int(size), root


def field(proof, key, kind):
    value = proof.get(key)
    if kind is int and (type(value) is not int or value < 0):
        raise Invalid(f"proof field {key!r} must be a non-negative integer")
    if kind is bytes:
        if type(value) is not str or len(value) != 64:
            raise Invalid(f"proof field {key!r} must be 64 hex digits")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise Invalid(f"proof field {key!r} must be 64 hex digits") from None
    return value


def read_proof(path, kind):
    with open(path, "rb") as f:
        try:
            proof = json.loads(f.read().decode("utf-8"))
        except (ValueError, RecursionError):
            raise Invalid(f"{path}: not a JSON document") from None
    if type(proof) is not dict or proof.get("type") != kind:
        raise Invalid(f"{path}: not a {kind} proof")
    hashes = proof.get("hashes")
    if type(hashes) is not list:
        raise Invalid(f"{path}: 'hashes' must be a list")
    return proof, [field({"h": h}, "h", bytes) for h in hashes]


def verify_inclusion(leaf, index, size, path, root):  # RFC 9162 section 2.1.3.2
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(m, n, path, old, new):  # RFC 9162 section 2.1.4.2 (+ m == 0, m == n)
    if m > n:
        return False
    if m == 0:  # the empty tree (root SHA-256 of "") is a prefix of every tree
        empty = hashlib.sha256(b"").digest()
        return not path and old == empty and (n > 0 or new == empty)
    if m == n or not path:
        return m == n and not path and old == new
    path = ([old] if m & (m - 1) == 0 else []) + path
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old and sr == new


def run(command, opts, args):
    key = opts.get("--key")
    if key is None:
        raise Usage
    if command == "checkpoint" and len(args) == 1:
        origin, size, root = read_checkpoint(args[0], key)
        return f"checkpoint OK: {origin} size {size} root {root.hex()}"
    if command == "inclusion" and len(args) == 1 and "--checkpoint" in opts:
        origin, size, root = read_checkpoint(opts["--checkpoint"], key)
        proof, path = read_proof(args[0], "inclusion")
        index, leaf = field(proof, "index", int), field(proof, "leaf_hash", bytes)
        if field(proof, "tree_size", int) != size:
            raise Invalid(f"proof is for tree size {proof['tree_size']}, checkpoint is {size}")
        if not verify_inclusion(leaf, index, size, path, root):
            raise Invalid(f"leaf {leaf.hex()} is NOT at index {index} of {origin} size {size}")
        return f"inclusion OK: leaf {leaf.hex()} is at index {index} of {origin} size {size}"
    if command == "consistency" and len(args) == 1 and {"--old", "--new"} <= opts.keys():
        old_origin, m, old_root = read_checkpoint(opts["--old"], key)
        origin, n, new_root = read_checkpoint(opts["--new"], key)
        proof, path = read_proof(args[0], "consistency")
        if old_origin != origin:
            raise Invalid(f"checkpoints are from two logs: {old_origin!r} and {origin!r}")
        if (field(proof, "old_size", int), field(proof, "new_size", int)) != (m, n):
            raise Invalid(f"proof sizes do not match the checkpoints ({m} -> {n})")
        if not verify_consistency(m, n, path, old_root, new_root):
            raise Invalid(f"{origin} size {n} is NOT an append-only extension of size {m}")
        return f"consistency OK: {origin} size {n} extends size {m}"
    raise Usage


def main(argv):
    opts, args = {}, []
    items = iter(argv[2:])
    for item in items:
        if item.startswith("--"):
            opts[item] = next(items, "")
        else:
            args.append(item)
    try:
        print(run(argv[1] if len(argv) > 1 else "", opts, args))
        return 0
    except Invalid as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    except Usage:
        print(__doc__.split("usage:")[1].rstrip(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
