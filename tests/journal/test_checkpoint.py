"""Checkpoints as C2SP signed notes: interop vectors, round trips, and hostile input."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdsvault.journal.checkpoint import (
    Checkpoint,
    CheckpointError,
    format_body,
    key_id,
    open_note,
    parse_body,
    parse_verifier_key,
    sign,
    sign_note,
    verifier_key,
    verify_note,
)
from hdsvault.journal.merkle import EMPTY_ROOT, leaf_hash

DOC = Path(__file__).resolve().parents[2] / "docs" / "journal.md"

# golang.org/x/mod/sumdb/note package documentation example: a key pair and a note signed
# by the Go implementation. Ed25519 is deterministic, so our bytes must be identical.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# The worked example of docs/journal.md (seed = SHA-256("hdsvault docs/journal.md example key")).
DOC_SEED = hashlib.sha256(b"hdsvault docs/journal.md example key").digest()
DOC_NAME = "example.org/hdsvault/journal"
DOC_VKEY = "example.org/hdsvault/journal+9cc9a3f9+Abk3ciZ/VZ4XCBaMbWMhHILqysnhTip/BQ/yQuwPRDr6"
DOC_NOTE = (
    "example.org/hdsvault/journal\n"
    "8\n"
    "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    "\n"
    "— example.org/hdsvault/journal nMmj+fbNCtWTt04AqVGiDBPJ4SHhgjJ1zw6mWVWTbc3IEtGOsdU1frjz"
    "rCAituqj/+jGtdMatdkbQqrqTrl6Y7wG2AI=\n"
)

ORIGIN = "hdsvault.test/journal"
ROOT = leaf_hash(b"some root")


def _go_private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])[1:]
    return Ed25519PrivateKey.from_private_bytes(seed)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def vkey(key: Ed25519PrivateKey) -> str:
    return verifier_key(ORIGIN, key.public_key())


@pytest.fixture(scope="module")
def note(key: Ed25519PrivateKey) -> str:
    return sign(Checkpoint(ORIGIN, 1234, ROOT), ORIGIN, key)


# ----------------------------------------------------------------- interop vectors


def test_verifier_key_and_key_id_match_go_sumdb_note() -> None:
    private = _go_private_key()
    assert verifier_key("PeterNeumann", private.public_key()) == GO_VERIFIER_KEY
    name, kid, _ = parse_verifier_key(GO_VERIFIER_KEY)
    assert (name, kid.hex()) == ("PeterNeumann", "c74f20a3")
    raw = base64.b64decode(GO_VERIFIER_KEY.split("+", 2)[2])[1:]
    assert key_id("PeterNeumann", raw) == hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()[:4]


def test_signatures_are_byte_identical_to_go_sumdb_note() -> None:
    assert sign_note(GO_TEXT, "PeterNeumann", _go_private_key()) == GO_NOTE
    assert open_note(GO_NOTE, GO_VERIFIER_KEY) == GO_TEXT
    assert open_note(GO_NOTE.encode("utf-8"), GO_VERIFIER_KEY) == GO_TEXT


def test_documented_example_verifies_and_is_in_the_docs() -> None:
    private = Ed25519PrivateKey.from_private_bytes(DOC_SEED)
    assert verifier_key(DOC_NAME, private.public_key()) == DOC_VKEY
    root8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    assert sign(Checkpoint(DOC_NAME, 8, root8), DOC_NAME, private) == DOC_NOTE
    assert verify_note(DOC_NOTE, DOC_VKEY) == Checkpoint(DOC_NAME, 8, root8)
    doc = DOC.read_text(encoding="utf-8")
    assert DOC_VKEY in doc
    assert DOC_NOTE in doc
    assert DOC_SEED.hex() in doc


# ---------------------------------------------------------------------- round trip


def test_body_format_is_exact() -> None:
    cp = Checkpoint(ORIGIN, 1234, ROOT, ("ext one", "ext two"))
    body = format_body(cp)
    assert body == f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\next one\next two\n"
    assert parse_body(body) == cp


def test_sign_and_verify_round_trip(note: str, vkey: str) -> None:
    assert note.startswith(f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n\n— {ORIGIN} ")
    assert note.endswith("\n")
    assert verify_note(note, vkey) == Checkpoint(ORIGIN, 1234, ROOT)
    assert verify_note(note, vkey, origin=ORIGIN).size == 1234


def test_empty_tree_checkpoint(key: Ed25519PrivateKey, vkey: str) -> None:
    note = sign(Checkpoint(ORIGIN, 0, EMPTY_ROOT), ORIGIN, key)
    assert "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" in note
    assert verify_note(note, vkey) == Checkpoint(ORIGIN, 0, EMPTY_ROOT)


def test_extensions_are_signed(key: Ed25519PrivateKey, vkey: str) -> None:
    note = sign(Checkpoint(ORIGIN, 5, ROOT, ("timestamp 1700000000",)), ORIGIN, key)
    assert verify_note(note, vkey).extensions == ("timestamp 1700000000",)
    tampered = note.replace("timestamp 1700000000", "timestamp 1700000001")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(tampered, vkey)


# ------------------------------------------------------------------- wrong signers


def test_signed_with_one_key_fails_with_another(note: str) -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(CheckpointError, match="no signature by key"):
        verify_note(note, verifier_key(ORIGIN, other.public_key()))
    with pytest.raises(CheckpointError, match="no signature by key"):
        verify_note(note, verifier_key("other.test/log", other.public_key()))


def test_known_key_with_bad_signature_rejects_the_note(note: str, vkey: str) -> None:
    body, sig_line = note.split("\n\n")
    prefix, sig64 = sig_line.rsplit(" ", 1)
    blob = bytearray(base64.b64decode(sig64))
    blob[10] ^= 1  # key ID intact, signature broken
    forged = f"{body}\n\n{prefix} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(forged, vkey)
    short = f"{body}\n\n{prefix} {base64.b64encode(bytes(blob[:40])).decode()}\n"
    with pytest.raises(CheckpointError, match="wrong length"):
        verify_note(short, vkey)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n1234\n", "\n1235\n"),  # size
        (ORIGIN + "\n", "hdsvault.test/other\n"),  # origin
        (base64.b64encode(ROOT).decode(), base64.b64encode(leaf_hash(b"x")).decode()),
    ],
)
def test_tampered_body_fails(note: str, vkey: str, old: str, new: str) -> None:
    tampered = note.replace(old, new, 1)
    assert tampered != note
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_note(tampered, vkey)


def test_unknown_cosignatures_are_ignored(note: str, vkey: str) -> None:
    witness = Ed25519PrivateKey.from_private_bytes(b"w" * 32)
    cosigned = sign_note(note.split("\n\n")[0] + "\n", "witness.test/w1", witness)
    both = note + cosigned.split("\n\n")[1]  # log signature, then a witness signature
    assert both.count("\n— ") == 2
    assert verify_note(both, vkey).size == 1234
    wkey = verifier_key("witness.test/w1", witness.public_key())
    assert verify_note(both, wkey).size == 1234


def test_origin_must_match_when_asked(note: str, vkey: str) -> None:
    with pytest.raises(CheckpointError, match="origin"):
        verify_note(note, vkey, origin="hdsvault.test/another-journal")


# ---------------------------------------------------------------- strict parsing

GOOD_ROOT64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (f"{ORIGIN}\n12\n{GOOD_ROOT64}", "newline"),
        (f"{ORIGIN}\r\n12\r\n{GOOD_ROOT64}\r\n", "control character"),
        (f"{ORIGIN}\n012\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n00\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n+12\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n-1\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n 12\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n1_000\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n\u0661\u0662\n{GOOD_ROOT64}\n", "canonical"),  # Arabic-Indic digits
        (f"{ORIGIN}\n\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n{2**64}\n{GOOD_ROOT64}\n", "64 bits"),
        (f"{ORIGIN}\n{'9' * 5000}\n{GOOD_ROOT64}\n", "canonical"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n12\n{base64.b64encode(ROOT + b'x').decode()}\n", "33 bytes"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT64.rstrip('=')}\n", "base64"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT64[:-2]}B=\n", "canonical base64"),
        (f"{ORIGIN}\n12\n{ROOT.hex()}\n", "48 bytes"),  # hex is valid base64 of 48 bytes
        (f"{ORIGIN}\n12\n{GOOD_ROOT64}\n\n", "extension"),
        (f"{ORIGIN}\n12\n{GOOD_ROOT64}\next\n\n", "extension"),
        (f"\n12\n{GOOD_ROOT64}\n", "origin"),
        (f"{ORIGIN}\n12\n", "needs origin"),
        ("", "newline"),
        (f"{ORIGIN}\t\n12\n{GOOD_ROOT64}\n", "control character"),
        (f"{ORIGIN}\ud800\n12\n{GOOD_ROOT64}\n", "UTF-8"),
    ],
)
def test_parse_body_rejects(body: str, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        parse_body(body)


def test_malformed_body_behind_a_valid_signature_is_rejected(
    key: Ed25519PrivateKey, vkey: str
) -> None:
    note = sign_note(f"{ORIGIN}\n007\n{GOOD_ROOT64}\n", ORIGIN, key)
    with pytest.raises(CheckpointError, match="canonical"):
        verify_note(note, vkey)


def _with_sig_block(note: str, block: str) -> str:
    return note.split("\n\n")[0] + "\n\n" + block


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda n: n[:-1], "newline"),
        (lambda n: n.replace("\n\n", "\n"), "blank line"),
        (lambda n: n.replace("\n", "\r\n"), "control character"),
        (lambda n: n.replace("— ", "- "), "em dash"),
        (lambda n: n.replace("— ", "—"), "em dash"),
        (lambda n: n + "\n", "signature lines"),
        (lambda n: n + "trailing garbage\n", "em dash"),
        (lambda n: n.replace("— " + ORIGIN + " ", "— " + ORIGIN + "\u00a0"), "signature line"),
        (lambda n: _with_sig_block(n, "— a+b AAAAAAA=\n"), "spaces or '\\+'"),
        (lambda n: _with_sig_block(n, f"— {ORIGIN} AAAA\n"), "too short"),
        (lambda n: _with_sig_block(n, f"— {ORIGIN} not*base64\n"), "base64"),
        (lambda n: _with_sig_block(n, f"— {ORIGIN} \n"), "too short"),
        (lambda n: _with_sig_block(n, "\n"), "signature lines"),
        (lambda n: _with_sig_block(n, "x\n"), "em dash"),
        (lambda n: _with_sig_block(n, "— x AAAAAAA=\n" * 101), "more than 100"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "signature lines"),
    ],
)
def test_malformed_notes_raise_checkpoint_error(
    note: str, vkey: str, mangle: Callable[[str], str], reason: str
) -> None:
    with pytest.raises(CheckpointError, match=reason):
        verify_note(mangle(note), vkey)


def test_invalid_utf8_bytes_are_rejected(note: str, vkey: str) -> None:
    with pytest.raises(CheckpointError, match="UTF-8"):
        verify_note(note.encode("utf-8") + b"\xff", vkey)


@pytest.mark.parametrize(
    ("bad_vkey", "reason"),
    [
        ("", "look like"),
        ("name+only", "look like"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "hex"),
        ("PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "hex"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "spaces"),
        ("PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "base64"),
        (GO_VERIFIER_KEY.replace("+ARpc", "+Ahpc"), "Ed25519"),  # algorithm byte 0x02
        (  # 32 bytes: algorithm byte + 31 key bytes
            "PeterNeumann+c74f20a3+"
            + base64.b64encode(base64.b64decode(GO_VERIFIER_KEY.split("+")[2])[:32]).decode(),
            "Ed25519",
        ),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=", "base64"),
    ],
)
def test_bad_verifier_keys(note: str, bad_vkey: str, reason: str) -> None:
    with pytest.raises(CheckpointError, match=reason):
        verify_note(note, bad_vkey)


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint("", 1, ROOT),
        Checkpoint("two\nlines", 1, ROOT),
        Checkpoint(ORIGIN, -1, ROOT),
        Checkpoint(ORIGIN, 2**64, ROOT),
        Checkpoint(ORIGIN, True, ROOT),
        Checkpoint(ORIGIN, 1, ROOT[:31]),
        Checkpoint(ORIGIN, 1, ROOT, ("",)),
        Checkpoint(ORIGIN, 1, ROOT, ("a\nb",)),
    ],
)
def test_format_body_refuses_what_would_not_parse(checkpoint: Checkpoint) -> None:
    with pytest.raises(CheckpointError):
        format_body(checkpoint)


def test_signing_refuses_bad_key_names_and_texts(key: Ed25519PrivateKey) -> None:
    for name in ["", "a b", "a+b", "tab\tname"]:
        with pytest.raises(CheckpointError):
            sign(Checkpoint(ORIGIN, 1, ROOT), name, key)
    with pytest.raises(CheckpointError):
        sign_note("no final newline", ORIGIN, key)


def test_random_mutations_only_ever_raise_checkpoint_error(note: str, vkey: str) -> None:
    """Fuzz: whatever the damage, a CheckpointError or the untouched checkpoint."""
    rng = random.Random(2014)
    original = verify_note(note, vkey)
    raw = note.encode("utf-8")
    alphabet = b"\n\r \x00\xe2\x80\x94+=/Aa0-9\xff"
    outcomes = {"rejected": 0, "accepted": 0}
    for _ in range(3000):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos:pos] = bytes([rng.choice(alphabet)])
            elif op == 2:
                del data[pos : pos + rng.randint(1, 4)]
            else:
                data = data[:pos]
        for candidate in (bytes(data), bytes(data).decode("utf-8", "replace")):
            try:
                result = verify_note(candidate, vkey)
            except CheckpointError:
                outcomes["rejected"] += 1
            else:
                assert result == original
                outcomes["accepted"] += 1
    assert outcomes["rejected"] > 5000
