"""HL7 v2 -> FHIR R4: ADT A01/A04/A08/A03/A40 and ORU^R01, as one transaction Bundle.

Every resource is written with a *conditional update* on a business identifier (patient
identifiers of PID-3, visit number PV1-19, filler order number OBR-3, OBX position), so
that replaying a message (after a crash between storage and processing) converges on the
same resources instead of duplicating them. References between entries use ``urn:uuid``
full URLs, resolved by the records service inside the transaction.

Identifier systems: a PID-3 assigning authority given as an OID (HD.2, e.g. the INS
``1.2.250.1.213.1.4.8``) becomes ``urn:oid:<OID>``; a namespace-only authority becomes
``urn:hdsvault:hl7:<sending application>:<namespace>``. INS (OID 1.2.250.1.213.1.4.8/.9/.10
/.11) is preferred as the matching identifier when present.

A40 (merge): the surviving patient (PID) gets ``link: replaces`` to the prior one (MRG-1),
and the prior patient becomes ``active: false`` with ``link: replaced-by``. Resources that
referenced the prior patient are not rewritten: FHIR's Patient.link tells readers where the
record continues (``docs/hl7.md``).
"""

from __future__ import annotations

import uuid
from typing import Any

from hdsvault.ingest.message import Message, MessageError, Segment

Json = dict[str, Any]
INS_OIDS = (
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
    "1.2.250.1.213.1.4.11",
)
ADT_EVENTS = {"A01", "A04", "A08", "A03", "A40"}
_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown"}
_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "R": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
}
_V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
}
_OBR_STATUS = {
    "F": "final",
    "P": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "R": "registered",
    "I": "registered",
    "A": "partial",
}
_OBX_STATUS = {
    "F": "final",
    "P": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "R": "registered",
    "I": "registered",
    "D": "entered-in-error",
    "W": "entered-in-error",
}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _is_oid(value: str) -> bool:
    return bool(value) and all(p.isdigit() for p in value.split("."))


def _date(value: str, where: str) -> str:
    """HL7 DTM -> FHIR date/dateTime (UTC offsets kept); AE on a malformed value."""
    v = value.strip()
    if not v:
        return ""
    tz = ""
    for sign in ("+", "-"):
        if sign in v[8:]:
            idx = v.index(sign, 8)
            v, off = v[:idx], v[idx:]
            if len(off) == 5 and off[1:].isdigit():
                tz = f"{off[:3]}:{off[3:]}"
    v = v.split(".")[0]
    if not v.isdigit() or len(v) not in (4, 6, 8, 10, 12, 14):
        raise MessageError(
            f"{where}: {value[:30]!r} is not an HL7 date/time", "102", where.replace("-", "^")
        )
    out = v[:4]
    if len(v) >= 6:
        out += f"-{v[4:6]}"
    if len(v) >= 8:
        out += f"-{v[6:8]}"
    if len(v) >= 10:
        out += (
            f"T{v[8:10]}:{v[10:12] if len(v) >= 12 else '00'}:{v[12:14] if len(v) >= 14 else '00'}"
        )
        out += tz or "+00:00"
    return out


class Mapper:
    """Builds the transaction Bundle of one message."""

    def __init__(self, message: Message, sender: str) -> None:
        self.m = message
        self.sender = sender.replace(" ", "_") or "unknown"
        self.entries: list[Json] = []

    def bundle(self) -> Json:
        kind, event = self.m.message_type
        if kind == "ADT":
            if event not in ADT_EVENTS:
                raise MessageError(
                    f"ADT^{event} is not supported (A01 A03 A04 A08 A40)", "201", "MSH^1^9", True
                )
            self.adt(event)
        elif kind == "ORU" and event == "R01":
            self.oru()
        else:
            raise MessageError(
                f"{kind}^{event} is not supported (ADT, ORU^R01)", "200", "MSH^1^9", True
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}

    # -- entries ----------------------------------------------------------------------------

    def _put(self, resource: Json, criteria: str | None) -> str:
        url = _urn()
        rtype = resource["resourceType"]
        request = (
            {"method": "PUT", "url": f"{rtype}?{criteria}"}
            if criteria
            else {"method": "POST", "url": rtype}
        )
        self.entries.append({"fullUrl": url, "resource": resource, "request": request})
        return url

    @staticmethod
    def _criteria(identifier: Json) -> str:
        from urllib.parse import quote

        return "identifier=" + quote(f"{identifier['system']}|{identifier['value']}", safe="")

    # -- patient --------------------------------------------------------------------------------

    def identifiers(self, seg: Segment, field: int, where: str) -> list[Json]:
        out = []
        for rep in seg.reps(field):
            value = rep[0][0].strip() if rep and rep[0] else ""
            if not value:
                continue
            authority = rep[3] if len(rep) > 3 else []
            namespace = authority[0].strip() if authority else ""
            oid = authority[1].strip() if len(authority) > 1 else ""
            id_type = rep[4][0].strip() if len(rep) > 4 and rep[4] else ""
            if _is_oid(oid):
                system = f"urn:oid:{oid}"
            elif namespace:
                system = f"urn:hdsvault:hl7:{self.sender}:{namespace}"
            else:
                system = f"urn:hdsvault:hl7:{self.sender}"
            ident: Json = {"system": system, "value": value}
            if id_type:
                ident["type"] = {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": id_type}
                    ]
                }
            out.append(ident)
        if not out:
            raise MessageError(f"{where}: no patient identifier", "101", where.replace("-", "^"))
        return out

    @staticmethod
    def key_identifier(idents: list[Json]) -> Json:
        for oid in INS_OIDS:
            for i in idents:
                if i["system"] == f"urn:oid:{oid}":
                    return i
        return idents[0]

    def patient(self, pid: Segment) -> tuple[Json, Json]:
        idents = self.identifiers(pid, 3, "PID-1-3")
        p: Json = {
            "resourceType": "Patient",
            "identifier": [{k: v for k, v in i.items()} for i in idents],
            "active": True,
        }
        names = []
        for rep in pid.reps(5):
            family = rep[0][0] if rep and rep[0] else ""
            given = [rep[i][0] for i in (1, 2) if len(rep) > i and rep[i] and rep[i][0]]
            if not (family or given):
                continue
            name: Json = {}
            if family:
                name["family"] = family
            if given:
                name["given"] = " ".join(given).split()
            use_code = rep[6][0] if len(rep) > 6 and rep[6] else ""
            name["use"] = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname"}.get(
                use_code, "official"
            )
            names.append(name)
        if names:
            p["name"] = names
        birth = _date(pid.get(7), "PID-1-7")
        if birth:
            p["birthDate"] = birth[:10]
        sex = pid.get(8).upper()
        if sex in _GENDER:
            p["gender"] = _GENDER[sex]
        addresses = []
        for rep in pid.reps(11):
            parts = [c[0] if c else "" for c in rep] + [""] * 7
            if any(parts[:6]):
                a: Json = {}
                lines = [x for x in parts[:2] if x]
                if lines:
                    a["line"] = lines
                for key, idx in (("city", 2), ("state", 3), ("postalCode", 4), ("country", 5)):
                    if parts[idx]:
                        a[key] = parts[idx]
                addresses.append(a)
        if addresses:
            p["address"] = addresses
        phones = [rep[0][0] for rep in pid.reps(13) if rep and rep[0] and rep[0][0]]
        if phones:
            p["telecom"] = [{"system": "phone", "value": t} for t in phones]
        return p, self.key_identifier(idents)

    # -- ADT --------------------------------------------------------------------------------------

    def adt(self, event: str) -> None:
        pid = self.m.segment("PID")
        if pid is None:
            raise MessageError("ADT message without PID segment", "100", "PID")
        patient, key = self.patient(pid)
        if event == "A40":
            mrg = self.m.segment("MRG")
            if mrg is None:
                raise MessageError("ADT^A40 without MRG segment", "100", "MRG")
            prior_ids = self.identifiers(mrg, 1, "MRG-1-1")
            prior_key = self.key_identifier(prior_ids)
            prior_url = _urn()
            survivor_url = _urn()
            patient["link"] = [{"other": {"reference": prior_url}, "type": "replaces"}]
            prior = {
                "resourceType": "Patient",
                "identifier": prior_ids,
                "active": False,
                "link": [{"other": {"reference": survivor_url}, "type": "replaced-by"}],
            }
            self.entries.append(
                {
                    "fullUrl": survivor_url,
                    "resource": patient,
                    "request": {"method": "PUT", "url": f"Patient?{self._criteria(key)}"},
                }
            )
            self.entries.append(
                {
                    "fullUrl": prior_url,
                    "resource": prior,
                    "request": {"method": "PUT", "url": f"Patient?{self._criteria(prior_key)}"},
                }
            )
            return
        patient_url = self._put(patient, self._criteria(key))
        pv1 = self.m.segment("PV1")
        if pv1 is None:
            if event == "A08":
                return  # demographics update only
            raise MessageError(f"ADT^{event} without PV1 segment", "100", "PV1")
        self.encounter(pv1, patient_url, event)

    def encounter(self, pv1: Segment, patient_url: str, event: str) -> str:
        code, display = _CLASS.get(pv1.get(2).upper(), ("AMB", "ambulatory"))
        enc: Json = {
            "resourceType": "Encounter",
            "status": "finished" if event == "A03" else "in-progress",
            "class": {"system": _V3_ACT, "code": code, "display": display},
            "subject": {"reference": patient_url},
        }
        visit = pv1.get(19)
        criteria = None
        if visit:
            ident = {"system": f"urn:hdsvault:hl7:{self.sender}:visit", "value": visit}
            enc["identifier"] = [ident]
            criteria = self._criteria(ident)
        start = _date(pv1.get(44), "PV1-1-44")
        end = _date(pv1.get(45), "PV1-1-45")
        if event == "A03" and not end:
            evn = self.m.segment("EVN")
            end = _date(evn.get(2), "EVN-1-2") if evn else ""
        period: Json = {}
        if start:
            period["start"] = start
        if end:
            period["end"] = end
        if period:
            enc["period"] = period
        location = [c for c in (pv1.get(3, 1), pv1.get(3, 2), pv1.get(3, 3)) if c]
        if location:
            enc["location"] = [{"location": {"display": " / ".join(location)}}]
        return self._put(enc, criteria)

    # -- ORU ------------------------------------------------------------------------------------

    def oru(self) -> None:
        pid = self.m.segment("PID")
        if pid is None:
            raise MessageError("ORU^R01 without PID segment", "100", "PID")
        patient, key = self.patient(pid)
        patient_url = self._put(patient, self._criteria(key))
        current: Json | None = None
        results: list[str] = []
        n_obr = 0
        for seg in self.m.segments:
            if seg.name == "OBR":
                if current is not None:
                    self._report(current, results)
                n_obr += 1
                current = self._obr(seg, patient_url, n_obr)
                results = []
            elif seg.name == "OBX":
                if current is None:
                    raise MessageError("OBX before any OBR", "100", "OBX")
                results.append(self._obx(seg, patient_url, current, len(results) + 1))
        if current is None:
            raise MessageError("ORU^R01 without OBR segment", "100", "OBR")
        self._report(current, results)

    def _coded(self, seg: Segment, field: int, where: str, required: bool = True) -> Json:
        code, text, system = seg.get(field, 1), seg.get(field, 2), seg.get(field, 3)
        if not code and not text:
            if required:
                raise MessageError(f"{where}: code missing", "101", where.replace("-", "^"))
            return {}
        coding: Json = {"code": code} if code else {}
        if code:
            coding["system"] = _SYSTEMS.get(
                system.upper(), f"urn:hdsvault:hl7:{self.sender}:{system or 'local'}"
            )
            if text:
                coding["display"] = text
        out: Json = {"coding": [coding]} if coding else {}
        if text:
            out["text"] = text
        return out

    def _obr(self, obr: Segment, patient_url: str, n: int) -> Json:
        filler = obr.get(3) or obr.get(2)
        if not filler:
            raise MessageError("OBR-3 (filler order number) missing", "101", f"OBR^{n}^3")
        ident = {"system": f"urn:hdsvault:hl7:{self.sender}:filler", "value": filler}
        report: Json = {
            "resourceType": "DiagnosticReport",
            "identifier": [ident],
            "status": _OBR_STATUS.get(obr.get(25).upper(), "final"),
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}
                    ]
                }
            ],
            "code": self._coded(obr, 4, f"OBR-{n}-4"),
            "subject": {"reference": patient_url},
        }
        eff = _date(obr.get(7), f"OBR-{n}-7")
        if eff:
            report["effectiveDateTime"] = eff
        issued = _date(obr.get(22), f"OBR-{n}-22")
        if issued and "T" in issued:
            report["issued"] = issued
        return {"resource": report, "url": _urn(), "ident": ident}

    def _obx(self, obx: Segment, patient_url: str, report: Json, n: int) -> str:
        where = f"OBX-{n}"
        vtype = obx.get(2).upper()
        obs: Json = {
            "resourceType": "Observation",
            "identifier": [
                {
                    "system": f"urn:hdsvault:hl7:{self.sender}:obx",
                    "value": f"{report['ident']['value']}-{obx.get(1) or n}",
                }
            ],
            "status": _OBX_STATUS.get(obx.get(11).upper(), "final"),
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": self._coded(obx, 3, f"{where}-3"),
            "subject": {"reference": patient_url},
        }
        raw = obx.get(5)
        if vtype == "NM":
            try:
                number = float(raw.replace(",", "."))
            except ValueError:
                raise MessageError(
                    f"{where}-5: {raw[:20]!r} is not a number (OBX-2 NM)", "102", f"OBX^{n}^5"
                ) from None
            q: Json = {"value": int(number) if number.is_integer() and "." not in raw else number}
            unit = obx.get(6, 1) or obx.get(6, 2)
            if unit:
                q.update({"unit": unit, "system": "http://unitsofmeasure.org", "code": unit})
            obs["valueQuantity"] = q
        elif vtype in ("CE", "CWE", "CNE"):
            obs["valueCodeableConcept"] = self._coded(obx, 5, f"{where}-5")
        elif raw:
            obs["valueString"] = "\n".join(r[0][0] for r in obx.reps(5) if r and r[0])
        ref_range = obx.get(7)
        if ref_range:
            low, sep, high = ref_range.partition("-")
            rr: Json = {"text": ref_range}
            try:
                if sep and low.strip():
                    rr["low"] = {"value": float(low.replace(",", "."))}
                if sep and high.strip():
                    rr["high"] = {"value": float(high.replace(",", "."))}
            except ValueError:
                rr = {"text": ref_range}
            obs["referenceRange"] = [rr]
        flag = obx.get(8).upper()
        if flag:
            obs["interpretation"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": flag,
                        }
                    ]
                }
            ]
        eff = _date(obx.get(14), f"{where}-14") or report["resource"].get("effectiveDateTime", "")
        if eff:
            obs["effectiveDateTime"] = eff
        return self._put(obs, self._criteria(obs["identifier"][0]))

    def _report(self, report: Json, results: list[str]) -> None:
        resource = report["resource"]
        if results:
            resource["result"] = [{"reference": r} for r in results]
        self.entries.append(
            {
                "fullUrl": report["url"],
                "resource": resource,
                "request": {
                    "method": "PUT",
                    "url": f"DiagnosticReport?{self._criteria(report['ident'])}",
                },
            }
        )
