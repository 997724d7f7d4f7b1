"""The policy's patient facts come from the records: encounters, care teams, labels."""

from __future__ import annotations

from fhir_helpers import TENANT, Fhir

from hdsvault.access.decision import AccessRequest, Operation
from hdsvault.access.policy import load_policy
from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.records.patient_context import RecordsPatientContext
from hdsvault.records.store import RecordStore

RPPS = "10003456789"


def test_facts_are_read_from_the_records_and_drive_the_policy(fhir: Fhir) -> None:
    patient = fhir.post(
        "/Patient",
        {
            "resourceType": "Patient",
            "name": [{"family": "Martin"}],
            "meta": {
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "R",
                    }
                ],
                "tag": [{"code": "VIP"}],
            },
        },
    ).json()["id"]
    pref = f"Patient/{patient}"
    doctor = fhir.post(
        "/Practitioner",
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": RPPS}],
        },
    ).json()["id"]
    fhir.post(
        "/CareTeam",
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": pref},
            "participant": [{"member": {"reference": f"Practitioner/{doctor}"}}],
        },
    )
    fhir.post(
        "/Encounter",
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": pref},
            "serviceType": {"coding": [{"code": "Oncology"}]},
        },
    )
    fhir.post(
        "/Encounter",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "EMER"},
            "subject": {"reference": pref},
            "serviceType": {"coding": [{"code": "emergency"}]},
        },
    )
    ctx = RecordsPatientContext(RecordStore(fhir.platform))
    assert ctx.care_units_with_active_encounter(TENANT, pref) == {"oncology"}
    assert ctx.care_team(TENANT, pref) == {f"Practitioner/{doctor}", RPPS}
    assert ctx.labels(TENANT, pref) == {"R", "VIP"}
    assert ctx.care_team(TENANT, "Patient/unknown") == frozenset()

    policy = load_policy("builtin")

    def decide(principal: Principal):  # type: ignore[no-untyped-def]
        return policy.evaluate(
            AccessRequest(principal, Operation.READ, TENANT, "Observation", patient=pref), ctx
        )

    in_team = Principal("oidc:dr", TENANT, Role.CLINICIAN, professional_id=RPPS)
    in_unit = Principal("oidc:nurse", TENANT, Role.NURSE, care_units=("oncology",))
    stranger = Principal(
        "oidc:other",
        TENANT,
        Role.CLINICIAN,
        professional_id="19999999999",
        care_units=("maternity",),
    )
    assert (decide(in_team).allowed, decide(in_team).rule) == (True, "sens.vip-staff.care-team")
    assert (decide(in_unit).allowed, decide(in_unit).rule) == (False, "sens.vip-staff")
    assert not decide(stranger).allowed

    # An ordinary patient with an encounter in oncology: the oncology nurse may read.
    plain = fhir.post(
        "/Patient", {"resourceType": "Patient", "name": [{"family": "Durand"}]}
    ).json()["id"]
    fhir.post(
        "/Encounter",
        {
            "resourceType": "Encounter",
            "status": "arrived",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{plain}"},
            "serviceType": {"coding": [{"code": "oncology"}]},
        },
    )
    unit_read = policy.evaluate(
        AccessRequest(in_unit, Operation.READ, TENANT, "Observation", patient=f"Patient/{plain}"),
        ctx,
    )
    assert unit_read.allowed, unit_read.reason
    assert not policy.evaluate(
        AccessRequest(stranger, Operation.READ, TENANT, "Observation", patient=f"Patient/{plain}"),
        ctx,
    ).allowed
