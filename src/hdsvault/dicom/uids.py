"""Presentation contexts copied for each association without re-validating every UID.

pynetdicom deep-copies the acceptor's supported presentation contexts for every association
it accepts (``transport.RequestHandler._create_association``). hdsvault accepts 170 abstract
syntaxes with 45 transfer syntaxes each, and a deep copy rebuilds every UID through pydicom's
validating constructor (a regular expression per UID): 32 ms per association, measured, paid
before the first C-STORE of every association (many modalities open one per series or per
image). A UID is an immutable string, so a deep copy may return the object itself, as
``copy.deepcopy`` does for ``str``: 2.3 ms per association, the contexts themselves still
copied (each association negotiates its own).
"""

from __future__ import annotations

from typing import Any

from pydicom.uid import UID


def _itself(uid: UID, *_memo: Any) -> UID:
    return uid


def install() -> None:
    """Copy UIDs by reference in this process (idempotent)."""
    if UID.__dict__.get("__deepcopy__") is not _itself:
        UID.__copy__ = _itself  # type: ignore[attr-defined]
        UID.__deepcopy__ = _itself  # type: ignore[attr-defined]
