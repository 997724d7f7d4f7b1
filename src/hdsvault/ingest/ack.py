"""ACK messages (original acknowledgement mode) and the conventions hdsvault follows.

- ``AA`` application accept: the message is stored and every resource it maps to is
  written (one transaction).
- ``AE`` application error: the message was understood and is stored (sealed), but its
  content cannot be applied (a required field missing, a malformed value, a FHIR validation
  failure): nothing of it is written. Resending the same message gets the same AE; a
  corrected message needs a new control id.
- ``AR`` application reject: the message cannot be processed at all (not HL7, no MSH-10,
  unknown sending application, unsupported type or version, processing id not P/T/D): nothing
  is written and, when the sender is unknown, nothing is stored either.

An ERR segment (v2.5 layout) accompanies AE and AR: ERR-2 the location (``PID^1^3``),
ERR-3 the error code of HL7 table 0357 (100 segment sequence error, 101 required field
missing, 102 data type error, 200 unsupported message type, 201 unsupported event code,
202 unsupported processing id, 203 unsupported version id, 204 unknown key identifier,
207 application internal error), ERR-4 severity ``E``, ERR-8 a human message.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

_TEXTS = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}


def _escape(
    value: str, fs: str = "|", comp: str = "^", rep: str = "~", esc: str = "\\", sub: str = "&"
) -> str:
    value = value.replace(esc, f"{esc}E{esc}")
    for ch, code in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        value = value.replace(ch, f"{esc}{code}{esc}")
    return value.replace("\r", " ").replace("\n", " ")


def build(
    code: str,
    *,
    control_id: str,
    receiving_app: str,
    receiving_fac: str,
    sending_app: str = "",
    sending_fac: str = "",
    trigger: str = "",
    version: str = "2.5",
    error_code: str | None = None,
    where: str = "",
    text: str = "",
) -> str:
    """The ACK text (segments separated by CR, no MLLP framing)."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            receiving_app,
            receiving_fac,
            _escape(sending_app),
            _escape(sending_fac),
            now,
            "",
            f"ACK^{_escape(trigger)}^ACK",
            "ACK" + secrets.token_hex(8),
            "P",
            _escape(version or "2.5"),
        ]
    )
    msa = "|".join(["MSA", code, _escape(control_id), _escape(text)[:80] if code != "AA" else ""])
    segments = [msh, msa.rstrip("|")]
    if code != "AA" and error_code:
        err = "|".join(
            [
                "ERR",
                "",
                where,
                f"{error_code}^{_TEXTS.get(error_code, 'Error')}^HL70357",
                "E",
                "",
                "",
                "",
                _escape(text)[:250],
            ]
        )
        segments.append(err)
    return "\r".join(segments) + "\r"
