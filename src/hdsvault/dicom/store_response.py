"""C-STORE responses written straight to bytes, not through a pydicom dataset.

pynetdicom encodes every DIMSE message by building a pydicom ``Dataset`` of its command set,
encoding it once to compute the group length and once more to send it: ~0.15 ms per C-STORE
response on this machine, for seven small elements, paid once per instance received. The
response of a C-STORE is always the same shape (PS3.7 9.3.1.2), so it is packed here directly,
byte-identical to pynetdicom's encoding (tested), and handed to the DUL as one P-DATA.

Only the plain response takes this path: one with an Error Comment or an Offending Element,
a peer whose maximum PDU is too small for it, and every other message go through pynetdicom's
own ``send_msg``. The one difference: pynetdicom's ``EVT_DIMSE_SENT`` is not triggered for
these responses; hdsvault binds no handler to it, and pynetdicom's standard one only logs the
message at debug level.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

_original = DIMSEServiceProvider.send_msg

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
LAST_COMMAND_FRAGMENT = b"\x03"
"""PDV message control header: command (bit 0), last fragment (bit 1)."""


def _element(element: int, value: bytes) -> bytes:
    """A group 0000 element, implicit VR little endian (the command set's encoding)."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def command_set(primitive: C_STORE) -> bytes | None:
    """The encoded command set of a plain C-STORE response, or None (pynetdicom's path)."""
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.Status is None or primitive.MessageIDBeingRespondedTo is None:
        return None
    body = b""
    if primitive.AffectedSOPClassUID is not None:
        body += _element(0x0002, _uid(primitive.AffectedSOPClassUID))
    body += _element(0x0100, struct.pack("<H", C_STORE_RSP))
    body += _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo))
    body += _element(0x0800, struct.pack("<H", NO_DATA_SET))
    body += _element(0x0900, struct.pack("<H", primitive.Status))
    if primitive.AffectedSOPInstanceUID is not None:
        body += _element(0x1000, _uid(primitive.AffectedSOPInstanceUID))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg``, packing plain C-STORE responses directly."""
    if type(primitive) is C_STORE and primitive.MessageIDBeingRespondedTo is not None:
        encoded = command_set(primitive)
        max_pdu = self.maximum_pdu_size
        if encoded is not None and (max_pdu == 0 or len(encoded) <= max_pdu - 6):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, LAST_COMMAND_FRAGMENT + encoded))
            self.dul.send_pdu(pdata)
            return
    _original(self, primitive, context_id)


def install() -> None:
    DIMSEServiceProvider.send_msg = send_msg  # type: ignore[method-assign]
