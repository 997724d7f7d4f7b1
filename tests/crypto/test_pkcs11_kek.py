"""The HSM KEK, end to end against a real SoftHSM2 token (fixture ``softhsm_token``).

Each test uses its own key label, so tests do not depend on each other and other suites can
share the session token. Tests that need a process whose PKCS#11 state is pristine (wrong PIN
checked by the token itself, a second process unwrapping) run a child Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from hdsvault.config import KekSettings
from hdsvault.crypto.errors import DecryptionError, KekError
from hdsvault.crypto.kek import KeyEncryptionKey, load_kek
from hdsvault.crypto.pkcs11_kek import Pkcs11KEK

from support import softhsm
from support.softhsm import SoftHSMToken

pytestmark = pytest.mark.hsm

DATA_KEY = bytes(range(32))
CTX = b"hdsvault/tenant-key/v1\x00750712184\x00data\x001"


@pytest.fixture
def token(softhsm_token: SoftHSMToken) -> SoftHSMToken:
    # Makes sure this process's PKCS#11 library sees the token (see support/softhsm.py).
    softhsm.open_token(softhsm_token)
    return softhsm_token


@pytest.fixture
def label() -> str:
    return f"kek-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kek(token: SoftHSMToken, label: str) -> Iterator[Pkcs11KEK]:
    with Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label) as k:
        yield k


@contextmanager
def raw_session(token: SoftHSMToken) -> Iterator[Any]:
    """A python-pkcs11 session seeing private objects, whatever the login state."""
    tok = softhsm.open_token(token)
    try:
        session = tok.open(rw=True, user_pin=token.pin)
    except p11.UserAlreadyLoggedIn:  # a KEK of this process is logged in: share its login
        session = tok.open()
    try:
        yield session
    finally:
        session.close()


_ATTRS = (
    Attribute.KEY_TYPE,
    Attribute.VALUE_LEN,
    Attribute.TOKEN,
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.LOCAL,
)


def keys_labelled(token: SoftHSMToken, label: str) -> list[dict[Attribute, Any]]:
    """Attributes of the secret keys carrying ``label`` (read while the session is open)."""
    with raw_session(token) as s:
        found = s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        return [{a: obj[a] for a in _ATTRS} for obj in found]


def run_child(token: SoftHSMToken, code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh Python process on the same token; it prints one JSON object."""
    env = {**os.environ, "SOFTHSM2_CONF": str(token.conf_path)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# -- creation -----------------------------------------------------------------------------------


def test_ensure_key_creates_a_non_extractable_key(token: SoftHSMToken, label: str) -> None:
    with pytest.raises(KekError, match=f"no AES key labelled '{label}'"):
        Pkcs11KEK(token.module, token.token_label, token.pin, label)
    assert keys_labelled(token, label) == []

    with Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label) as kek:
        assert isinstance(kek, KeyEncryptionKey)
        assert kek.kek_id == f"pkcs11:{token.token_label}/{label}"
        (key,) = keys_labelled(token, label)
        assert key[Attribute.KEY_TYPE] == KeyType.AES
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.TOKEN] is True  # persistent token object
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.LOCAL] is True  # generated inside the token

    # Idempotent: a second run finds the key instead of adding another one.
    Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label).close()
    assert len(keys_labelled(token, label)) == 1


def test_key_value_cannot_be_read_or_wrapped_out(
    kek: Pkcs11KEK, token: SoftHSMToken, label: str
) -> None:
    with raw_session(token) as s:
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]
        # Not even wrapped by another key of the same token.
        wrapper = s.generate_key(KeyType.AES, 256, label=f"wrapper-{label}")
        with pytest.raises((p11.KeyUnextractable, p11.KeyNotWrappable)):
            wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


# -- wrapping -----------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(kek: Pkcs11KEK) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    assert wrapped[0] == 0x01
    assert len(wrapped) == 1 + 12 + len(DATA_KEY) + 16
    assert DATA_KEY not in wrapped
    assert kek.wrap(DATA_KEY, CTX) != wrapped  # fresh IV
    assert kek.unwrap(wrapped, CTX) == DATA_KEY
    assert kek.unwrap(kek.wrap(b"", b""), b"") == b""


def test_wrong_context_fails(kek: Pkcs11KEK) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    for other in (CTX.replace(b"750712184", b"130786049"), CTX[:-1] + b"2", b""):
        with pytest.raises(DecryptionError) as info:
            kek.unwrap(wrapped, other)
        assert kek.kek_id in str(info.value)
    assert kek.unwrap(wrapped, CTX) == DATA_KEY  # the session is still usable


def test_tampered_or_truncated_fails(kek: Pkcs11KEK) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    for i in (0, 3, 20, len(wrapped) - 1):
        damaged = bytearray(wrapped)
        damaged[i] ^= 0x01
        with pytest.raises(DecryptionError):
            kek.unwrap(bytes(damaged), CTX)
    for n in (0, 13, 28, len(wrapped) - 1):
        with pytest.raises(DecryptionError):
            kek.unwrap(wrapped[:n], CTX)


def test_other_hsm_key_fails(token: SoftHSMToken, kek: Pkcs11KEK, label: str) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    with (
        Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label + "-b") as other,
        pytest.raises(DecryptionError),
    ):
        other.unwrap(wrapped, CTX)


def test_second_instance_new_session_unwraps(token: SoftHSMToken, label: str) -> None:
    with Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label) as first:
        wrapped = first.wrap(DATA_KEY, CTX)
        first_login = first._login
    # `first` closed its session; a new instance logs in again on a new session.
    with Pkcs11KEK(token.module, token.token_label, token.pin, label) as second:
        assert second._login is not first_login
        assert second.unwrap(wrapped, CTX) == DATA_KEY


def test_another_process_unwraps(kek: Pkcs11KEK, token: SoftHSMToken, label: str) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    out = run_child(
        token,
        """
        import json, sys
        from hdsvault.crypto.pkcs11_kek import Pkcs11KEK
        module, token_label, pin, label, wrapped, ctx = sys.argv[1:]
        with Pkcs11KEK(module, token_label, pin, label) as kek:
            key = kek.unwrap(bytes.fromhex(wrapped), bytes.fromhex(ctx))
            rewrapped = kek.wrap(key, bytes.fromhex(ctx))
        print(json.dumps({"key": key.hex(), "rewrapped": rewrapped.hex()}))
        """,
        token.module,
        token.token_label,
        token.pin,
        label,
        wrapped.hex(),
        CTX.hex(),
    )
    assert bytes.fromhex(out["key"]) == DATA_KEY
    assert kek.unwrap(bytes.fromhex(out["rewrapped"]), CTX) == DATA_KEY


def test_concurrent_threads_share_the_session(kek: Pkcs11KEK) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                key = bytes([n, i]) * 16
                ctx = b"ctx-%d-%d" % (n, i)
                assert kek.unwrap(kek.wrap(key, ctx), ctx) == key
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_recovers_a_lost_session(kek: Pkcs11KEK) -> None:
    wrapped = kek.wrap(DATA_KEY, CTX)
    kek._login.session.close()  # as if the HSM had dropped it
    assert kek.unwrap(wrapped, CTX) == DATA_KEY


def test_closed_instance_refuses(token: SoftHSMToken, label: str) -> None:
    kek = Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label)
    kek.close()
    kek.close()  # idempotent
    with pytest.raises(KekError, match="closed"):
        kek.wrap(DATA_KEY, CTX)


# -- refusals -----------------------------------------------------------------------------------


def test_wrong_pin_rejected_by_token(kek: Pkcs11KEK, token: SoftHSMToken, label: str) -> None:
    """In a fresh process the token itself checks the PIN (CKR_PIN_INCORRECT)."""
    out = run_child(
        token,
        """
        import json, sys
        from hdsvault.crypto.errors import KekError
        from hdsvault.crypto.pkcs11_kek import Pkcs11KEK
        module, token_label, label = sys.argv[1:]
        try:
            Pkcs11KEK(module, token_label, "0000", label)
        except KekError as exc:
            print(json.dumps({"error": str(exc)}))
        else:
            print(json.dumps({"error": None}))
        """,
        token.module,
        token.token_label,
        label,
    )
    assert out["error"] is not None
    assert "rejected the PIN" in out["error"]
    assert "kek.pkcs11.pin" in out["error"]
    assert token.pin not in out["error"].replace(token.token_label, "")


def test_wrong_pin_in_a_logged_in_process(kek: Pkcs11KEK, token: SoftHSMToken, label: str) -> None:
    """While this process is logged in, the token cannot re-check a PIN: we compare it."""
    with pytest.raises(KekError, match="different PIN"):
        Pkcs11KEK(token.module, token.token_label, "0000", label)
    assert kek.unwrap(kek.wrap(DATA_KEY, CTX), CTX) == DATA_KEY  # the good one is unharmed


def test_missing_token(token: SoftHSMToken) -> None:
    with pytest.raises(KekError) as info:
        Pkcs11KEK(token.module, "no-such-token", token.pin, "x")
    message = str(info.value)
    assert "no token labelled 'no-such-token'" in message
    assert repr(token.token_label) in message  # lists what is there
    assert "softhsm2-util --init-token" in message


def test_missing_module(tmp_path: Any) -> None:
    with pytest.raises(KekError, match="not found"):
        Pkcs11KEK(tmp_path / "libnothing.so", "t", "1234")


def test_refuses_an_extractable_key(token: SoftHSMToken, label: str) -> None:
    with raw_session(token) as s:
        s.generate_key(
            KeyType.AES,
            256,
            label=label,
            store=True,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    with pytest.raises(KekError, match="copied off the HSM"):
        Pkcs11KEK(token.module, token.token_label, token.pin, label)


def test_refuses_duplicate_labels(token: SoftHSMToken, label: str) -> None:
    with raw_session(token) as s:
        for _ in range(2):
            s.generate_key(KeyType.AES, 256, label=label, store=True)
    with pytest.raises(KekError, match="2 AES keys labelled"):
        Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label)


def test_load_kek_pkcs11_provider(token: SoftHSMToken, label: str) -> None:
    Pkcs11KEK.ensure_key(token.module, token.token_label, token.pin, label).close()
    settings = KekSettings.model_validate(
        {
            "provider": "pkcs11",
            "pkcs11": {
                "module": token.module,
                "token_label": token.token_label,
                "key_label": label,
                "pin": token.pin,
            },
        }
    )
    kek = load_kek(settings, token.conf_path)  # kek_file is ignored by this provider
    try:
        assert isinstance(kek, Pkcs11KEK)
        assert kek.unwrap(kek.wrap(DATA_KEY, CTX), CTX) == DATA_KEY
    finally:
        kek.close()


def test_pkcs11_python_sees_gcm(token: SoftHSMToken) -> None:
    """The mechanism the provider relies on is offered by this SoftHSM2 build."""
    tok = softhsm.open_token(token)
    assert Mechanism.AES_GCM in tok.slot.get_mechanisms()
    assert pkcs11.GCMParams(b"\x00" * 12, b"", 128).tag_bits == 128
