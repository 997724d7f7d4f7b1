"""The three SIEM formats parse back, field for field, on a table of adversarial entries.

hypothesis is not a dependency, so totality is shown on a hand-written table of hostile
values (quotes, ``]``, ``|``, ``=``, backslashes, newlines, NUL, bidi overrides, lone
surrogates, astral characters, empty strings, ``None`` everywhere it is allowed) crossed with
every category, action, outcome and severity. Each output is parsed back by a strict parser
written here from the specifications, not by the code under test.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from hdsvault import __version__
from hdsvault.journal.entry import Action, Category, JournalEntry, Outcome, Severity
from hdsvault.journal.siem import formats
from hdsvault.journal.siem.formats import (
    DEFAULT_SD_ID,
    ECS_ALLOWED_TYPES,
    FACILITY_LOG_AUDIT,
    display_text,
    render_cef,
    render_ecs,
    render_rfc5424,
)

SEALED = b"\x00SEALED-CIPHERTEXT-MARKER\xff\x17"

# --------------------------------------------------------------------------- strict parsers

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_PRINTUSASCII = re.compile(r"[!-~]+")


class Parsed:
    def __init__(self) -> None:
        self.pri = 0
        self.timestamp = ""
        self.hostname = ""
        self.app_name = ""
        self.procid = ""
        self.msgid = ""
        self.sd: list[tuple[str, list[tuple[str, str]]]] = []
        self.msg = ""


def parse_rfc5424(data: bytes) -> Parsed:
    """A strict RFC 5424 parser (§6): raises AssertionError on any deviation."""
    text = data.decode("utf-8")  # strict: invalid UTF-8 fails
    out = Parsed()
    m = re.match(r"<(\d{1,3})>1 ", text)
    assert m, text[:40]
    out.pri = int(m.group(1))
    assert 0 <= out.pri <= 191 and str(out.pri) == m.group(1)
    pos = m.end()
    fields = []
    for max_len in (None, 255, 48, 128, 32):
        end = text.index(" ", pos)
        token = text[pos:end]
        assert _PRINTUSASCII.fullmatch(token), token
        if max_len is not None:
            assert len(token) <= max_len
        fields.append(token)
        pos = end + 1
    out.timestamp, out.hostname, out.app_name, out.procid, out.msgid = fields
    assert out.timestamp == "-" or _TIMESTAMP.fullmatch(out.timestamp), out.timestamp
    if text[pos] == "-":
        pos += 1
    else:
        while pos < len(text) and text[pos] == "[":
            pos += 1
            end = pos
            while text[end] not in " ]":
                end += 1
            sd_id = text[pos:end]
            assert 1 <= len(sd_id) <= 32 and _PRINTUSASCII.fullmatch(sd_id)
            assert not set('="') & set(sd_id)
            pos = end
            params: list[tuple[str, str]] = []
            while text[pos] == " ":
                pos += 1
                eq = text.index("=", pos)
                name = text[pos:eq]
                assert 1 <= len(name) <= 32 and _PRINTUSASCII.fullmatch(name)
                assert not set(' ]"') & set(name), name
                assert text[eq + 1] == '"'
                pos = eq + 2
                value: list[str] = []
                while True:
                    ch = text[pos]
                    if ch == "\\" and text[pos + 1] in '"\\]':
                        value.append(text[pos + 1])
                        pos += 2
                    elif ch == "\\":  # §6.3.3: other backslashes are literal
                        value.append(ch)
                        pos += 1
                    elif ch == '"':
                        pos += 1
                        break
                    else:
                        assert ch != "]", "unescaped ] in PARAM-VALUE"
                        value.append(ch)
                        pos += 1
                params.append((name, "".join(value)))
            assert text[pos] == "]", text[pos:]
            pos += 1
            out.sd.append((sd_id, params))
        assert out.sd
    if pos < len(text):
        assert text[pos] == " "
        out.msg = text[pos + 1 :]
    return out


def _split_unescaped(text: str, sep: str, count: int) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and len(parts) < count:
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep and len(parts) < count:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _cef_unescape(text: str, mapping: dict[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            nxt = text[i + 1]
            assert nxt in mapping, f"invalid CEF escape \\{nxt} in {text!r}"
            out.append(mapping[nxt])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_cef(msg: str) -> tuple[list[str], list[tuple[str, str]]]:
    """CEF (ArcSight "Implementing CEF" rev. 25): 7 header fields, then key=value pairs."""
    parts = _split_unescaped(msg, "|", 7)
    assert len(parts) == 8, parts
    assert parts[0] == "CEF:0"
    header = [_cef_unescape(p, {"\\": "\\", "|": "|"}) for p in parts[:7]]
    for field in header:
        assert "\n" not in field and "\r" not in field
    ext_text = parts[7]
    ext: list[tuple[str, str]] = []
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", ext_text))
    assert keys or not ext_text
    assert not keys or keys[0].start() == 0
    for k, nxt in itertools.zip_longest(keys, keys[1:]):
        raw = ext_text[k.end() : nxt.start() if nxt else len(ext_text)]
        assert re.search(r"(?<!\\)(?:\\\\)*=", raw) is None, f"unescaped = in {raw!r}"
        value = _cef_unescape(raw, {"\\": "\\", "=": "=", "n": "\n", "r": "\r"})
        ext.append((k.group(1), value))
    return header, ext


# --------------------------------------------------------------------------- the table

HOSTILE = [
    "",
    "plain",
    'quote " and backslash \\ and bracket ] and [',
    "pipe | equals = key=value cs1=forged",
    "line\nbreak\r\nand\ttab and NUL \x00 and DEL \x7f and C1 \x85",
    "unicode: éàü 日本語 \U0001f600 nbsp\u00a0here",
    "bidi \u202etxt.exe and zero width \u200b and LS \u2028 PS \u2029 BOM \ufeff",
    "lone surrogate \ud800 end",
    "trailing backslash \\",
    '\\"] ] ] \\\\',
    "x" * 3000,
    " leading and trailing spaces ",
    "#012 literal rsyslog escape and \\n literal",
    "<13>1 2020-01-01T00:00:00Z forged - - - - injected",
    "astral format char \U000e0001 tag",
]


def base_entry(**overrides: Any) -> JournalEntry:
    fields: dict[str, Any] = dict(
        log_id="tenant-42",
        time=datetime(2026, 11, 29, 7, 31, 15, 123456, tzinfo=UTC),
        event_type="fhir.read",
        category=Category.ACCESS,
        action=Action.READ,
        outcome=Outcome.SUCCESS,
        actor="token:ab12",
        severity=Severity.INFO,
        actor_role="physician",
        professional_id="10001234567",
        on_behalf_of=None,
        objects=("Patient/5f1c",),
        patient="Patient/5f1c",
        purpose_of_use="TREAT",
        source_address="192.0.2.7",
        zone="zone-a",
        request_id="req-1",
        detail_sealed=SEALED,
        seq=17,
    )
    fields.update(overrides)
    return JournalEntry(**fields)


def adversarial_entries() -> list[JournalEntry]:
    entries = []
    text_fields = [
        "log_id",
        "event_type",
        "actor",
        "actor_role",
        "professional_id",
        "on_behalf_of",
        "patient",
        "purpose_of_use",
        "source_address",
        "zone",
        "request_id",
    ]
    for i, value in enumerate(HOSTILE):
        # every text field hostile at once, rotating values so fields differ
        fields: dict[str, Any] = {
            name: HOSTILE[(i + k) % len(HOSTILE)] for k, name in enumerate(text_fields)
        }
        fields["objects"] = (value, HOSTILE[(i + 3) % len(HOSTILE)], "")
        entries.append(base_entry(**fields))
    optional = {
        "actor_role": None,
        "professional_id": None,
        "on_behalf_of": None,
        "patient": None,
        "purpose_of_use": None,
        "source_address": None,
        "zone": None,
        "request_id": None,
        "detail_sealed": None,
        "seq": None,
        "objects": (),
    }
    entries.append(base_entry(**optional))
    entries.append(base_entry(detail_sealed=b""))
    entries.append(base_entry(objects=tuple(f"Observation/{i}" for i in range(300))))
    entries.append(base_entry(source_address="2001:db8::1"))
    entries.append(base_entry(source_address="192.0.2.7:443"))
    entries.append(base_entry(time=datetime(2026, 1, 1, 12)))  # naive: taken as UTC
    entries.append(base_entry(time=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-11)))))
    entries.append(base_entry(time=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))))
    entries.append(base_entry(time=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)))
    entries.append(base_entry(seq=0))
    entries.append(base_entry(seq=2**63 - 1))
    for category, action, outcome, severity in itertools.product(
        Category, Action, Outcome, Severity
    ):
        entries.append(
            base_entry(category=category, action=action, outcome=outcome, severity=severity)
        )
    return entries


ENTRIES = adversarial_entries()
RENDERERS = {
    "rfc5424": render_rfc5424,
    "cef": render_cef,
    "ecs": render_ecs,
}


def _utf8_safe(text: str) -> str:
    """What a string becomes when it must travel as UTF-8: lone surrogates -> U+FFFD."""
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def _syslog_severity(severity: Severity) -> int:
    return {"info": 6, "notice": 5, "warning": 4, "alert": 1}[severity.value]


# --------------------------------------------------------------------------- all formats


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_every_adversarial_entry_gives_one_valid_syslog_line(fmt: str) -> None:
    for entry in ENTRIES:
        data = RENDERERS[fmt](entry, hostname="hds-1.example", app_name="hdsvault")
        assert isinstance(data, bytes)
        # one line, no control byte at all (rsyslog would rewrite them as #ooo)
        assert not re.search(rb"[\x00-\x1f\x7f]", data), data[:200]
        text = data.decode("utf-8")
        for ch in "\u0085\u2028\u2029\u202e\u200b\ufeff":
            assert ch not in text
        parsed = parse_rfc5424(data)
        assert parsed.pri == FACILITY_LOG_AUDIT * 8 + _syslog_severity(entry.severity)
        assert parsed.hostname == "hds-1.example"
        assert parsed.app_name == "hdsvault"
        assert parsed.procid == "-"
        expected_msgid = (
            "".join(ch if "!" <= ch <= "~" else "_" for ch in entry.event_type[:32]) or "-"
        )
        assert parsed.msgid == expected_msgid
        if entry.time.year > 1:
            t = entry.time if entry.time.tzinfo else entry.time.replace(tzinfo=UTC)
            assert parsed.timestamp == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_sealed_detail_never_leaves(fmt: str) -> None:
    for entry in ENTRIES:
        data = RENDERERS[fmt](entry, hostname="h")
        for form in (
            SEALED,
            base64.b64encode(SEALED),
            SEALED.hex().encode(),
            b"SEALED-CIPHERTEXT-MARKER",
        ):
            assert form not in data


def test_syslog_header_fields_are_sanitised() -> None:
    entry = base_entry(event_type="a very long event type with spaces and é" * 2)
    parsed = parse_rfc5424(render_rfc5424(entry, hostname="bad host\nname", app_name="a p p"))
    assert parsed.hostname == "bad_host_name"
    assert parsed.app_name == "a_p_p"
    assert parsed.msgid == "a_very_long_event_type_with_spac"
    assert parse_rfc5424(render_rfc5424(entry, hostname="")).hostname == "-"


def test_severity_and_facility_give_pri() -> None:
    expected = {Severity.INFO: 110, Severity.NOTICE: 109, Severity.WARNING: 108}
    expected[Severity.ALERT] = 105  # break-the-glass: 13*8 + 1
    for severity, pri in expected.items():
        data = render_rfc5424(base_entry(severity=severity), hostname="h")
        assert data.startswith(f"<{pri}>1 ".encode())
    data = render_cef(base_entry(), hostname="h", facility=16)  # local0 if a site wants it
    assert data.startswith(b"<134>1 ")
    with pytest.raises(ValueError, match="facility"):
        render_ecs(base_entry(), hostname="h", facility=24)


# --------------------------------------------------------------------------- rfc5424


def test_rfc5424_structured_data_round_trips_every_field() -> None:
    for entry in ENTRIES:
        parsed = parse_rfc5424(render_rfc5424(entry, hostname="h"))
        assert len(parsed.sd) == 1
        sd_id, params = parsed.sd[0]
        assert sd_id == DEFAULT_SD_ID
        expected = [(name, display_text(value)) for name, value in formats.sd_params(entry)]
        assert params == expected
        names = [name for name, _ in params]
        assert names.count("object") == len(entry.objects)
        for name in ("log_id", "time", "event_type", "category", "action", "outcome"):
            assert name in names
        optional = {
            "actor_role": entry.actor_role,
            "patient": entry.patient,
            "request_id": entry.request_id,
            "zone": entry.zone,
        }
        for name, value in optional.items():
            assert (name in names) == (value is not None)
        flag = dict(params)["has_sealed_detail"]
        assert flag == ("true" if entry.detail_sealed else "false")
        assert "detail_sealed" not in names


def test_rfc5424_escaping_is_exactly_the_three_characters() -> None:
    entry = base_entry(actor='a"b\\c]d[e=f')
    text = render_rfc5424(entry, hostname="h").decode()
    assert 'actor="a\\"b\\\\c\\]d[e=f"' in text
    assert dict(parse_rfc5424(text.encode()).sd[0][1])["actor"] == 'a"b\\c]d[e=f'


def test_rfc5424_control_characters_are_shown_not_sent() -> None:
    entry = base_entry(actor="evil\n<13>1 forged\x00")
    params = dict(parse_rfc5424(render_rfc5424(entry, hostname="h")).sd[0][1])
    assert params["actor"] == "evil\\u000a<13>1 forged\\u0000"


def test_rfc5424_sd_id_is_configurable_and_checked() -> None:
    parsed = parse_rfc5424(render_rfc5424(base_entry(), hostname="h", sd_id="journal@99999"))
    assert parsed.sd[0][0] == "journal@99999"
    for bad in (
        "nopen",
        "a b@1",
        'a"@1',
        "a]@1",
        "a=b@1",
        "@1",
        "a@",
        "a@x",
        "a@1@2",
        "x" * 31 + "@1",
    ):
        with pytest.raises(ValueError, match="SD-ID"):
            render_rfc5424(base_entry(), hostname="h", sd_id=bad)
        with pytest.raises(ValueError, match="SD-ID"):
            formats.bind("rfc5424", hostname="h", sd_id=bad)


def test_rfc5424_message_is_a_short_human_line() -> None:
    parsed = parse_rfc5424(render_rfc5424(base_entry(), hostname="h"))
    assert parsed.msg == "fhir.read: token:ab12 read Patient/5f1c -> success"
    many = base_entry(objects=("A/1", "B/2", "C/3"), outcome=Outcome.MINOR_FAILURE)
    parsed = parse_rfc5424(render_rfc5424(many, hostname="h"))
    assert parsed.msg == "fhir.read: token:ab12 read A/1 (+2 more) -> minor failure"
    long = base_entry(actor="x" * 5000)
    assert len(parse_rfc5424(render_rfc5424(long, hostname="h")).msg) < 400


# --------------------------------------------------------------------------- CEF


def test_cef_parses_back_with_standard_keys() -> None:
    entry = base_entry()
    parsed = parse_rfc5424(render_cef(entry, hostname="h"))
    assert parsed.sd == []
    header, ext = parse_cef(parsed.msg)
    assert header == [
        "CEF:0",
        "hdsvault",
        "hdsvault",
        __version__,
        "fhir.read",
        "access read success",
        "3",
    ]
    values = dict(ext)
    assert len(values) == len(ext), "duplicate CEF keys"
    assert values["rt"] == str(int(entry.time.timestamp() * 1000))
    assert values["suser"] == "token:ab12"
    assert values["spriv"] == "physician"
    assert values["src"] == "192.0.2.7"
    assert values["act"] == "read"
    assert values["cat"] == "access"
    assert values["outcome"] == "success"
    assert values["externalId"] == "tenant-42:17"
    assert values["msg"] == "fhir.read: token:ab12 read Patient/5f1c -> success"
    labelled = {values[k + "Label"]: values[k] for k in values if k + "Label" in values}
    assert labelled == {
        "logId": "tenant-42",
        "requestId": "req-1",
        "patient": "Patient/5f1c",
        "purposeOfUse": "TREAT",
        "professionalId": "10001234567",
        "seq": "17",
        "fhirOutcome": "0",
        "hasSealedDetail": "1",
        "zone": "zone-a",
        "objects": '["Patient/5f1c"]',
    }


def test_cef_severity_scale() -> None:
    got = {
        severity: parse_cef(
            parse_rfc5424(render_cef(base_entry(severity=severity), hostname="h")).msg
        )[0][6]
        for severity in Severity
    }
    assert got == {
        Severity.INFO: "3",
        Severity.NOTICE: "5",
        Severity.WARNING: "7",
        Severity.ALERT: "9",
    }


def test_cef_round_trips_every_adversarial_entry() -> None:
    for entry in ENTRIES:
        parsed = parse_rfc5424(render_cef(entry, hostname="h"))
        header, ext = parse_cef(parsed.msg)
        assert header[4] == display_text(entry.event_type)
        expected = [
            (key, display_text(value, keep="\r\n")) for key, value in formats.cef_extension(entry)
        ]
        assert ext == expected
        values = dict(ext)
        assert values["suser"] == display_text(entry.actor, keep="\r\n")
        if entry.source_address is not None:
            assert ("src" in values) != ("shost" in values)
        assert values["cn3"] == ("1" if entry.detail_sealed else "0")


def test_cef_escapes() -> None:
    entry = base_entry(actor="a|b=c\\d\ne\rf", event_type="x|y\\z")
    msg = parse_rfc5424(render_cef(entry, hostname="h")).msg
    assert "|x\\|y\\\\z|" in msg
    assert "suser=a|b\\=c\\\\d\\ne\\rf " in msg
    header, ext = parse_cef(msg)
    assert header[4] == "x|y\\z"
    assert dict(ext)["suser"] == "a|b=c\\d\ne\rf"
    forged = base_entry(actor="x cs1=forged")
    assert dict(parse_cef(parse_rfc5424(render_cef(forged, hostname="h")).msg)[1])["cs1"] == (
        "tenant-42"
    )


def test_cef_non_ip_source_goes_to_shost() -> None:
    values = dict(
        parse_cef(parse_rfc5424(render_cef(base_entry(source_address="gw:443"), hostname="h")).msg)[
            1
        ]
    )
    assert values["shost"] == "gw:443"
    assert "src" not in values


# --------------------------------------------------------------------------- ECS


def _ecs(entry: JournalEntry, **kw: Any) -> dict[str, Any]:
    parsed = parse_rfc5424(render_ecs(entry, hostname="hds-1", **kw))
    assert parsed.sd == []
    doc = json.loads(parsed.msg)
    assert isinstance(doc, dict)
    return doc


def test_ecs_document_has_the_fields() -> None:
    doc = _ecs(base_entry())
    assert doc["@timestamp"] == "2026-11-29T07:31:15.123456Z"
    assert doc["ecs"]["version"] == formats.ECS_VERSION
    assert doc["event"] == {
        "kind": "event",
        "category": ["database"],
        "type": ["access"],
        "action": "fhir.read",
        "outcome": "success",
        "dataset": "hdsvault.journal",
        "module": "hdsvault",
        "id": "tenant-42:17",
        "sequence": 17,
    }
    assert doc["user"] == {"name": "token:ab12", "roles": ["physician"]}
    assert doc["source"] == {"address": "192.0.2.7", "ip": "192.0.2.7"}
    assert doc["http"] == {"request": {"id": "req-1"}}
    assert doc["labels"] == {"log_id": "tenant-42", "zone": "zone-a"}
    assert doc["host"] == {"hostname": "hds-1"}
    assert doc["log"]["level"] == "info"
    assert doc["log"]["syslog"]["severity"] == {"code": 6, "name": "Informational"}
    assert doc["hdsvault"]["patient"] == "Patient/5f1c"
    assert doc["hdsvault"]["has_sealed_detail"] is True
    assert "detail_sealed" not in doc["hdsvault"]


def test_ecs_is_lossless_for_every_adversarial_entry() -> None:
    for entry in ENTRIES:
        doc = _ecs(entry)
        own = doc["hdsvault"]
        # not entry.public_fields(): it cannot format year-1 times (an entry.py limitation)
        public = {
            f.name: list(v) if isinstance(v := getattr(entry, f.name), tuple) else v
            for f in dataclasses.fields(entry)
            if f.name not in ("detail_sealed", "seq")
        }
        for key, value in public.items():
            if value is None or value == []:
                assert key not in own
            elif isinstance(value, list):
                assert own[key] == [_utf8_safe(v) for v in value]
            elif key == "time":
                continue  # checked below: same instant
            else:
                assert own[key] == _utf8_safe(value), key
        assert own.get("seq") == entry.seq
        assert doc["user"]["name"] == _utf8_safe(entry.actor)
        assert doc["event"]["outcome"] == (
            "success" if entry.outcome == Outcome.SUCCESS else "failure"
        )
        assert doc["event"]["kind"] == "event"
        category = doc["event"]["category"][0]
        assert set(doc["event"]["type"]) <= ECS_ALLOWED_TYPES[category]
        if entry.source_address is None:
            assert "source" not in doc


@pytest.mark.parametrize(
    ("category", "event_type", "expected"),
    [
        (Category.ACCESS, "fhir.read", "database"),
        (Category.MODIFICATION, "fhir.update", "database"),
        (Category.TRANSFER, "fhir.export", "database"),
        (Category.MOVEMENT, "backup.snapshot", "database"),
        (Category.ADMINISTRATION, "tenant.create", "configuration"),
        (Category.ADMINISTRATION, "auth.denied", "authentication"),
        (Category.ADMINISTRATION, "token.issue", "iam"),
        (Category.ADMINISTRATION, "role.grant", "iam"),
        (Category.ACCESS, "auth.denied", "database"),  # prefixes refine administration only
    ],
)
def test_ecs_category_mapping(category: Category, event_type: str, expected: str) -> None:
    for action in Action:
        doc = _ecs(base_entry(category=category, event_type=event_type, action=action))
        assert doc["event"]["category"] == [expected]
        assert set(doc["event"]["type"]) <= ECS_ALLOWED_TYPES[expected]


def test_ecs_action_to_type() -> None:
    got = {a: _ecs(base_entry(action=a))["event"]["type"] for a in Action}
    assert got == {
        Action.CREATE: ["creation"],
        Action.READ: ["access"],
        Action.UPDATE: ["change"],
        Action.DELETE: ["deletion"],
        Action.EXECUTE: ["info"],
    }


def test_ecs_non_ip_source_has_no_source_ip() -> None:
    assert _ecs(base_entry(source_address="gw:443"))["source"] == {"address": "gw:443"}
    assert _ecs(base_entry(source_address="2001:db8::1"))["source"]["ip"] == "2001:db8::1"


def test_ecs_escapes_line_separators_losslessly() -> None:
    actor = "a\u2028b\u0085c\x7fd\u202ee\U000e0001f"
    data = render_ecs(base_entry(actor=actor), hostname="h")
    assert b"\\u2028" in data and b"\\udb40\\udc01" in data
    assert _ecs(base_entry(actor=actor))["user"]["name"] == actor


# --------------------------------------------------------------------------- bind


def test_bind_checks_options_at_start() -> None:
    render = formats.bind("cef", hostname="h", app_name="hdsvault-siem")
    assert parse_rfc5424(render(base_entry())).app_name == "hdsvault-siem"
    with pytest.raises(ValueError, match="unknown SIEM format"):
        formats.bind("leef", hostname="h")
    with pytest.raises(ValueError, match="facility"):
        formats.bind("ecs", hostname="h", facility=-1)
    for fmt in formats.FORMATS:
        assert formats.bind(fmt, hostname="h")(base_entry()) == formats.FORMATS[fmt](
            base_entry(), hostname="h"
        )


def test_display_text_leaves_ordinary_text_alone() -> None:
    for text in ("", "Dupont Jean-Éric", "日本語", "a b\u00a0c", "emoji \U0001f600"):
        assert display_text(text) == text
    assert display_text("a\nb", keep="\n") == "a\nb"
    assert display_text("\ud800") == "\ufffd"


def test_replace_keeps_entry_frozen_semantics() -> None:
    # the renderers never mutate the entry they are given
    entry = base_entry()
    before = replace(entry)
    for render in RENDERERS.values():
        render(entry, hostname="h")
    assert entry == before
