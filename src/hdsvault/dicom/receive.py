"""pynetdicom's socket reads: one system call per buffer-full instead of one per 4 KiB.

pynetdicom 3.0 reads each PDU with ``AssociationSocket.recv(n)``, which calls
``socket.recv(4096)`` until it has ``n`` bytes, appending every piece to a bytearray. A CT slice
of 525 KB, in PDUs of up to 256 KiB (hdsvault's ``max_pdu``), is then ~130 system calls, ~130
short-lived bytes objects and as many appends, all under the interpreter lock the handler of
the previous instance and the journal's threads also want. :func:`recv` keeps its contract
(exactly ``n`` bytes; fewer only if the peer closed the connection; the socket's time-out and
errors raised as before) and reads into one buffer of ``n`` bytes with ``recv_into``, taking
whatever the kernel holds at each call.

Measured: a no-op C-STORE SCP set up as hdsvault's listener, dcmtk ``storescu`` sending
525 KB files, 100 per round, 8 rounds alternating with pynetdicom's reads: 2.05 -> 1.67 ms per
instance (median of the rounds); larger PDUs (1 MiB) gained nothing more.

Like :mod:`hdsvault.dicom.reactor`, :func:`install` replaces pynetdicom's method only if its
source is the one this was written against (SHA-256 checked; the test suite fails on an
upgrade that changes it, and the listener then keeps pynetdicom's reads with a warning).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import structlog
from pynetdicom.transport import AssociationSocket

log = structlog.get_logger("hdsvault.dicom")

PYNETDICOM_RECV_SHA256 = "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d"
"""SHA-256 of the source of the ``AssociationSocket.recv`` this module re-implements."""

_original = AssociationSocket.recv


def recv(self: Any, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from the association's socket; fewer only if the peer closed it.

    **Blocking**, as pynetdicom's: until every byte is read, the socket's time-out expires
    (``TimeoutError``) or it fails (``OSError``)."""
    buffer = bytearray(nr_bytes)
    got = 0
    with memoryview(buffer) as view:
        while got < nr_bytes:
            n = self.socket.recv_into(view[got:], nr_bytes - got)
            if not n:  # the connection is closed: what was read so far, as pynetdicom does
                break
            got += n
    if got < nr_bytes:
        del buffer[got:]
    return buffer


def original_source_digest() -> str:
    """SHA-256 of the installed pynetdicom's ``AssociationSocket.recv`` source."""
    return hashlib.sha256(inspect.getsource(_original).encode()).hexdigest()


def install() -> bool:
    """Read PDUs with :func:`recv` in this process; False (and a warning) if the installed
    pynetdicom's read is not the one it replaces."""
    if AssociationSocket.recv is recv:
        return True
    if original_source_digest() != PYNETDICOM_RECV_SHA256:
        log.warning("dicom.receive-not-tuned", reason="pynetdicom's socket read changed")
        return False
    AssociationSocket.recv = recv  # type: ignore[method-assign]
    return True
