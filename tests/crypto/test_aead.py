"""The envelope AEAD: round trips, context binding, tamper evidence, rotation."""

from __future__ import annotations

import os
import struct

import pytest

from hdsvault.crypto.aead import OVERHEAD, DataKeys, SealContext
from hdsvault.crypto.errors import CryptoError, DecryptionError

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
CTX = SealContext("750712184", "resource/Patient", "0f8fad5b-d9cb-469f-a165-70867728950e", 3)
SECRET = b'{"resourceType":"Patient","name":[{"family":"Dupont"}]}'


@pytest.fixture
def keys() -> DataKeys:
    return DataKeys({1: K1}, 1)


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(SECRET, id="bytes"),
        pytest.param(b"", id="empty"),
        pytest.param(os.urandom(1 << 20), id="1MiB"),
    ],
)
def test_round_trip(keys: DataKeys, plaintext: bytes) -> None:
    blob = keys.seal(plaintext, CTX)
    assert isinstance(blob, bytes | bytearray)
    assert len(blob) == len(plaintext) + OVERHEAD == DataKeys.sealed_size(len(plaintext))
    assert keys.open(blob, CTX) == plaintext


def test_round_trip_buffers(keys: DataKeys) -> None:
    assert keys.open(keys.seal(memoryview(SECRET), CTX), CTX) == SECRET
    assert keys.open(keys.seal(bytearray(SECRET), CTX), CTX) == SECRET
    blob = keys.seal(SECRET, CTX)
    assert keys.open(memoryview(blob), CTX) == SECRET
    assert keys.open(bytearray(blob), CTX) == SECRET
    # A slice of a bigger buffer (what a reader of a packed file hands over).
    framed = b"xx" + blob + b"yy"
    assert keys.open(memoryview(framed)[2:-2], CTX) == SECRET


def test_blob_layout(keys: DataKeys) -> None:
    """Format byte, big-endian key version, then nonce; the plaintext does not appear."""
    blob = DataKeys({7: K1}, 7).seal(SECRET, CTX)
    assert blob[0] == 0x01
    assert struct.unpack(">I", blob[1:5]) == (7,)
    assert SECRET not in blob
    assert b"Dupont" not in blob


def test_seal_into_and_open_into(keys: DataKeys) -> None:
    out = bytearray(len(SECRET) + OVERHEAD + 10)  # larger than needed: blob is out[:n]
    n = keys.seal_into(SECRET, CTX, out)
    assert n == len(SECRET) + OVERHEAD
    assert keys.open(out[:n], CTX) == SECRET
    plain = bytearray(len(SECRET))
    assert keys.open_into(memoryview(out)[:n], CTX, plain) == len(SECRET)
    assert plain == SECRET
    # A blob from seal() opens with open_into and vice versa.
    plain2 = bytearray(len(SECRET))
    keys.open_into(keys.seal(SECRET, CTX), CTX, plain2)
    assert plain2 == SECRET


def test_seal_into_rejects_small_or_readonly_buffer(keys: DataKeys) -> None:
    with pytest.raises(ValueError, match="needs"):
        keys.seal_into(SECRET, CTX, bytearray(len(SECRET) + OVERHEAD - 1))
    with pytest.raises(ValueError, match="writable"):
        keys.seal_into(SECRET, CTX, memoryview(bytes(len(SECRET) + OVERHEAD)))


def test_open_into_wipes_unauthenticated_plaintext(keys: DataKeys) -> None:
    """decrypt_into writes before verifying; a failed open must not leave plaintext behind."""
    blob = bytearray(keys.seal(SECRET, CTX))
    blob[-1] ^= 0x01  # break the tag only: the ciphertext would decrypt to the real plaintext
    out = bytearray(b"\xaa" * len(SECRET))
    with pytest.raises(DecryptionError):
        keys.open_into(blob, CTX, out)
    assert out == bytes(len(SECRET))


# -- context binding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(SealContext("130786049", CTX.kind, CTX.item_id, CTX.version), id="tenant"),
        pytest.param(SealContext(CTX.tenant, "resource/Observation", CTX.item_id, 3), id="kind"),
        pytest.param(SealContext(CTX.tenant, CTX.kind, "another-id", CTX.version), id="id"),
        pytest.param(SealContext(CTX.tenant, CTX.kind, CTX.item_id, 4), id="version"),
    ],
)
def test_moved_ciphertext_fails(keys: DataKeys, other: SealContext) -> None:
    blob = keys.seal(SECRET, CTX)
    with pytest.raises(DecryptionError) as info:
        keys.open(blob, other)
    assert "Dupont" not in str(info.value)


def test_context_encoding_is_unambiguous() -> None:
    """Fields cannot bleed into each other (no separator to forge)."""
    pairs = [
        (SealContext("ab", "c", "d", 1), SealContext("a", "bc", "d", 1)),
        (SealContext("a", "b", "c1", 1), SealContext("a", "b", "c", 11)),
        (SealContext("a", "b", "c", "1\x00"), SealContext("a", "b", "c", 1)),
    ]
    for left, right in pairs:
        assert left.aad() != right.aad()
    assert SealContext("t", "k", "i", 1).aad().startswith(b"hdsvault/seal/v1")
    # An int version and its decimal string are the same context, by design.
    assert SealContext("t", "k", "i", 12).aad() == SealContext("t", "k", "i", "12").aad()


@pytest.mark.parametrize(
    "args",
    [
        ("", "k", "i", 1),
        ("t", "", "i", 1),
        ("t", "k", "", 1),
        ("t", "k", "i", ""),
        ("t", "k", "i", True),
    ],
)
def test_context_rejects_empty_or_wrong_fields(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        SealContext(*args)  # type: ignore[arg-type]


# -- tampering ----------------------------------------------------------------------------------


def _flip_positions(blob: bytes) -> dict[str, int]:
    return {
        "format": 0,
        "key_version": 4,
        "nonce": 5 + 6,
        "body": 17 + len(SECRET) // 2,
        "tag": len(blob) - 1,
    }


@pytest.mark.parametrize("where", ["format", "key_version", "nonce", "body", "tag"])
def test_flipped_bit_fails(keys: DataKeys, where: str) -> None:
    blob = keys.seal(SECRET, CTX)
    pos = _flip_positions(blob)[where]
    for bit in (0x01, 0x80):
        damaged = bytearray(blob)
        damaged[pos] ^= bit
        with pytest.raises(DecryptionError):
            keys.open(bytes(damaged), CTX)


def test_every_single_bit_flip_fails(keys: DataKeys) -> None:
    blob = keys.seal(b"short", CTX)
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 1 << (i % 8)
        with pytest.raises(DecryptionError):
            keys.open(damaged, CTX)


@pytest.mark.parametrize("cut", [1, 16, 17, len(SECRET) + OVERHEAD - 1])
def test_truncated_fails(keys: DataKeys, cut: int) -> None:
    blob = keys.seal(SECRET, CTX)
    with pytest.raises(DecryptionError):
        keys.open(blob[:-cut], CTX)


def test_extended_fails(keys: DataKeys) -> None:
    with pytest.raises(DecryptionError):
        keys.open(keys.seal(SECRET, CTX) + b"\x00", CTX)


def test_garbage_and_empty_fail_cleanly(keys: DataKeys) -> None:
    for junk in (b"", b"\x01", os.urandom(OVERHEAD), b"\x01" + os.urandom(100)):
        with pytest.raises(DecryptionError):
            keys.open(junk, CTX)


def test_wrong_key_fails() -> None:
    blob = DataKeys({1: K1}, 1).seal(SECRET, CTX)
    with pytest.raises(DecryptionError, match="authentication failed"):
        DataKeys({1: K2}, 1).open(blob, CTX)


def test_unknown_key_version_fails(keys: DataKeys) -> None:
    blob = DataKeys({5: K2}, 5).seal(SECRET, CTX)
    with pytest.raises(DecryptionError, match="version 5") as info:
        keys.open(blob, CTX)
    assert isinstance(info.value, CryptoError)


def test_error_messages_carry_no_secrets(keys: DataKeys) -> None:
    blob = keys.seal(SECRET, CTX)
    with pytest.raises(DecryptionError) as info:
        DataKeys({1: K2}, 1).open(blob, CTX)
    message = str(info.value)
    assert K1.hex() not in message and K2.hex() not in message
    assert "Dupont" not in message
    assert CTX.item_id in message  # but it does say which item
    assert "K1" not in repr(keys) and K1.hex() not in repr(keys)


# -- nonces, versions, rotation -----------------------------------------------------------------


def test_two_seals_differ(keys: DataKeys) -> None:
    a, b = keys.seal(SECRET, CTX), keys.seal(SECRET, CTX)
    assert a != b
    assert a[5:17] != b[5:17]  # fresh nonce each time
    assert keys.open(a, CTX) == keys.open(b, CTX) == SECRET


def test_key_version_of() -> None:
    assert DataKeys.key_version_of(DataKeys({1: K1}, 1).seal(SECRET, CTX)) == 1
    blob = DataKeys({2**32 - 1: K1}, 2**32 - 1).seal(SECRET, CTX)
    assert DataKeys.key_version_of(memoryview(blob)) == 2**32 - 1
    with pytest.raises(DecryptionError):
        DataKeys.key_version_of(b"\x01\x00\x00")
    with pytest.raises(DecryptionError, match="format"):
        DataKeys.key_version_of(b"\x02" + bytes(40))


def test_rotation_opens_old_versions() -> None:
    old = DataKeys({1: K1}, 1)
    blob_v1 = old.seal(SECRET, CTX)
    rotated = DataKeys({1: K1, 2: K2}, 2)
    assert rotated.current_version == 2
    assert rotated.versions == (1, 2)
    assert rotated.open(blob_v1, CTX) == SECRET
    blob_v2 = rotated.seal(SECRET, CTX)
    assert DataKeys.key_version_of(blob_v2) == 2
    assert rotated.open(blob_v2, CTX) == SECRET
    with pytest.raises(DecryptionError):
        old.open(blob_v2, CTX)  # v1-only holder cannot open v2


def test_key_version_in_header_is_authenticated() -> None:
    """Rewriting the version to point at another held key fails (even with the same key)."""
    both = DataKeys({1: K1, 2: K1}, 1)  # same key under two versions
    blob = bytearray(both.seal(SECRET, CTX))
    blob[1:5] = (2).to_bytes(4, "big")
    with pytest.raises(DecryptionError):
        both.open(blob, CTX)


@pytest.mark.parametrize(
    ("keys_", "current", "match"),
    [
        ({1: b"short"}, 1, "expected 32"),
        ({1: K1}, 2, "current data-key version 2"),
        ({-1: K1}, -1, "uint32"),
        ({2**32: K1}, 2**32, "uint32"),
        ({}, 1, "held: none"),
    ],
)
def test_datakeys_validation(keys_: dict[int, bytes], current: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataKeys(keys_, current)
