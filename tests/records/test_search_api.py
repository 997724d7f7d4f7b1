"""Search through the REST API: parameter kinds, paging, sorting, includes, chains, errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from fhir_helpers import Fhir, assert_outcome, create, observation, patient

RPPS = "urn:oid:1.2.250.1.71.4.2.1"


@pytest.fixture
def seeded(fhir: Fhir) -> dict[str, Any]:
    """Three patients, a practitioner, observations; returns their ids."""
    p1 = create(
        fhir,
        patient(
            "Dupont", birthDate="1970-01-02", identifier=[{"system": "urn:mrn", "value": "P1"}]
        ),
    )
    p2 = create(fhir, patient("Durand", birthDate="1985-06-30", gender="female"))
    p3 = create(fhir, patient("Lefèvre", birthDate="2001-12-01", active=True))
    pr = create(
        fhir,
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": RPPS, "value": "10003615049"}],
            "name": [{"family": "Médecin", "given": ["Anne"]}],
        },
    )
    o1 = create(fhir, observation(f"Patient/{p1['id']}", "8302-2", 180))
    o2 = create(fhir, observation(f"Patient/{p1['id']}", "29463-7", 75.5))
    o3 = create(fhir, observation(f"Patient/{p2['id']}", "8302-2", 165))
    return {
        "p1": p1["id"],
        "p2": p2["id"],
        "p3": p3["id"],
        "pr": pr["id"],
        "o1": o1["id"],
        "o2": o2["id"],
        "o3": o3["id"],
    }


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    }


def search(fhir: Fhir, query: str, **kw: Any) -> dict[str, Any]:
    r = fhir.get(query, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["type"] == "searchset"
    return body


def test_parameter_kinds(fhir: Fhir, seeded: dict[str, Any]) -> None:
    s = seeded
    assert ids(search(fhir, "/Patient?name=dup")) == {s["p1"]}
    assert ids(search(fhir, "/Patient?name=DU")) == {s["p1"], s["p2"]}
    assert ids(search(fhir, "/Patient?family=lefevre")) == {s["p3"]}  # accents folded
    assert ids(search(fhir, "/Patient?family:exact=Lefèvre")) == {s["p3"]}
    assert ids(search(fhir, "/Patient?family:exact=lefevre")) == set()
    assert ids(search(fhir, "/Patient?name:contains=ura")) == {s["p2"]}
    assert ids(search(fhir, "/Patient?gender=female")) == {s["p2"]}
    assert ids(search(fhir, "/Patient?gender:not=female")) == {s["p1"], s["p3"]}
    assert ids(search(fhir, "/Patient?identifier=urn:mrn|P1")) == {s["p1"]}
    assert ids(search(fhir, "/Patient?identifier=P1")) == {s["p1"]}
    assert ids(search(fhir, "/Patient?active:missing=true")) == {s["p1"], s["p2"]}
    assert ids(search(fhir, "/Patient?birthdate=1970")) == {s["p1"]}
    assert ids(search(fhir, "/Patient?birthdate=ge1985-01-01")) == {s["p2"], s["p3"]}
    assert ids(search(fhir, "/Patient?birthdate=lt1985-06-30")) == {s["p1"]}
    assert ids(search(fhir, "/Patient?birthdate=ge1980&birthdate=le1990")) == {s["p2"]}
    assert ids(search(fhir, f"/Patient?_id={s['p1']},{s['p3']}")) == {s["p1"], s["p3"]}
    assert ids(search(fhir, f"/Practitioner?identifier={RPPS}|10003615049")) == {s["pr"]}
    assert ids(search(fhir, "/Observation?code=http://loinc.org|8302-2")) == {s["o1"], s["o3"]}
    assert ids(search(fhir, f"/Observation?subject=Patient/{s['p1']}")) == {s["o1"], s["o2"]}
    assert ids(search(fhir, f"/Observation?patient={s['p1']}")) == {s["o1"], s["o2"]}
    assert ids(search(fhir, "/Observation?value-quantity=gt170")) == {s["o1"]}
    assert ids(search(fhir, "/Observation?value-quantity=75.5|http://unitsofmeasure.org|cm")) == {
        s["o2"]
    }
    assert ids(search(fhir, "/Observation?date=2020-03")) == {s["o1"], s["o2"], s["o3"]}


def test_last_updated_and_post_search(fhir: Fhir, seeded: dict[str, Any]) -> None:
    assert search(fhir, "/Patient?_lastUpdated=gt2000-01-01")["total"] == 3
    assert search(fhir, "/Patient?_lastUpdated=lt2000-01-01")["total"] == 0
    r = fhir.client.post(
        f"{fhir.base}/Patient/_search",
        content="name=dup",
        headers=fhir.headers({"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert r.status_code == 200 and ids(r.json()) == {seeded["p1"]}


def test_chain_include_revinclude(fhir: Fhir, seeded: dict[str, Any]) -> None:
    s = seeded
    b = search(fhir, "/Observation?subject.identifier=urn:mrn|P1")
    assert ids(b) == {s["o1"], s["o2"]}
    b = search(fhir, "/Observation?subject:Patient.name=durand")
    assert ids(b) == {s["o3"]}
    assert search(fhir, "/Observation?subject:Patient.name=nobody")["total"] == 0
    b = search(fhir, f"/Observation?_id={s['o1']}&_include=Observation:subject")
    assert ids(b) == {s["o1"]} and ids(b, "include") == {s["p1"]}
    b = search(fhir, f"/Patient?_id={s['p1']}&_revinclude=Observation:subject")
    assert ids(b) == {s["p1"]} and ids(b, "include") == {s["o1"], s["o2"]}
    assert b["total"] == 1


def test_paging_sorting_summary_elements(fhir: Fhir) -> None:
    made = [create(fhir, patient(f"Page{i:02d}"))["id"] for i in range(7)]
    b = search(fhir, "/Patient?name=page&_count=3")
    assert b["total"] == 7 and len(b["entry"]) == 3
    links = {link["relation"]: link["url"] for link in b["link"]}
    assert "next" in links and "previous" not in links
    seen = [e["resource"]["id"] for e in b["entry"]]
    while "next" in links:
        u = urlsplit(links["next"])
        page = search(fhir, u.path.split(fhir.base, 1)[1] + "?" + u.query)
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert "previous" in links
    assert seen == made  # default order: _lastUpdated, then id; no duplicates, no gaps
    b = search(fhir, "/Patient?name=page&_sort=-_lastUpdated&_count=2")
    assert [e["resource"]["id"] for e in b["entry"]] == made[::-1][:2]
    b = search(fhir, "/Patient?name=page&_sort=-family&_count=3")
    assert [e["resource"]["name"][0]["family"] for e in b["entry"]] == [
        "Page06",
        "Page05",
        "Page04",
    ]
    b = search(fhir, "/Patient?name=page&_summary=count")
    assert b["total"] == 7 and "entry" not in b
    b = search(fhir, "/Patient?name=page&_elements=gender&_count=1")
    res = b["entry"][0]["resource"]
    assert "gender" in res and "name" not in res
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    assert len(search(fhir, "/Patient?_count=0").get("entry", [])) == 0
    b = search(fhir, "/Patient?_count=5000")
    assert b["total"] == 7


def test_unknown_and_strict(fhir: Fhir, seeded: dict[str, Any]) -> None:
    b = search(fhir, "/Patient?whatever=1&name=dup")
    assert ids(b) == {seeded["p1"]}
    outcome = [e for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "whatever" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert_outcome(
        fhir.get("/Patient?whatever=1", headers={"Prefer": "handling=strict"}), 400, "whatever"
    )


@pytest.mark.parametrize(
    "query",
    [
        "/Patient?birthdate=not-a-date",
        "/Patient?birthdate=ge",
        "/Patient?_count=-1",
        "/Patient?_count=abc",
        "/Patient?_sort=nonsense",
        "/Patient?_id=bad%20id",
        "/Patient?name:unknownmod=x",
        "/Patient?_include=Nope:subject",
        "/Patient?_has=Observation:subject:code=1",
        "/Observation?value-quantity=abc",
        "/Observation?subject.name.family=x",
        "/Patient?_offset=-3",
        "/Patient?_summary=nope",
        "/Patient?identifier=a|b|c",
        "/Patient?_lastUpdated=ge2020-99",
        "/Patient?_text=cancer",
        "/Patient?_revinclude=*",
    ],
)
def test_garbage_search_values(fhir: Fhir, query: str) -> None:
    assert_outcome(fhir.get(query), 400)
