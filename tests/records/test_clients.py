"""Real FHIR clients from PyPI (fhirpy, fhirclient) against the server under uvicorn.

Create, read, update, delete, search with paging (following ``next`` links) and history,
through each client's own API: no request is hand-built here except where a client has no
call for the interaction (history in fhirpy goes through its generic ``execute``).
"""

from __future__ import annotations

from typing import Any

import pytest
from fhir_helpers import LiveServer


def test_fhirpy(live_server: LiveServer) -> None:
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import ResourceNotFound

    client = SyncFHIRClient(live_server.url, authorization=f"Bearer {live_server.token}")
    pat = client.resource(
        "Patient",
        name=[{"family": "Fhirpy", "given": ["Anna"]}],
        gender="female",
        birthDate="1980-05-01",
        identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "280057510800208"}],
    )
    pat.save()
    assert pat.id and pat["meta"]["versionId"] == "1"
    again = client.reference("Patient", pat.id).to_resource()
    assert again["name"][0]["family"] == "Fhirpy"
    pat["gender"] = "other"
    pat.save()
    assert pat["meta"]["versionId"] == "2"
    for i in range(5):
        client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject=pat.to_reference(),
            valueQuantity={"value": 60 + i, "unit": "/min"},
        ).save()
    page = client.resources("Observation").search(subject=f"Patient/{pat.id}").limit(2).fetch()
    assert len(page) == 2
    everything = client.resources("Observation").search(patient=pat.id).limit(2).fetch_all()
    assert len(everything) == 5  # fetch_all follows the next links
    assert client.resources("Observation").search(patient=pat.id).count() == 5
    assert (
        client.resources("Patient").search(name="fhirpy", birthdate="1980").first()["id"] == pat.id
    )
    history = client.execute(f"Patient/{pat.id}/_history", method="get")
    assert history["total"] == 2
    pat.delete()
    with pytest.raises(ResourceNotFound):
        client.reference("Patient", pat.id).to_resource()


def test_fhirclient(live_server: LiveServer) -> None:
    from fhirclient import client as smart_client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    smart = smart_client.FHIRClient(
        settings={"app_id": "hdsvault-tests", "api_base": live_server.url}
    )
    server = smart.server
    assert server is not None
    server.session.headers["Authorization"] = f"Bearer {live_server.token}"
    p = Patient(
        {
            "name": [{"family": "Smartclient", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "1975-02-03",
        }
    )
    created: dict[str, Any] = p.create(server)
    pid = created["id"]
    read = Patient.read(pid, server)
    assert read.name[0].family == "Smartclient"
    read.gender = "unknown"
    read.update(server)
    assert Patient.read(pid, server).gender == "unknown"
    for i in range(4):
        Observation(
            {
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "valueQuantity": {"value": 70 + i, "unit": "kg"},
            }
        ).create(server)
    search = Observation.where(struct={"subject": f"Patient/{pid}", "_count": "3"})
    first_page = search.perform(server)
    assert first_page.total == 4 and len(first_page.entry) == 3
    all_obs = list(search.perform_resources_iter(server))  # follows next links
    assert len(all_obs) == 4
    history = server.request_json(f"Patient/{pid}/_history")
    assert history["total"] == 2
    read.delete(server)
    with pytest.raises(Exception):
        Patient.read(pid, server)
