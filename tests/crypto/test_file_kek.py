"""The file KEK: private from creation, refused when exposed or malformed, binds contexts."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hdsvault.config import KekSettings
from hdsvault.crypto.errors import DecryptionError, KekError
from hdsvault.crypto.kek import FileKEK, KeyEncryptionKey, load_kek

KEY = bytes(range(32))
CTX = b"hdsvault/tenant-key/v1\x00750712184\x00data\x001"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def kek_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keys" / "kek.key"


def test_create_is_private(kek_path: Path) -> None:
    kek = FileKEK.create(kek_path)
    assert _mode(kek_path) == 0o600
    assert _mode(kek_path.parent) == 0o700
    assert isinstance(kek, KeyEncryptionKey)
    assert kek.kek_id.startswith("file:") and len(kek.kek_id) == len("file:") + 16
    # No temporary file left behind.
    assert sorted(p.name for p in kek_path.parent.iterdir()) == ["kek.key"]


def test_create_private_even_with_permissive_umask(kek_path: Path) -> None:
    old = os.umask(0)
    try:
        FileKEK.create(kek_path)
    finally:
        os.umask(old)
    assert _mode(kek_path) == 0o600
    assert _mode(kek_path.parent) == 0o700


def test_file_format_and_reload(kek_path: Path) -> None:
    created = FileKEK.create(kek_path)
    lines = kek_path.read_text().split("\n")
    assert lines[0] == "hdsvault-kek v1"
    assert len(base64.b64decode(lines[1], validate=True)) == 32
    assert lines[2:] == [""]
    loaded = FileKEK.load(kek_path)
    assert loaded.kek_id == created.kek_id
    assert loaded.unwrap(created.wrap(KEY, CTX), CTX) == KEY


def test_two_creates_give_different_keys(tmp_path: Path) -> None:
    a = FileKEK.create(tmp_path / "a.key")
    b = FileKEK.create(tmp_path / "b.key")
    assert a.kek_id != b.kek_id


def test_create_refuses_overwrite(kek_path: Path) -> None:
    FileKEK.create(kek_path)
    before = kek_path.read_bytes()
    with pytest.raises(KekError, match="already exists"):
        FileKEK.create(kek_path)
    assert kek_path.read_bytes() == before


def test_kek_id_does_not_reveal_key(kek_path: Path) -> None:
    kek = FileKEK.create(kek_path)
    key_b64 = kek_path.read_text().split("\n")[1]
    key = base64.b64decode(key_b64)
    assert key.hex()[:16] not in kek.kek_id
    assert key_b64 not in repr(kek) and key.hex() not in repr(kek)


# -- loading refusals ---------------------------------------------------------------------------


def test_load_missing(kek_path: Path) -> None:
    with pytest.raises(KekError) as info:
        FileKEK.load(kek_path)
    message = str(info.value)
    assert str(kek_path) in message
    assert "hdsvault init" in message and "kek.file.path" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660, 0o601])
def test_load_refuses_group_or_other_access(kek_path: Path, mode: int) -> None:
    FileKEK.create(kek_path)
    kek_path.chmod(mode)
    with pytest.raises(KekError) as info:
        FileKEK.load(kek_path)
    message = str(info.value)
    assert str(kek_path) in message
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {kek_path}" in message
    kek_path.chmod(0o600)
    FileKEK.load(kek_path)  # the advised fix works


def test_load_accepts_owner_read_only(kek_path: Path) -> None:
    FileKEK.create(kek_path)
    kek_path.chmod(0o400)
    FileKEK.load(kek_path)


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


_GOOD_B64 = base64.b64encode(KEY)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_GOOD_B64 + b"\n", id="no-header"),
        pytest.param(b"hdsvault-kek v2\n" + _GOOD_B64 + b"\n", id="unknown-version"),
        pytest.param(b"hdsvault-kek v1\n", id="no-key"),
        pytest.param(b"hdsvault-kek v1\nnot*base64!\n", id="bad-base64"),
        pytest.param(b"hdsvault-kek v1\n" + base64.b64encode(KEY[:16]) + b"\n", id="short-key"),
        pytest.param(b"hdsvault-kek v1\n" + _GOOD_B64 + b"\nextra\n", id="extra-line"),
        pytest.param(KEY, id="raw-binary"),
        pytest.param(b"hdsvault-kek v1\n" + b"A" * 10000, id="huge"),
    ],
)
def test_load_refuses_wrong_content(kek_path: Path, content: bytes) -> None:
    _write_private(kek_path, content)
    with pytest.raises(KekError) as info:
        FileKEK.load(kek_path)
    message = str(info.value)
    assert str(kek_path) in message
    assert "restore it from your key backup" in message
    assert _GOOD_B64.decode() not in message  # never echo key material


def test_load_accepts_crlf_and_missing_final_newline(kek_path: Path, tmp_path: Path) -> None:
    _write_private(kek_path, b"hdsvault-kek v1\r\n" + _GOOD_B64 + b"\r\n")
    other = tmp_path / "other.key"
    _write_private(other, b"hdsvault-kek v1\n" + _GOOD_B64)
    assert FileKEK.load(kek_path).kek_id == FileKEK.load(other).kek_id == FileKEK(KEY).kek_id


def test_load_refuses_directory(tmp_path: Path) -> None:
    d = tmp_path / "kek.key"
    d.mkdir(mode=0o700)
    with pytest.raises(KekError, match="not a regular file"):
        FileKEK.load(d)


def test_load_refuses_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "kek.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KekError, match="FIFO"):
        FileKEK.load(fifo)


def test_load_follows_symlink_but_checks_target(kek_path: Path, tmp_path: Path) -> None:
    """Secrets mounts are often symlinks: allowed, but the target's mode is what counts."""
    FileKEK.create(kek_path)
    link = tmp_path / "link.key"
    link.symlink_to(kek_path)
    FileKEK.load(link)
    kek_path.chmod(0o644)
    with pytest.raises(KekError, match="chmod 600"):
        FileKEK.load(link)


# -- wrapping -----------------------------------------------------------------------------------


def test_wrap_round_trip_and_format(kek_path: Path) -> None:
    kek = FileKEK.create(kek_path)
    wrapped = kek.wrap(KEY, CTX)
    assert wrapped[0] == 0x01
    assert len(wrapped) == 1 + 12 + 32 + 16
    assert KEY not in wrapped
    assert kek.wrap(KEY, CTX) != wrapped  # random nonce
    assert kek.unwrap(wrapped, CTX) == KEY


def test_wrong_kek_fails_to_unwrap(tmp_path: Path) -> None:
    a = FileKEK.create(tmp_path / "a.key")
    b = FileKEK.create(tmp_path / "b.key")
    with pytest.raises(DecryptionError) as info:
        b.unwrap(a.wrap(KEY, CTX), CTX)
    assert b.kek_id in str(info.value)
    assert KEY.hex() not in str(info.value)


def test_wrong_context_fails(kek_path: Path) -> None:
    kek = FileKEK.create(kek_path)
    wrapped = kek.wrap(KEY, CTX)
    for other in (CTX.replace(b"750712184", b"130786049"), CTX[:-1] + b"2", b""):
        with pytest.raises(DecryptionError):
            kek.unwrap(wrapped, other)


def test_tampered_or_truncated_wrapped_key_fails(kek_path: Path) -> None:
    kek = FileKEK.create(kek_path)
    wrapped = kek.wrap(KEY, CTX)
    for i in (0, 5, 20, len(wrapped) - 1):
        damaged = bytearray(wrapped)
        damaged[i] ^= 0x01
        with pytest.raises(DecryptionError):
            kek.unwrap(bytes(damaged), CTX)
    for n in (0, 1, 28, len(wrapped) - 1):
        with pytest.raises(DecryptionError):
            kek.unwrap(wrapped[:n], CTX)


# -- factory ------------------------------------------------------------------------------------


def test_load_kek_file_provider(kek_path: Path) -> None:
    created = FileKEK.create(kek_path)
    kek = load_kek(KekSettings(), kek_path)
    assert kek.kek_id == created.kek_id
    with pytest.raises(KekError, match="hdsvault init"):
        load_kek(KekSettings(), kek_path.with_name("absent.key"))


def test_load_kek_pkcs11_without_section() -> None:
    settings: Any = SimpleNamespace(provider="pkcs11", pkcs11=None)
    with pytest.raises(KekError, match=r"\[kek.pkcs11\]"):
        load_kek(settings, Path("/nonexistent"))


def test_load_kek_pkcs11_missing_module(tmp_path: Path) -> None:
    settings = KekSettings.model_validate(
        {
            "provider": "pkcs11",
            "pkcs11": {
                "module": str(tmp_path / "no-such-module.so"),
                "token_label": "t",
                "pin": "1234",
            },
        }
    )
    with pytest.raises(KekError, match=r"no-such-module\.so not found"):
        load_kek(settings, tmp_path / "unused.key")
