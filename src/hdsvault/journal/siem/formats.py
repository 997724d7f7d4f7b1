"""Journal entry -> one RFC 5424 syslog message, as RFC 5424 structured data, CEF or ECS JSON.

Why three formats: SIEMs differ in what they parse without custom work. Structured data is
the syslog standard (rsyslog, syslog-ng, Splunk, Graylog read it); CEF is what ArcSight, QRadar
and Sentinel connectors expect; ECS JSON is what Elastic (and OpenSearch pipelines) index
natively. All three travel in the same RFC 5424 frame, so the transport does not care::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG

Header choices (see docs/siem.md):

- facility 13, "log audit" (RFC 5424 table 1): journal entries are audit records; a receiver
  can route them by facility away from operational logs. Configurable (0..23).
- severity from ``entry.severity``: info 6, notice 5, warning 4, alert 1 (break-the-glass).
- TIMESTAMP is the entry's time in UTC with microseconds; PROCID is ``-`` (the exporter, not
  the process that journaled the act, sends the message); MSGID is ``event_type`` reduced to
  32 printable US-ASCII characters (others become ``_``).

Every renderer is total: any :class:`JournalEntry` (unicode, newlines, quotes, ``]``, ``|``,
``=``, lone surrogates, ``None`` fields) gives valid output, on one line, in valid UTF-8.
Characters that could forge a line or hide text in a SIEM console (Unicode categories Cc, Cf,
Zl, Zp: newlines, NUL, DEL, bidi overrides...) never appear raw. ECS JSON keeps them exactly
(JSON ``\\uXXXX`` escapes); CEF keeps CR and LF exactly (its ``\\n``/``\\r`` escapes); elsewhere
they are shown as the visible text ``\\uXXXX``. Lone surrogates, which UTF-8 cannot carry,
become U+FFFD. These only change values that no well-formed entry has; the journal keeps the
exact value, found through ``log_id`` and ``seq``, which every format carries.

``detail_sealed`` (ciphertext of what could reveal clinical content) is never exported: only a
flag saying that sealed detail exists.
"""

from __future__ import annotations

import json
import re
import socket
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, Protocol

from hdsvault import __version__
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, Severity

__all__ = [
    "DEFAULT_APP_NAME",
    "DEFAULT_SD_ID",
    "ECS_VERSION",
    "FACILITY_LOG_AUDIT",
    "FORMATS",
    "EntryRenderer",
    "Renderer",
    "bind",
    "cef_extension",
    "check_sd_id",
    "display_text",
    "ecs_category",
    "ecs_document",
    "render_cef",
    "render_ecs",
    "render_rfc5424",
    "sd_params",
    "summary",
]

FACILITY_LOG_AUDIT: Final = 13
"""RFC 5424 facility 13, "log audit"."""

DEFAULT_APP_NAME: Final = "hdsvault"

DEFAULT_SD_ID: Final = "hdsvault@32473"
"""SD-ID of the RFC 5424 element. 32473 is the IANA *example* enterprise number (RFC 5612):
a site should use ``hdsvault@<its own PEN>`` so that its SD-IDs cannot collide with others'."""

ECS_VERSION: Final = "8.11.0"

SYSLOG_SEVERITY: Final[dict[str, int]] = {
    Severity.INFO: 6,
    Severity.NOTICE: 5,
    Severity.WARNING: 4,
    Severity.ALERT: 1,
}
"""Our severity -> syslog severity code (RFC 5424 table 2)."""

_SYSLOG_SEVERITY_NAME: Final = {1: "Alert", 4: "Warning", 5: "Notice", 6: "Informational"}

CEF_SEVERITY: Final[dict[str, int]] = {
    Severity.INFO: 3,  # Low (0-3)
    Severity.NOTICE: 5,  # Medium (4-6)
    Severity.WARNING: 7,  # High (7-8)
    Severity.ALERT: 9,  # Very high (9-10): break-the-glass
}

_VERB: Final[dict[str, str]] = {
    Action.CREATE: "create",
    Action.READ: "read",
    Action.UPDATE: "update",
    Action.DELETE: "delete",
    Action.EXECUTE: "execute",
}

_OUTCOME_WORD: Final[dict[str, str]] = {
    Outcome.SUCCESS: "success",
    Outcome.MINOR_FAILURE: "minor failure",
    Outcome.SERIOUS_FAILURE: "serious failure",
    Outcome.MAJOR_FAILURE: "major failure",
}

# ECS event.category from our category; administration events about authentication or
# identities are refined by their event_type prefix (see docs/siem.md).
_ECS_CATEGORY: Final[dict[str, str]] = {
    Category.ACCESS: "database",
    Category.MODIFICATION: "database",
    Category.TRANSFER: "database",
    Category.MOVEMENT: "database",
    Category.ADMINISTRATION: "configuration",
}
_ECS_CATEGORY_BY_PREFIX: Final = (
    ("auth.", "authentication"),
    ("iam.", "iam"),
    ("token.", "iam"),
    ("role.", "iam"),
    ("user.", "iam"),
)
_ECS_TYPE: Final[dict[str, str]] = {
    Action.CREATE: "creation",
    Action.READ: "access",
    Action.UPDATE: "change",
    Action.DELETE: "deletion",
    Action.EXECUTE: "info",
}
ECS_ALLOWED_TYPES: Final[dict[str, frozenset[str]]] = {
    "database": frozenset({"access", "change", "creation", "deletion", "info"}),
    "configuration": frozenset({"access", "change", "creation", "deletion", "info"}),
    "iam": frozenset({"admin", "change", "creation", "deletion", "group", "info", "user"}),
    "authentication": frozenset({"start", "end", "info"}),
}
"""The ECS ``event.type`` values we may pair with each ``event.category`` (ECS 8.x)."""

_SD_ID_RE: Final = re.compile(r"[!-~]{1,32}")
_PRINTUSASCII_RE: Final = re.compile(r"[!-~]+")
_SD_SPECIAL_RE: Final = re.compile(r'["\\\]]')
_CEF_VALUE_SPECIAL_RE: Final = re.compile(r"[\\=\r\n]")
_SD_NAME_FORBIDDEN: Final = frozenset('= ]"')
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
_SUMMARY_PART_MAX: Final = 120


class Renderer(Protocol):
    """The signature every renderer of this module has (extra keyword options have defaults)."""

    def __call__(
        self, entry: JournalEntry, *, hostname: str, app_name: str = DEFAULT_APP_NAME
    ) -> bytes: ...


EntryRenderer = Callable[[JournalEntry], bytes]
"""A renderer with its options bound: what :class:`~.exporter.SiemExporter` calls."""


# --------------------------------------------------------------------------- text hygiene


def display_text(text: str, *, keep: str = "") -> str:
    """``text`` with no character that could break a line or hide text (see module doc).

    Cc/Cf/Zl/Zp characters (except those in ``keep``) become the visible text ``\\uXXXX``
    (``\\UXXXXXXXX`` beyond the BMP); lone surrogates become U+FFFD.
    """
    if text.isprintable():  # fast path: no Cc, Cf, Cs, Zl, Zp (nor Co, Cn, Zs but ' ')
        return text
    out: list[str] = []
    for ch in text:
        if ch in keep:
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cs":
            out.append("\ufffd")
        elif cat in _ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _json_safe(text: str) -> str:
    """JSON text (from ``json.dumps``) with Cc/Cf/Zl/Zp/Cs escaped as ``\\uXXXX``: lossless.

    ``json.dumps(ensure_ascii=False)`` escapes only U+0000..U+001F; DEL, C1, bidi controls and
    U+2028/2029 stay raw. Outside strings a JSON text has none of them, so every occurrence is
    inside a string literal, where a ``\\uXXXX`` escape means the same character.
    """
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            out.append("\\ufffd")
        elif cat in _ESCAPED_CATEGORIES:
            code = ord(ch)
            if code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _header_token(value: str, max_len: int) -> str:
    """An RFC 5424 header field: 1..max_len PRINTUSASCII, ``-`` (NILVALUE) when empty."""
    if _PRINTUSASCII_RE.fullmatch(value) and len(value) <= max_len:
        return value
    token = "".join(ch if "!" <= ch <= "~" else "_" for ch in value[:max_len])
    return token or "-"


def _code(value: Any) -> str:
    """The wire code of an enum member (or of a plain string standing for one).

    Our enums are ``StrEnum``: a member *is* its code as a string, no lookup needed."""
    if isinstance(value, str):
        return value
    return str(value.value) if isinstance(value, Enum) else str(value)


def _rfc3339(t: datetime) -> str | None:
    """RFC 3339 UTC with microseconds; ``None`` if the instant has no UTC year in 1..9999."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        u = t.astimezone(UTC)
    except OverflowError:
        return None
    # isoformat pads the year to 4 digits (strftime("%Y") does not, for years < 1000)
    return u.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _time_text(t: datetime) -> str:
    return _rfc3339(t) or t.isoformat()


def _epoch_millis(t: datetime) -> int | None:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        return int(t.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return None


def _ip(address: str | None) -> str | None:
    """``address`` if it is a literal IPv4/IPv6 address (what ``src``/``source.ip`` require)."""
    if not address:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)  # strict literal syntax, and fast
        except (OSError, ValueError):
            continue
        return address
    return None


def _short(text: str) -> str:
    return text if len(text) <= _SUMMARY_PART_MAX else text[: _SUMMARY_PART_MAX - 1] + "…"


def summary(entry: JournalEntry) -> str:
    """A short human line, e.g. ``fhir.read: token:ab12 read Patient/5f1c -> success``."""
    verb = _VERB.get(entry.action, _code(entry.action))
    outcome = _OUTCOME_WORD.get(entry.outcome, _code(entry.outcome))
    if entry.objects:
        target = _short(entry.objects[0])
        if len(entry.objects) > 1:
            target += f" (+{len(entry.objects) - 1} more)"
    else:
        target = "-"
    return display_text(
        f"{_short(entry.event_type)}: {_short(entry.actor)} {verb} {target} -> {outcome}"
    )


# --------------------------------------------------------------------------- RFC 5424 frame


def _check_facility(facility: int) -> None:
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be in 0..23, not {facility!r}")


def check_sd_id(sd_id: str) -> None:
    """Refuse an SD-ID that is not ``name@<enterprise number>`` in RFC 5424 SD-NAME syntax."""
    name, at, pen = sd_id.partition("@")
    if (
        not _SD_ID_RE.fullmatch(sd_id)
        or any(ch in _SD_NAME_FORBIDDEN for ch in sd_id)
        or not at
        or not name
        or "@" in pen
        or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", pen)
    ):
        raise ValueError(
            f"SD-ID must look like 'name@<private enterprise number>' (RFC 5424 §6.3.2, "
            f"at most 32 printable ASCII, none of '= ]\"'), not {sd_id!r}"
        )


def _frame(
    entry: JournalEntry, *, hostname: str, app_name: str, facility: int, sd: str, msg: str
) -> bytes:
    _check_facility(facility)
    pri = facility * 8 + SYSLOG_SEVERITY.get(entry.severity, 6)
    timestamp = _rfc3339(entry.time) or "-"
    header = (
        f"<{pri}>1 {timestamp} {_header_token(hostname, 255)} {_header_token(app_name, 48)} - "
        f"{_header_token(entry.event_type, 32)} {sd}"
    )
    return f"{header} {msg}".encode() if msg else header.encode()


# --------------------------------------------------------------------------- rfc5424


def _sd_escape(value: str) -> str:
    """PARAM-VALUE escaping, RFC 5424 §6.3.3: ``"``, ``\\`` and ``]`` get a backslash."""
    value = display_text(value)
    if not _SD_SPECIAL_RE.search(value):
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def sd_params(entry: JournalEntry) -> list[tuple[str, str]]:
    """Every public field as (PARAM-NAME, value); ``None`` fields are left out, each object
    is one repeated ``object`` parameter, ``detail_sealed`` is only ``has_sealed_detail``."""
    params: list[tuple[str, str]] = [("log_id", entry.log_id)]
    if entry.seq is not None:
        params.append(("seq", str(entry.seq)))
    params += [
        ("time", _time_text(entry.time)),
        ("event_type", entry.event_type),
        ("category", _code(entry.category)),
        ("action", _code(entry.action)),
        ("outcome", _code(entry.outcome)),
        ("severity", _code(entry.severity)),
        ("actor", entry.actor),
    ]
    optional = (
        ("actor_role", entry.actor_role),
        ("professional_id", entry.professional_id),
        ("on_behalf_of", entry.on_behalf_of),
        ("patient", entry.patient),
        ("purpose_of_use", entry.purpose_of_use),
        ("source_address", entry.source_address),
        ("zone", entry.zone),
        ("request_id", entry.request_id),
    )
    params += [(name, value) for name, value in optional if value is not None]
    params += [("object", obj) for obj in entry.objects]
    params.append(("has_sealed_detail", "true" if entry.detail_sealed else "false"))
    return params


def render_rfc5424(
    entry: JournalEntry,
    *,
    hostname: str,
    app_name: str = DEFAULT_APP_NAME,
    sd_id: str = DEFAULT_SD_ID,
    facility: int = FACILITY_LOG_AUDIT,
) -> bytes:
    """Fields as one SD-ELEMENT ``[sd_id name="value" ...]``; MSG is :func:`summary`."""
    check_sd_id(sd_id)
    body = " ".join(f'{name}="{_sd_escape(value)}"' for name, value in sd_params(entry))
    return _frame(
        entry,
        hostname=hostname,
        app_name=app_name,
        facility=facility,
        sd=f"[{sd_id} {body}]",
        msg=summary(entry),
    )


# --------------------------------------------------------------------------- CEF


def _cef_header(value: str) -> str:
    """CEF header field: ``\\`` and ``|`` escaped; no line breaks (shown as ``\\uXXXX``)."""
    return display_text(value).replace("\\", "\\\\").replace("|", "\\|")


def _cef_value(value: str) -> str:
    """CEF extension value: ``\\``, ``=`` escaped, CR/LF as ``\\r``/``\\n``."""
    value = display_text(value, keep="\r\n")
    if not _CEF_VALUE_SPECIAL_RE.search(value):
        return value
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def cef_extension(entry: JournalEntry) -> list[tuple[str, str]]:
    """(key, unescaped value) pairs of the CEF extension, in output order."""
    ext: list[tuple[str, str]] = []
    millis = _epoch_millis(entry.time)
    if millis is not None:
        ext.append(("rt", str(millis)))
    ext += [
        ("cat", _code(entry.category)),
        ("act", _VERB.get(entry.action, _code(entry.action))),
        ("outcome", "success" if entry.outcome == Outcome.SUCCESS else "failure"),
        ("suser", entry.actor),
    ]
    if entry.actor_role is not None:
        ext.append(("spriv", entry.actor_role))
    if entry.source_address is not None:
        ip = _ip(entry.source_address)
        ext.append(("src", ip) if ip is not None else ("shost", entry.source_address))
    if entry.seq is not None:
        ext.append(("externalId", f"{entry.log_id}:{entry.seq}"))
    ext.append(("msg", summary(entry)))
    custom: list[tuple[str, str, str | None]] = [
        ("cs1", "logId", entry.log_id),
        ("cs2", "requestId", entry.request_id),
        ("cs3", "patient", entry.patient),
        ("cs4", "purposeOfUse", entry.purpose_of_use),
        ("cs5", "professionalId", entry.professional_id),
        ("cs6", "onBehalfOf", entry.on_behalf_of),
        ("cn1", "seq", None if entry.seq is None else str(entry.seq)),
        ("cn2", "fhirOutcome", _code(entry.outcome) if _code(entry.outcome).isdigit() else None),
        ("cn3", "hasSealedDetail", "1" if entry.detail_sealed else "0"),
        ("flexString1", "zone", entry.zone),
        (
            "flexString2",
            "objects",
            json.dumps(list(entry.objects), ensure_ascii=False, separators=(",", ":"))
            if entry.objects
            else None,
        ),
    ]
    for key, label, value in custom:
        if value is not None:
            ext += [(f"{key}Label", label), (key, value)]
    return ext


def render_cef(
    entry: JournalEntry,
    *,
    hostname: str,
    app_name: str = DEFAULT_APP_NAME,
    facility: int = FACILITY_LOG_AUDIT,
) -> bytes:
    """``CEF:0|hdsvault|hdsvault|<version>|<event_type>|<name>|<0-10>|<extension>`` as MSG."""
    verb = _VERB.get(entry.action, _code(entry.action))
    outcome = _OUTCOME_WORD.get(entry.outcome, _code(entry.outcome))
    name = f"{_code(entry.category)} {verb} {outcome}"
    header = "|".join(
        [
            "CEF:0",
            "hdsvault",
            "hdsvault",
            _cef_header(__version__),
            _cef_header(entry.event_type),
            _cef_header(name),
            str(CEF_SEVERITY.get(entry.severity, 3)),
        ]
    )
    extension = " ".join(f"{key}={_cef_value(value)}" for key, value in cef_extension(entry))
    return _frame(
        entry,
        hostname=hostname,
        app_name=app_name,
        facility=facility,
        sd="-",
        msg=f"{header}|{extension}",
    )


# --------------------------------------------------------------------------- ECS


def ecs_category(entry: JournalEntry) -> str:
    """ECS ``event.category`` (see docs/siem.md for the table)."""
    if entry.category == Category.ADMINISTRATION:
        for prefix, category in _ECS_CATEGORY_BY_PREFIX:
            if entry.event_type.startswith(prefix):
                return category
    return _ECS_CATEGORY.get(entry.category, "database")


def ecs_document(
    entry: JournalEntry, *, hostname: str, app_name: str, facility: int
) -> dict[str, Any]:
    """The ECS document of ``entry`` (fields that are ``None`` are left out)."""
    category = ecs_category(entry)
    event_type = _ECS_TYPE.get(entry.action, "info")
    if event_type not in ECS_ALLOWED_TYPES[category]:
        event_type = "info"
    severity_code = SYSLOG_SEVERITY.get(entry.severity, 6)
    event: dict[str, Any] = {
        "kind": "event",
        "category": [category],
        "type": [event_type],
        "action": entry.event_type,
        "outcome": "success" if entry.outcome == Outcome.SUCCESS else "failure",
        "dataset": "hdsvault.journal",
        "module": "hdsvault",
    }
    if entry.seq is not None:
        event["id"] = f"{entry.log_id}:{entry.seq}"
        event["sequence"] = entry.seq
    user: dict[str, Any] = {"name": entry.actor}
    if entry.actor_role is not None:
        user["roles"] = [entry.actor_role]
    doc: dict[str, Any] = {
        "@timestamp": _time_text(entry.time),
        "message": summary(entry),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "log": {
            "level": _code(entry.severity),
            "syslog": {
                "facility": {"code": facility},
                "severity": {
                    "code": severity_code,
                    "name": _SYSLOG_SEVERITY_NAME.get(severity_code, "Informational"),
                },
            },
        },
        "host": {"hostname": hostname},
        "service": {"name": app_name},
        "user": user,
        "related": {
            "user": [u for u in (entry.actor, entry.on_behalf_of) if u is not None],
        },
    }
    if entry.source_address is not None:
        source: dict[str, Any] = {"address": entry.source_address}
        ip = _ip(entry.source_address)
        if ip is not None:
            source["ip"] = ip
        doc["source"] = source
    if entry.request_id is not None:
        doc["http"] = {"request": {"id": entry.request_id}}
    labels = {"log_id": entry.log_id}
    if entry.zone is not None:
        labels["zone"] = entry.zone
    doc["labels"] = labels
    own: dict[str, Any] = {
        "log_id": entry.log_id,
        "seq": entry.seq,
        "time": _time_text(entry.time),
        "event_type": entry.event_type,
        "category": _code(entry.category),
        "action": _code(entry.action),
        "outcome": _code(entry.outcome),
        "severity": _code(entry.severity),
        "actor": entry.actor,
        "actor_role": entry.actor_role,
        "professional_id": entry.professional_id,
        "on_behalf_of": entry.on_behalf_of,
        "objects": list(entry.objects) or None,
        "patient": entry.patient,
        "purpose_of_use": entry.purpose_of_use,
        "source_address": entry.source_address,
        "zone": entry.zone,
        "request_id": entry.request_id,
        "has_sealed_detail": bool(entry.detail_sealed),
    }
    doc["hdsvault"] = {key: value for key, value in own.items() if value is not None}
    return doc


def render_ecs(
    entry: JournalEntry,
    *,
    hostname: str,
    app_name: str = DEFAULT_APP_NAME,
    facility: int = FACILITY_LOG_AUDIT,
) -> bytes:
    """The ECS document as compact JSON in MSG (one line, valid UTF-8, lossless)."""
    doc = ecs_document(entry, hostname=hostname, app_name=app_name, facility=facility)
    text = _json_safe(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return _frame(entry, hostname=hostname, app_name=app_name, facility=facility, sd="-", msg=text)


# --------------------------------------------------------------------------- selection

FORMATS: Final[dict[str, Renderer]] = {
    "rfc5424": render_rfc5424,
    "cef": render_cef,
    "ecs": render_ecs,
}


def bind(
    fmt: str,
    *,
    hostname: str,
    app_name: str = DEFAULT_APP_NAME,
    facility: int = FACILITY_LOG_AUDIT,
    sd_id: str = DEFAULT_SD_ID,
) -> EntryRenderer:
    """The renderer of format ``fmt`` with its options bound, options checked now (at
    start-up) rather than at the first entry. ``sd_id`` only matters to ``rfc5424``."""
    _check_facility(facility)
    check_sd_id(sd_id)
    if fmt == "rfc5424":
        return lambda entry: render_rfc5424(
            entry, hostname=hostname, app_name=app_name, sd_id=sd_id, facility=facility
        )
    if fmt == "cef":
        return lambda entry: render_cef(
            entry, hostname=hostname, app_name=app_name, facility=facility
        )
    if fmt == "ecs":
        return lambda entry: render_ecs(
            entry, hostname=hostname, app_name=app_name, facility=facility
        )
    raise ValueError(f"unknown SIEM format {fmt!r}; expected one of {sorted(FORMATS)}")
