"""Blind-index tokens of the searchable DICOM attributes, and the tokens a query can use.

Every identifier and search key is stored only as ``BlindIndex.token(field, value)`` (HMAC
under the tenant's index key, ``docs/keys.md``). A query is first narrowed with tokens
(equality, a name-word prefix, a date range covered by year/month/day buckets), then the
candidates' sealed metadata are opened and matched exactly (``matching.py``): tokens only
accelerate, the matcher decides, so the answers have full DICOM matching semantics.

Fields (``dicom/`` prefix): ``study.uid``, ``series.uid``, ``instance.uid``, ``patient.id``,
``accession``, ``name.word`` (every prefix of at least :data:`MIN_PREFIX` characters of each
word of the patient name: ``DUPONT*`` works), ``birth.d``, ``study.d``/``study.m``/``study.y``
(date buckets), ``modality`` (of the study's series), ``series.modality``, ``sop.class``.

What the database sees: which studies share a patient id, a name word (or prefix), a date
bucket or a modality; never the values.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, timedelta

from hdsvault.crypto.blind_index import BlindIndex
from hdsvault.imaging.attributes import parse_attribute
from hdsvault.imaging.dicomfile import Json, all_values, first_value
from hdsvault.imaging.normalize import fold, name_words

MIN_PREFIX = 2
MAX_PREFIX = 24
_P = "dicom/"

T_STUDY_UID = parse_attribute("StudyInstanceUID")
T_SERIES_UID = parse_attribute("SeriesInstanceUID")
T_SOP_UID = parse_attribute("SOPInstanceUID")
T_PATIENT_ID = parse_attribute("PatientID")
T_PATIENT_NAME = parse_attribute("PatientName")
T_ACCESSION = parse_attribute("AccessionNumber")
T_STUDY_DATE = parse_attribute("StudyDate")
T_BIRTH = parse_attribute("PatientBirthDate")
T_MODALITIES = parse_attribute("ModalitiesInStudy")
T_MODALITY = parse_attribute("Modality")
T_SOP_CLASS = parse_attribute("SOPClassUID")


def uid_token(index: BlindIndex, level: str, uid: str) -> bytes:
    return index.token(f"{_P}{level}.uid", uid)


def study_tokens(index: BlindIndex, study: Json) -> set[bytes]:
    out: set[bytes] = set()
    t = index.token
    for uid in all_values(study, T_STUDY_UID):
        out.add(t(_P + "study.uid", uid))
    if (pid := first_value(study, T_PATIENT_ID)) is not None and pid.strip():
        out.add(t(_P + "patient.id", pid.strip()))
    if (acc := first_value(study, T_ACCESSION)) is not None and acc.strip():
        out.add(t(_P + "accession", acc.strip()))
    if (name := first_value(study, T_PATIENT_NAME)) is not None:
        for word in name_words(name):
            for n in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1):
                out.add(t(_P + "name.word", word[:n]))
            if len(word) < MIN_PREFIX:
                out.add(t(_P + "name.word", word))
    if (bd := first_value(study, T_BIRTH)) is not None and len(bd) == 8:
        out.add(t(_P + "birth.d", bd))
    if (sd := first_value(study, T_STUDY_DATE)) is not None and len(sd) == 8 and sd.isdigit():
        out |= {t(_P + "study.d", sd), t(_P + "study.m", sd[:6]), t(_P + "study.y", sd[:4])}
    return out


def modality_token(index: BlindIndex, modality: str) -> bytes:
    return index.token(_P + "modality", fold(modality))


def series_tokens(index: BlindIndex, series: Json) -> set[bytes]:
    out = {index.token(_P + "series.uid", u) for u in all_values(series, T_SERIES_UID)}
    for m in all_values(series, T_MODALITY):
        out.add(index.token(_P + "series.modality", fold(m)))
    return out


def instance_tokens(index: BlindIndex, sop_uid: str, sop_class: str) -> set[bytes]:
    return {index.token(_P + "instance.uid", sop_uid), index.token(_P + "sop.class", sop_class)}


# -- query side ----------------------------------------------------------------------------------


def _plain(value: str) -> bool:
    return "*" not in value and "?" not in value


def query_tokens(index: BlindIndex, tag: str, value: str) -> list[bytes] | None:
    """Tokens any of which a match must carry, or None when the index cannot narrow."""
    t = index.token
    value = value.strip()
    if not value or value == "*":
        return None
    if tag in (T_STUDY_UID, T_SERIES_UID, T_SOP_UID, T_SOP_CLASS):
        field = {
            T_STUDY_UID: "study.uid",
            T_SERIES_UID: "series.uid",
            T_SOP_UID: "instance.uid",
            T_SOP_CLASS: "sop.class",
        }[tag]
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        return [t(_P + field, u) for u in uids] if uids and all(map(_plain, uids)) else None
    if tag in (T_PATIENT_ID, T_ACCESSION) and _plain(value) and "\\" not in value:
        return [t(_P + ("patient.id" if tag == T_PATIENT_ID else "accession"), value)]
    if tag in (T_MODALITIES, T_MODALITY):
        items = [fold(m) for m in value.split("\\") if m.strip()]
        if not items or not all(map(_plain, items)):
            return None
        field = "modality" if tag == T_MODALITIES else "series.modality"
        return [t(_P + field, m) for m in items]
    if tag == T_PATIENT_NAME:
        return _name_tokens(index, value)
    if tag == T_STUDY_DATE:
        return _date_tokens(index, value)
    if tag == T_BIRTH and len(value) == 8 and value.isdigit():
        return [t(_P + "birth.d", value)]
    return None


def _name_tokens(index: BlindIndex, value: str) -> list[bytes] | None:
    """The longest word (or prefix) fixed by the pattern: one token narrows enough."""
    literal = value.split("*")[0].split("?")[0]
    words = name_words(literal)
    if not words:
        return None
    wild_after = len(literal) < len(value)
    best: str | None = None
    for i, w in enumerate(words):
        last = i == len(words) - 1
        if last and wild_after and not literal.rstrip().endswith(tuple("^ =,")):
            if len(w) < MIN_PREFIX:
                continue
            candidate = w[:MAX_PREFIX]
        else:
            candidate = w[:MAX_PREFIX] if len(w) >= MIN_PREFIX else w
        if best is None or len(candidate) > len(best):
            best = candidate
    return None if best is None else [index.token(_P + "name.word", best)]


_MIN_DATE = date(1900, 1, 1)
_MAX_DATE = date(2099, 12, 31)


def _parse_date(text: str) -> date | None:
    text = text.strip().replace("-", "").replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def date_range(value: str) -> tuple[date, date] | None:
    """``YYYYMMDD``, ``A-B``, ``A-``, ``-B`` -> inclusive bounds; None if malformed."""
    if "-" in value.strip("-") or value.startswith("-") or value.endswith("-"):
        lo_s, _, hi_s = value.partition("-")
        lo = _parse_date(lo_s) if lo_s.strip() else _MIN_DATE
        hi = _parse_date(hi_s) if hi_s.strip() else _MAX_DATE
    else:
        lo = hi = _parse_date(value)
    if lo is None or hi is None or lo > hi:
        return None
    return max(lo, _MIN_DATE), min(hi, _MAX_DATE)


def _date_tokens(index: BlindIndex, value: str) -> list[bytes] | None:
    bounds = date_range(value)
    if bounds is None:
        return None
    return [index.token(_P + f, v) for f, v in date_cover(*bounds)]


def date_cover(lo: date, hi: date) -> Iterable[tuple[str, str]]:
    """The fewest year/month/day buckets whose union is exactly [lo, hi]."""
    d = lo
    while d <= hi:
        if d.month == 1 and d.day == 1 and date(d.year, 12, 31) <= hi:
            yield "study.y", f"{d.year:04d}"
            d = date(d.year + 1, 1, 1)
            continue
        last = calendar.monthrange(d.year, d.month)[1]
        if d.day == 1 and date(d.year, d.month, last) <= hi:
            yield "study.m", f"{d.year:04d}{d.month:02d}"
            d = date(d.year, d.month, last) + timedelta(days=1)
            continue
        yield "study.d", d.strftime("%Y%m%d")
        d += timedelta(days=1)
