"""Throwaway SoftHSM2 tokens: a real PKCS#11 module for the HSM key provider tests.

SoftHSM2 finds its tokens through a configuration file named by the ``SOFTHSM2_CONF``
environment variable (default ``/etc/softhsm/softhsm2.conf``, whose token directory is
machine-wide and root-owned). :func:`init_token` writes a private configuration whose
``directories.tokendir`` is a temporary directory, so tests never see or touch the machine's
tokens, and **sets ``SOFTHSM2_CONF`` in ``os.environ`` of the current process**: the module
reads the variable when a PKCS#11 application calls ``C_Initialize``, i.e. when
``pkcs11.lib(module)`` is first loaded, so the variable must be in place before that. Pass
``set_env=False`` to leave the process environment alone (e.g. to hand the path to a child
process); :func:`restore_env` undoes the change.

SoftHSM builds its slot list at ``C_Initialize``: a token created afterwards by
``softhsm2-util`` (another process) is invisible to an already-initialised library until it
is re-initialised. :func:`open_token` handles that, at the price of invalidating every
session opened earlier in this process on the same module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SoftHSMToken",
    "find_softhsm_module",
    "init_token",
    "missing_requirements",
    "open_token",
    "restore_env",
]

_MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/*/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHSMToken:
    """What a test needs to use the token through any PKCS#11 client."""

    module: str
    """Path of ``libsofthsm2.so`` (the PKCS#11 module to load)."""
    token_label: str
    pin: str
    """User PIN (``CKU_USER``): what the application logs in with."""
    so_pin: str
    """Security officer PIN: re-initialises the token or resets the user PIN."""
    conf_path: Path
    """The ``softhsm2.conf`` to export as ``SOFTHSM2_CONF``."""
    token_dir: Path
    previous_conf: str | None = None
    """``SOFTHSM2_CONF`` before :func:`init_token` changed it (for :func:`restore_env`)."""


def find_softhsm_module() -> str | None:
    """Path of the SoftHSM2 PKCS#11 module, or ``None`` if it is not installed."""
    for pattern in _MODULE_CANDIDATES:
        matches = sorted(Path("/").glob(pattern.lstrip("/")))
        if matches:
            return str(matches[0])
    return None


def missing_requirements() -> str | None:
    """Explain what prevents creating a token, or ``None`` (for ``require_component``)."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not found; run scripts/setup-system.sh (package softhsm2)"
    if find_softhsm_module() is None:
        return "libsofthsm2.so not found; run scripts/setup-system.sh (package softhsm2)"
    return None


def init_token(
    base_dir: Path,
    *,
    label: str = "hdsvault-test",
    pin: str = "1234",
    so_pin: str = "12345678",
    set_env: bool = True,
) -> SoftHSMToken:
    """Create a fresh token in ``base_dir`` and return how to reach it.

    ``base_dir`` must exist and should be empty (a test temp dir). With ``set_env`` (default)
    ``SOFTHSM2_CONF`` is set in this process's environment, see the module docstring.
    """
    problem = missing_requirements()
    if problem is not None:
        raise RuntimeError(problem)
    module = find_softhsm_module()
    assert module is not None
    token_dir = base_dir / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    conf_path = base_dir / "softhsm2.conf"
    conf_path.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf_path)}
    result = subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            pin,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"softhsm2-util --init-token failed ({result.returncode}): "
            f"{result.stderr.strip()} {result.stdout.strip()}"
        )
    previous = os.environ.get("SOFTHSM2_CONF")
    if set_env:
        os.environ["SOFTHSM2_CONF"] = str(conf_path)
    return SoftHSMToken(
        module=module,
        token_label=label,
        pin=pin,
        so_pin=so_pin,
        conf_path=conf_path,
        token_dir=token_dir,
        previous_conf=previous,
    )


def restore_env(token: SoftHSMToken) -> None:
    """Put ``SOFTHSM2_CONF`` back as it was before :func:`init_token`."""
    if token.previous_conf is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = token.previous_conf


def open_token(token: SoftHSMToken) -> Any:
    """Return the ``pkcs11.Token`` for ``token`` (python-pkcs11), re-initialising if needed.

    Typed ``Any`` because python-pkcs11 ships no usable stubs for its Cython core.
    """
    import pkcs11

    if os.environ.get("SOFTHSM2_CONF") != str(token.conf_path):
        raise RuntimeError(
            f"SOFTHSM2_CONF is not {token.conf_path}: the module would not find the token"
        )
    lib = pkcs11.lib(token.module)
    try:
        return lib.get_token(token_label=token.token_label)
    except pkcs11.NoSuchToken:
        # Token created after this process initialised the module (see module docstring).
        lib.reinitialize()
        return lib.get_token(token_label=token.token_label)
