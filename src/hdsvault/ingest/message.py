"""Reading an HL7 v2 message: python-hl7 parses, small accessors read fields as text.

python-hl7 nests fields, repetitions, components and sub-components only as deep as each
value needs, so code reading it must guess the shape; the accessors here re-split the text
of a field with the message's own separators (MSH-1/MSH-2) and unescape each value: one
predictable shape, ``field -> repetitions -> components -> sub-components``.
"""

from __future__ import annotations

from dataclasses import dataclass

import hl7


class MessageError(Exception):
    """The message cannot be read; ``code`` is the HL7 table 0357 error code, ``where`` the
    location (``PID^1^3``) for the ERR segment, ``reject`` True for AR (not processable at
    all) and False for AE (processable, but the content is wrong)."""

    def __init__(self, text: str, code: str = "207", where: str = "", reject: bool = False) -> None:
        super().__init__(text)
        self.text, self.code, self.where, self.reject = text, code, where, reject


@dataclass
class Segment:
    name: str
    fields: list[str]  # raw text; fields[0] is the name (MSH: fields[1] is the separator)
    message: Message

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[list[list[str]]]:
        text = self.raw(n)
        if not text:
            return []
        m = self.message
        return [
            [[m.unescape(s) for s in c.split(m.sub)] for c in r.split(m.comp)]
            for r in text.split(m.rep)
        ]

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        reps = self.reps(n)
        try:
            return reps[rep - 1][comp - 1][sub - 1].strip()
        except IndexError:
            return ""


class Message:
    """A parsed message: its segments in order, separators, and MSH accessors."""

    def __init__(self, text: str) -> None:
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x0b\x1c ")
        if not text.startswith("MSH") or len(text) < 8:
            raise MessageError("the message does not start with an MSH segment", "100", "MSH", True)
        try:
            self.parsed = hl7.parse(text)
        except Exception as exc:
            raise MessageError(f"unparseable message: {exc}"[:200], "100", "MSH", True) from None
        self.field_sep = text[3]
        enc = text[4:8]
        self.comp, self.rep, self.esc, self.sub = enc[0], enc[1], enc[2], enc[3]
        self.segments: list[Segment] = []
        for line in text.split("\r"):
            if not line.strip():
                continue
            parts = line.split(self.field_sep)
            if parts[0] == "MSH":
                parts = ["MSH", self.field_sep, *parts[1:]]
            if len(parts[0]) != 3 or not parts[0].isalnum():
                raise MessageError(
                    f"malformed segment {parts[0][:10]!r}", "100", parts[0][:3], True
                )
            self.segments.append(Segment(parts[0], parts, self))
        self.text = text

    def unescape(self, value: str) -> str:
        if self.esc not in value:
            return value
        e = self.esc
        table = {
            f"{e}F{e}": self.field_sep,
            f"{e}S{e}": self.comp,
            f"{e}R{e}": self.rep,
            f"{e}T{e}": self.sub,
            f"{e}E{e}": e,
            f"{e}.br{e}": "\n",
        }
        for k, v in table.items():
            value = value.replace(k, v)
        return value

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def sending_application(self) -> str:
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4)

    @property
    def control_id(self) -> str:
        return self.msh.raw(10).strip()

    @property
    def message_type(self) -> tuple[str, str]:
        return self.msh.get(9, 1).upper(), self.msh.get(9, 2).upper()

    @property
    def version(self) -> str:
        return self.msh.get(12)
