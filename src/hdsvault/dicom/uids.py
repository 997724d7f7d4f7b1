"""UIDs of each association: presentation contexts copied, and proposed UIDs checked, once.

pynetdicom deep-copies the acceptor's supported presentation contexts for every association
it accepts (``transport.RequestHandler._create_association``). hdsvault accepts 170 abstract
syntaxes with 45 transfer syntaxes each, and a deep copy rebuilds every UID through pydicom's
validating constructor (a regular expression per UID): 32 ms per association, measured, paid
before the first C-STORE of every association (many modalities open one per series or per
image). A UID is an immutable string, so a deep copy may return the object itself, as
``copy.deepcopy`` does for ``str``: 2.3 ms per association.

The contexts themselves are still copied, each association negotiating in its own, but
directly rather than through ``copy``'s generic protocol (``__reduce_ex__``, then a deep copy
of each attribute dictionary): a context holds scalars, UIDs and its list of transfer
syntaxes, so a new context with the same scalars and a new list is a deep copy. 3.7 -> 0.8 ms
for the 170 contexts (2026-11-30). A context holding anything else (a later pynetdicom) is
copied the generic way.

Decoding an A-ASSOCIATE-RQ, pynetdicom checks every UID it carries through ``set_uid``: a
pydicom ``UID`` built, then its validity checked by a regular expression, twice (pynetdicom's
validator, then its conformance warning). dcmtk's ``storescu`` proposes 128 contexts, ~450
UIDs per association, and they are the same ~170 UIDs every time: 2.8 ms to decode the
request, ~60 % of it in ``set_uid`` (cProfile). :func:`set_uid` remembers the result for a
value seen before (the 4,096 most recent: a peer sending new UIDs only churns it) and calls
pynetdicom's own for anything else (``None``, a UID carrying attributes of its own) and for
every value it refuses (so its error names the field); a plain ``UID`` object, once checked,
is returned itself (pynetdicom returns an equal copy; a UID is immutable). The one difference: a
non-conformant UID that pynetdicom accepts is logged at its first use only.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import inspect
from typing import Any

import structlog
from pydicom.uid import UID
from pynetdicom import _config as pynetdicom_config
from pynetdicom import utils as pynetdicom_utils
from pynetdicom.presentation import PresentationContext

log = structlog.get_logger("hdsvault.dicom")

PYNETDICOM_SET_UID_SHA256 = "f917a8035170f79262606ce81ff903350ae59d272c75d6d15684d9dcde3d178b"
"""SHA-256 of the source of the ``pynetdicom.utils.set_uid`` whose results are remembered."""
SET_UID_USERS = ("ae", "dimse_primitives", "pdu_items", "pdu_primitives", "presentation", "utils")
"""pynetdicom's modules that call ``set_uid`` by the name they imported."""

_original_set_uid = pynetdicom_utils.set_uid

_SCALARS = (int, float, str, bytes, type(None))  # bool is an int; UID is a str


def _itself(uid: UID, *_memo: Any) -> UID:
    return uid


def _copied_context(context: PresentationContext, memo: dict[int, Any]) -> PresentationContext:
    """A deep copy of ``context``: its scalars and UIDs shared, its lists of UIDs new."""
    state: dict[str, Any] = {}
    for name, value in vars(context).items():
        if isinstance(value, _SCALARS):
            state[name] = value
        elif type(value) is list and all(isinstance(item, str) for item in value):
            state[name] = list(value)
        else:  # not what this copy was written for: the generic deep copy
            state = copy.deepcopy(vars(context), memo)
            break
    new = object.__new__(type(context))
    memo[id(context)] = new
    vars(new).update(state)
    return new


@functools.lru_cache(maxsize=4096)
def _checked(
    value: str | bytes,
    allow_empty: bool,
    allow_none: bool,
    validate: bool,
    rules: tuple[bool, Any],  # pynetdicom's UID rules in force: a change is a new key
) -> UID | None:
    return _original_set_uid(value, "UID", allow_empty, allow_none, validate)


def set_uid(
    value: Any,
    name: str,
    allow_empty: bool = True,
    allow_none: bool = True,
    validate: bool = True,
) -> UID | None:
    """pynetdicom's ``set_uid``, remembered for plain strings, bytes and UIDs (see module)."""
    flags = (allow_empty, allow_none, validate)
    kind = type(value)
    if kind is str or kind is bytes or (kind is UID and not vars(value)):
        rules = (pynetdicom_config.ENFORCE_UID_CONFORMANCE, pynetdicom_config.VALIDATORS["UI"])
        try:
            checked = _checked(str(value) if kind is UID else value, *flags, rules)
        except (ValueError, TypeError):
            pass  # refused: pynetdicom's own call raises, its message naming the field
        else:
            return value if kind is UID else checked  # a UID: itself (immutable)
    return _original_set_uid(value, name, allow_empty, allow_none, validate)


def original_set_uid_digest() -> str:
    """SHA-256 of the installed pynetdicom's ``set_uid`` source."""
    return hashlib.sha256(inspect.getsource(_original_set_uid).encode()).hexdigest()


def install() -> None:
    """Copy UIDs by reference, presentation contexts directly, and remember UID checks (if
    pynetdicom's ``set_uid`` is the one this was written for), in this process (idempotent)."""
    if UID.__dict__.get("__deepcopy__") is not _itself:
        UID.__copy__ = _itself  # type: ignore[attr-defined]
        UID.__deepcopy__ = _itself  # type: ignore[attr-defined]
    PresentationContext.__deepcopy__ = _copied_context  # type: ignore[attr-defined]
    if pynetdicom_utils.set_uid is set_uid:
        return
    if original_set_uid_digest() != PYNETDICOM_SET_UID_SHA256:
        log.warning("dicom.uid-checks-not-remembered", reason="pynetdicom's set_uid changed")
        return
    for name in SET_UID_USERS:
        module = importlib.import_module(f"pynetdicom.{name}")
        if getattr(module, "set_uid", None) is _original_set_uid:
            module.set_uid = set_uid  # type: ignore[attr-defined]
