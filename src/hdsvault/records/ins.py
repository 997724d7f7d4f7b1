"""French national health identifiers (INS): the NIR control key, checked on every write.

The INS (Identifiant National de Santé) of a patient is carried as a ``Patient.identifier``
whose system names the kind of number (ANS, "Référentiel INS"):

====================================  ===============================================
``urn:oid:1.2.250.1.213.1.4.8``       INS-NIR (the social security number)
``urn:oid:1.2.250.1.213.1.4.9``       INS-NIA (number awaiting registration)
``urn:oid:1.2.250.1.213.1.4.10``      INS-NIR of test identities
``urn:oid:1.2.250.1.213.1.4.11``      INS-NIR of demonstration identities
====================================  ===============================================

All four have the NIR layout: 13 characters (sex, year, month, department — ``2A``/``2B`` in
Corsica —, commune, order) and a 2-digit key = 97 − (number mod 97), where the number is the
13 characters read in base 10 after replacing ``2A`` by ``19`` and ``2B`` by ``18``. A wrong
key is nearly always a typing error, and a record filed under a mistyped INS is a patient
safety risk (identity vigilance), so the store refuses it naming the identifier.

RPPS practitioner identifiers (``urn:oid:1.2.250.1.71.4.2.1``) need no check here: they are
ordinary token-searchable identifiers.
"""

from __future__ import annotations

import re
from typing import Any

from hdsvault.records.errors import Issue

INS_SYSTEMS = {
    "urn:oid:1.2.250.1.213.1.4.8": "INS-NIR",
    "urn:oid:1.2.250.1.213.1.4.9": "INS-NIA",
    "urn:oid:1.2.250.1.213.1.4.10": "INS-NIR (test)",
    "urn:oid:1.2.250.1.213.1.4.11": "INS-NIR (demo)",
}
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"

_NIR = re.compile(r"[1-478][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{6}[0-9]{2}")


def nir_key(first13: str) -> int:
    """The control key of the 13 first characters of a NIR (Corsica substituted)."""
    digits = first13.upper().replace("2A", "19").replace("2B", "18")
    return 97 - int(digits) % 97


def nir_problem(value: str) -> str | None:
    """Why ``value`` is not a valid NIR with key, or None if it is."""
    if len(value) != 15:
        return f"must be 15 characters (13 + a 2-digit key), got {len(value)}"
    if not _NIR.fullmatch(value.upper()):
        return "is not in the NIR format (sex, year, month, department, commune, order, key)"
    key = nir_key(value[:13])
    if int(value[13:]) != key:
        return f"has control key {value[13:]}, expected {key:02d}"
    return None


def ins_issues(resource: dict[str, Any]) -> list[Issue]:
    """Issues for every INS identifier of a Patient whose NIR is malformed or mis-keyed."""
    if resource.get("resourceType") != "Patient":
        return []
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return []
    issues: list[Issue] = []
    for i, ident in enumerate(identifiers):
        if not isinstance(ident, dict):
            continue
        kind = INS_SYSTEMS.get(ident.get("system", ""))
        value = ident.get("value")
        if kind is None or not isinstance(value, str):
            continue
        problem = nir_problem(value)
        if problem is not None:
            issues.append(
                Issue(
                    f"{kind} identifier {problem}",
                    "value",
                    expression=(f"Patient.identifier[{i}].value",),
                )
            )
    return issues
