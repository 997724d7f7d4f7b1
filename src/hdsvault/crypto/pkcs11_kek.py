"""A key-encryption key that lives in an HSM and never leaves it (PKCS#11).

The KEK is an AES-256 secret key object generated *inside* the token (``C_GenerateKey``) as a
token object with ``CKA_SENSITIVE=TRUE`` and ``CKA_EXTRACTABLE=FALSE``: its value can be
neither read nor wrapped out. Only ``CKA_ENCRYPT``/``CKA_DECRYPT`` are granted. Opening refuses
a key that is extractable or not sensitive, since hdsvault's promise is that the KEK cannot be
copied off the HSM.

Wrapping is ``C_Encrypt`` with ``CKM_AES_GCM``: a fresh random 12-byte IV (host CSPRNG), the
caller's ``context`` as AAD, a 128-bit tag. Why GCM and not ``CKM_AES_KEY_WRAP(_PAD)``: the
RFC 3394/5649 key-wrap mechanisms take no associated data, so a wrapped key could not be bound
to its tenant/purpose/version; and ``C_WrapKey`` wraps key *objects*, whereas tenant keys
are host-side byte strings. The output is the same format as :class:`~hdsvault.crypto.kek.FileKEK`::

    0x01 || IV (12 bytes) || ciphertext || tag (16 bytes)

SoftHSM2 (2.6) and the usual network HSMs support ``CKM_AES_GCM`` with a caller-supplied IV.
No weaker fallback is implemented on purpose: a token that lacks the mechanism is refused at
start with a message saying so (some FIPS-mode HSMs insist on generating the GCM IV
themselves; supporting them would be a new wrap format byte, not a silent downgrade).

Sessions: PKCS#11 login state belongs to the whole process (per token), and python-pkcs11 logs
the whole process out when a logged-in session closes. So all :class:`Pkcs11KEK` instances of
a process that use the same module and token share **one** logged-in session, reference
counted, and serialise every call on it with a lock (a PKCS#11 session must not be used by two
threads at once). The session closes, logging out, when the last instance is closed or
garbage-collected. A session lost underneath us (HSM restart, network blip) is reopened once
and the call retried. Sessions do not survive ``fork()``: open the KEK in the process that
uses it (uvicorn spawns its workers, which is fine).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from hdsvault.crypto.errors import KekError
from hdsvault.crypto.kek import WRAP_FORMAT_V1, _check_wrapped, _unwrap_failed

__all__ = ["DEFAULT_KEY_LABEL", "Pkcs11KEK"]

DEFAULT_KEY_LABEL = "hdsvault-kek"
_IV_SIZE = 12
_TAG_BITS = 128
_KEY_BITS = 256

_T = TypeVar("_T")

# Errors meaning "the session or its object handles are gone": reopen once and retry.
_SESSION_LOST: tuple[type[Exception], ...] = (
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.UserNotLoggedIn,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.KeyHandleInvalid,
    p11.ObjectHandleInvalid,
)
# Errors a token returns for a GCM tag mismatch or malformed ciphertext. SoftHSM2 reports a
# tag mismatch as CKR_GENERAL_ERROR, others as CKR_ENCRYPTED_DATA_INVALID.
_DECRYPT_FAILED: tuple[type[Exception], ...] = (
    p11.GeneralError,
    p11.FunctionFailed,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
)


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(b"hdsvault/pkcs11-pin\x00" + pin.encode("utf-8")).digest()


class _Login:
    """The one logged-in session of this process on (module, token), shared and locked."""

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.refs = 0
        self.generation = 0  # bumped when the session is reopened: key handles go stale
        self._pin_digest = _pin_digest(pin)
        self._pin = pin  # kept only to log in again after a lost session
        self.token = _open_token(module, token_label)
        self.session: Any = _open_session(self.token, token_label, pin)

    def same_pin(self, pin: str) -> bool:
        return hmac.compare_digest(self._pin_digest, _pin_digest(pin))

    def reopen(self) -> None:
        """Replace a lost session (caller holds ``lock``)."""
        _close_quietly(self.session)
        self.session = _open_session(self.token, self.token_label, self._pin)
        self.generation += 1

    def close(self) -> None:
        with self.lock:
            _close_quietly(self.session)
            self.session = None
            self._pin = ""


_registry: dict[tuple[str, str], _Login] = {}
# Re-entrant: a garbage-collected Pkcs11KEK releases its share from whatever code runs then.
_registry_lock = threading.RLock()


def _registry_key(module: str, token_label: str) -> tuple[str, str]:
    return (os.path.realpath(module), token_label)  # one login per module *file* and token


def _acquire(module: str, token_label: str, pin: str) -> _Login:
    key = _registry_key(module, token_label)
    with _registry_lock:
        login = _registry.get(key)
        if login is not None and login.pid == os.getpid() and login.session is not None:
            login.refs += 1  # first, so that no release can close it under us
            if not login.same_pin(pin):
                login.refs -= 1
                raise KekError(
                    f"PKCS#11 token {token_label!r} is already logged in by this process with a "
                    "different PIN: check kek.pkcs11.pin / HDSVAULT_KEK__PKCS11__PIN"
                )
            return login
        login = _Login(module, token_label, pin)
        login.refs = 1
        _registry[key] = login
        return login


def _release(login: _Login) -> None:
    with _registry_lock:
        login.refs -= 1
        if login.refs > 0:
            return
        key = _registry_key(login.module, login.token_label)
        if _registry.get(key) is login:
            del _registry[key]
    if login.pid == os.getpid():  # never touch a parent's session from a forked child
        login.close()


def _close_quietly(session: Any) -> None:
    if session is None:
        return
    # Already closed or logged out by the token: nothing is left to release.
    with contextlib.suppress(p11.PKCS11Error):
        session.close()


def _open_token(module: str, token_label: str) -> Any:
    if not Path(module).is_file():
        raise KekError(
            f"PKCS#11 module {module} not found: install the HSM's PKCS#11 library "
            "(SoftHSM2: apt install softhsm2) or fix kek.pkcs11.module"
        )
    try:
        lib = pkcs11.lib(_loaded_spelling(module))
    except p11.PKCS11Error as exc:
        raise KekError(
            f"cannot load PKCS#11 module {module} ({exc}): is it a PKCS#11 library, built "
            "for this architecture? fix kek.pkcs11.module"
        ) from None
    try:
        token = lib.get_token(token_label=token_label)
    except p11.NoSuchToken:
        raise KekError(
            f"no token labelled {token_label!r} in PKCS#11 module {module} (tokens present: "
            f"{_token_labels(lib)}): initialise it (SoftHSM2: softhsm2-util --init-token "
            f"--free --label {token_label}), check SOFTHSM2_CONF, or fix kek.pkcs11.token_label"
        ) from None
    except p11.MultipleTokensReturned:
        raise KekError(
            f"several tokens are labelled {token_label!r} in {module}: give each a unique label"
        ) from None
    except p11.PKCS11Error as exc:
        raise KekError(f"cannot list the tokens of {module}: {type(exc).__name__}") from None
    try:
        mechanisms = token.slot.get_mechanisms()
    except p11.PKCS11Error as exc:
        raise KekError(
            f"cannot list the mechanisms of token {token_label!r}: {type(exc).__name__}"
        ) from None
    if Mechanism.AES_GCM not in mechanisms:
        raise KekError(
            f"token {token_label!r} does not offer CKM_AES_GCM, which hdsvault needs to wrap "
            "keys bound to their context; use an HSM or firmware that supports it"
        )
    return token


def _loaded_spelling(module: str) -> str:
    """The path under which python-pkcs11 already loaded this module file, else ``module``.

    python-pkcs11 keeps one library object per path *string*; loading the same file under a
    second spelling (e.g. through a symlink) would call ``C_Initialize`` twice and fail with
    CKR_CRYPTOKI_ALREADY_INITIALIZED. Its cache is private, hence the defensive lookup.
    """
    loaded = getattr(pkcs11, "_loaded", None)
    if isinstance(loaded, dict):
        real = os.path.realpath(module)
        for spelling in loaded:
            if isinstance(spelling, str) and os.path.realpath(spelling) == real:
                return spelling
    return module


def _token_labels(lib: Any) -> str:
    try:
        labels = [slot.get_token().label for slot in lib.get_slots(token_present=True)]
    except p11.PKCS11Error:
        return "unknown"
    return ", ".join(repr(label) for label in labels) or "none"


def _open_session(token: Any, token_label: str, pin: str) -> Any:
    where = f"PKCS#11 token {token_label!r}"
    try:
        return token.open(rw=True, user_pin=pin)
    except p11.UserAlreadyLoggedIn:
        # Something else in this process logged in to the token (login is per process): a
        # plain session shares that login.
        try:
            return token.open(rw=True)
        except p11.PKCS11Error as exc:
            raise KekError(f"cannot open a session on {where}: {type(exc).__name__}") from None
    except p11.PinIncorrect:
        raise KekError(
            f"{where} rejected the PIN (CKR_PIN_INCORRECT): check kek.pkcs11.pin or "
            "HDSVAULT_KEK__PKCS11__PIN; repeated failures can lock the token"
        ) from None
    except p11.PinLocked:
        raise KekError(
            f"the user PIN of {where} is locked after too many failures: reset it with the SO "
            "PIN (e.g. pkcs11-tool --init-pin --login --login-type so), then update "
            "kek.pkcs11.pin"
        ) from None
    except (p11.PinExpired, p11.PinInvalid, p11.PinLenRange) as exc:
        raise KekError(
            f"{where} refused the PIN ({type(exc).__name__}): set a valid user PIN on the token "
            "and in kek.pkcs11.pin"
        ) from None
    except p11.UserPinNotInitialized:
        raise KekError(
            f"{where} has no user PIN yet: initialise it (softhsm2-util --init-token ... --pin, "
            "or pkcs11-tool --init-pin)"
        ) from None
    except p11.PKCS11Error as exc:
        raise KekError(f"cannot log in to {where}: {type(exc).__name__}") from None


def _search_keys(session: Any, key_label: str) -> list[Any]:
    # A full listing rather than python-pkcs11's get_key(), which leaves its search operation
    # open (C_FindObjectsFinal pending) when it finds duplicates.
    template = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.LABEL: key_label,
    }
    return list(session.get_objects(template))


def _find_key(session: Any, token_label: str, key_label: str) -> Any:
    found = _search_keys(session, key_label)
    if not found:
        raise KekError(
            f"PKCS#11 token {token_label!r} has no AES key labelled {key_label!r}: run "
            "`hdsvault init` (it creates the key in the HSM) or fix kek.pkcs11.key_label"
        )
    if len(found) > 1:
        raise KekError(
            f"PKCS#11 token {token_label!r} holds {len(found)} AES keys labelled {key_label!r}: "
            "keep the one that wraps your keys and relabel or destroy the others"
        )
    return found[0]


def _check_key(key: Any, token_label: str, key_label: str) -> None:
    """Refuse a KEK that could leave the HSM or cannot do the job."""
    where = f"key {key_label!r} in token {token_label!r}"
    try:
        sensitive = bool(key[Attribute.SENSITIVE])
        extractable = bool(key[Attribute.EXTRACTABLE])
        value_len = int(key[Attribute.VALUE_LEN])
        can_encrypt = bool(key[Attribute.ENCRYPT]) and bool(key[Attribute.DECRYPT])
    except p11.PKCS11Error as exc:
        raise KekError(f"cannot read the attributes of {where}: {type(exc).__name__}") from None
    if extractable or not sensitive:
        raise KekError(
            f"{where} is {'extractable' if extractable else 'not sensitive'}: it could be copied "
            "off the HSM. hdsvault only uses keys generated with CKA_SENSITIVE=TRUE and "
            "CKA_EXTRACTABLE=FALSE (as `hdsvault init` does)"
        )
    if value_len * 8 != _KEY_BITS:
        raise KekError(f"{where} is AES-{value_len * 8}; hdsvault needs AES-{_KEY_BITS}")
    if not can_encrypt:
        raise KekError(f"{where} lacks CKA_ENCRYPT/CKA_DECRYPT, which wrapping needs")


class Pkcs11KEK:
    """The KEK as an AES-256 key inside a PKCS#11 token (see the module docstring).

    Raises :class:`KekError` with the fix when the module, token or key is missing, the PIN is
    wrong, or the key could leave the HSM. Thread-safe. :meth:`close` (or ``with``) releases
    the shared session; garbage collection does too.
    """

    def __init__(
        self,
        module: Path | str,
        token_label: str,
        pin: str,
        key_label: str = DEFAULT_KEY_LABEL,
    ) -> None:
        module_path = str(module)
        self._token_label = token_label
        self._key_label = key_label
        self._kek_id = f"pkcs11:{token_label}/{key_label}"
        self._closed = False
        login = _acquire(module_path, token_label, pin)
        self._finalizer = weakref.finalize(self, _release, login)
        self._login = login
        try:
            with login.lock:
                self._key: Any = _find_key(login.session, token_label, key_label)
                self._key_generation = login.generation
                _check_key(self._key, token_label, key_label)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Pkcs11KEK(kek_id={self._kek_id!r}, module={self._login.module!r})"

    @property
    def kek_id(self) -> str:
        """``pkcs11:<token label>/<key label>``."""
        return self._kek_id

    @classmethod
    def ensure_key(
        cls,
        module: Path | str,
        token_label: str,
        pin: str,
        key_label: str = DEFAULT_KEY_LABEL,
    ) -> Pkcs11KEK:
        """Open the KEK, generating it inside the token first if there is none (``init``).

        Generation runs in the HSM (``CKM_AES_KEY_GEN``, 256 bits) with ``CKA_TOKEN``,
        ``CKA_PRIVATE``, ``CKA_SENSITIVE``, not ``CKA_EXTRACTABLE``, not ``CKA_MODIFIABLE``,
        and only ``CKA_ENCRYPT``/``CKA_DECRYPT``. Run it from one process at a time: two
        concurrent first runs could create two keys with the same label (then opening reports
        the duplicate).
        """
        login = _acquire(str(module), token_label, pin)
        try:
            with login.lock:
                if not _search_keys(login.session, key_label):
                    _generate_key(login.session, token_label, key_label)
                # Duplicates are reported, with their fix, by the constructor below.
            return cls(module, token_label, pin, key_label)
        finally:
            _release(login)

    # -- wrapping ---------------------------------------------------------------------------

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """AES-256-GCM inside the HSM: ``0x01 || IV || ciphertext || tag``, AAD = ``context``."""
        iv = os.urandom(_IV_SIZE)
        params = pkcs11.GCMParams(iv, bytes(context), _TAG_BITS)
        data = bytes(key)
        try:
            sealed: bytes = self._call(
                lambda k: k.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )
        except p11.PKCS11Error as exc:
            raise KekError(f"HSM wrap with {self._kek_id} failed: {type(exc).__name__}") from None
        return b"".join((bytes((WRAP_FORMAT_V1,)), iv, sealed))

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Inverse of :meth:`wrap`; :class:`DecryptionError` if KEK, context or bytes differ."""
        _check_wrapped(wrapped, self._kek_id)
        params = pkcs11.GCMParams(bytes(wrapped[1 : 1 + _IV_SIZE]), bytes(context), _TAG_BITS)
        body = bytes(wrapped[1 + _IV_SIZE :])
        try:
            key: bytes = self._call(
                lambda k: k.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )
        except _DECRYPT_FAILED:
            raise _unwrap_failed(self._kek_id) from None
        except p11.PKCS11Error as exc:
            raise KekError(f"HSM unwrap with {self._kek_id} failed: {type(exc).__name__}") from None
        return key

    def _call(self, op: Callable[[Any], _T]) -> _T:
        """Run ``op(key)`` on the shared session, reopening it once if it was lost."""
        login = self._login
        with login.lock:
            if self._closed:
                raise KekError(f"{self._kek_id} is closed")
            if login.pid != os.getpid():
                raise KekError(
                    f"{self._kek_id} was opened in process {login.pid} and used in forked "
                    f"process {os.getpid()}: PKCS#11 sessions do not survive fork; open the "
                    "KEK after forking"
                )
            for attempt in (1, 2):
                try:
                    if self._key_generation != login.generation:
                        self._key = _find_key(login.session, self._token_label, self._key_label)
                        self._key_generation = login.generation
                    return op(self._key)
                except _SESSION_LOST as exc:
                    if attempt == 2:
                        raise KekError(
                            f"lost the PKCS#11 session to {self._kek_id} and could not recover "
                            f"({type(exc).__name__}): check the HSM and its connection"
                        ) from None
                    login.reopen()
            raise AssertionError("unreachable")

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release this instance's share of the session (logged out when the last one goes)."""
        self._closed = True
        self._key = None
        self._finalizer()

    def __enter__(self) -> Pkcs11KEK:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _generate_key(session: Any, token_label: str, key_label: str) -> None:
    try:
        session.generate_key(
            KeyType.AES,
            _KEY_BITS,
            label=key_label,
            store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.DERIVE: False,
            },
        )
    except p11.PKCS11Error as exc:
        raise KekError(
            f"could not generate key {key_label!r} in PKCS#11 token {token_label!r}: "
            f"{type(exc).__name__} (is the token writable and the user logged in?)"
        ) from None
