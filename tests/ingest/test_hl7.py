"""HL7 v2 over MLLP: python-hl7's client sends ADT and ORU; resources are searchable through
the records service; malformed messages get AE/AR with nothing half-written; a repeated
control id gets the same ACK and writes nothing twice."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import INS_DUPONT, INS_MARTIN, INS_OID, adt_a01, adt_a03, adt_a08, adt_a40, oru_r01

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal
from hdsvault.config import Hl7SenderSettings, Settings
from hdsvault.db.schema import hl7_messages, resources
from hdsvault.hl7v2.server import MllpServer
from hdsvault.platform import Platform
from hdsvault.records import searching
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def mllp(platform: Platform, tenant: str, settings: Settings) -> Iterator[tuple[str, int]]:
    settings.hl7.port = 0
    settings.hl7.senders = [
        Hl7SenderSettings(application="SIH_ADT", facility="CHU_PARIS", tenant=tenant),
        Hl7SenderSettings(application="LABO", tenant=tenant),
    ]
    server = MllpServer(platform)
    address = server.start()
    try:
        yield address
    finally:
        server.stop()


def send(address: tuple[str, int], message: str) -> hl7.Message:
    with MLLPClient(address[0], address[1], encoding="utf-8") as client:
        raw = client.send_message(message.encode("utf-8"))
    return hl7.parse(raw.decode("utf-8").strip("\x0b\x1c\r"))


def ack_code(ack: hl7.Message) -> str:
    return str(ack.segment("MSA")[1])


def search(platform: Platform, tenant: str, rtype: str, pairs: list[tuple[str, str]]) -> list[dict]:
    store = RecordStore(platform)
    caller = Caller(Principal("test:clinician", tenant, Role.CLINICIAN), tenant)
    result = searching.search(store, caller, rtype, pairs)
    return [s.resource for s in result.page.matches if s.resource]


def count(platform: Platform, table) -> int:  # type: ignore[no-untyped-def]
    with platform.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_adt_flow_patient_and_encounter(
    mllp: tuple[str, int], platform: Platform, tenant: str
) -> None:
    a = send(mllp, adt_a01())
    assert ack_code(a) == "AA", str(a)
    patients = search(
        platform, tenant, "Patient", [("identifier", f"urn:oid:{INS_OID}|{INS_DUPONT}")]
    )
    assert len(patients) == 1
    p = patients[0]
    assert p["name"][0]["family"] == "DUPONT" and p["name"][0]["given"] == ["Hélène"]
    assert p["birthDate"] == "1980-01-15" and p["gender"] == "female"
    encounters = search(platform, tenant, "Encounter", [("subject", f"Patient/{p['id']}")])
    assert len(encounters) == 1 and encounters[0]["status"] == "in-progress"

    assert ack_code(send(mllp, adt_a08())) == "AA"
    p2 = search(platform, tenant, "Patient", [("identifier", INS_DUPONT)])
    assert len(p2) == 1 and p2[0]["id"] == p["id"] and p2[0]["name"][0]["family"] == "DUPONT-LEROY"

    assert ack_code(send(mllp, adt_a03())) == "AA"
    encounters = search(platform, tenant, "Encounter", [("subject", f"Patient/{p['id']}")])
    assert len(encounters) == 1 and encounters[0]["status"] == "finished"
    assert encounters[0]["period"]["end"].startswith("2026-12-01")


def test_duplicate_control_id_is_idempotent(
    mllp: tuple[str, int], platform: Platform, tenant: str
) -> None:
    first = send(mllp, adt_a01("DUP-1"))
    n_resources = count(platform, resources)
    again = send(mllp, adt_a01("DUP-1", given="Autre"))  # same control id: same ACK, nothing new
    assert ack_code(first) == ack_code(again) == "AA"
    assert str(first.segment("MSH")[10]) == str(again.segment("MSH")[10])
    assert count(platform, resources) == n_resources
    assert count(platform, hl7_messages) == 1
    p = search(platform, tenant, "Patient", [("identifier", INS_DUPONT)])
    assert p[0]["name"][0]["given"] == ["Hélène"]


def test_oru_report_and_observations(
    mllp: tuple[str, int], platform: Platform, tenant: str
) -> None:
    a = send(mllp, oru_r01())
    assert ack_code(a) == "AA", str(a)
    patient = search(platform, tenant, "Patient", [("identifier", INS_MARTIN)])[0]
    reports = search(
        platform, tenant, "DiagnosticReport", [("subject", f"Patient/{patient['id']}")]
    )
    assert len(reports) == 1 and len(reports[0]["result"]) == 3
    obs = search(platform, tenant, "Observation", [("code", "http://loinc.org|2823-3")])
    assert len(obs) == 1 and obs[0]["valueQuantity"]["value"] == 4.2
    assert obs[0]["subject"]["reference"] == f"Patient/{patient['id']}"
    # a corrected result under a new control id updates, it does not duplicate
    assert ack_code(send(mllp, oru_r01("LAB0002", potassium="5.6"))) == "AA"
    obs = search(platform, tenant, "Observation", [("code", "http://loinc.org|2823-3")])
    assert len(obs) == 1 and obs[0]["valueQuantity"]["value"] == 5.6


@pytest.mark.parametrize(
    ("message", "expected", "err_code"),
    [
        ("this is not HL7", "AR", "100"),
        (adt_a01("BAD-1").replace("SIH_ADT", "UNKNOWN_APP"), "AR", "204"),
        (adt_a01("BAD-2").replace("ADT^A01^ADT_A01", "ADT^A99^ADT_A01"), "AR", "201"),
        (
            adt_a01("BAD-3")
            .replace(f"PID|1||{INS_DUPONT}", "PID|1||")
            .replace("~IPP123456", "IPP123456")
            .replace("PID|1||IPP123456^^^CHU_PARIS&1.2.250.1.71.4.2.2.750712184&ISO^PI", "PID|1||"),
            "AE",
            "101",
        ),
        (oru_r01("BAD-4", potassium="quatre"), "AE", "102"),
        (adt_a01("BAD-5").replace("|19800115|", "|1980-13-45|"), "AE", "102"),
    ],
    ids=[
        "not-hl7",
        "unknown-sender",
        "unsupported-event",
        "no-patient-id",
        "bad-number",
        "bad-date",
    ],
)
def test_malformed_messages_rejected_nothing_written(
    mllp: tuple[str, int], platform: Platform, message: str, expected: str, err_code: str
) -> None:
    before = count(platform, resources)
    a = send(mllp, message)
    assert ack_code(a) == expected, str(a)
    err = a.segment("ERR")
    assert str(err[3]).startswith(err_code), str(a)
    assert count(platform, resources) == before


def test_a40_merge(mllp: tuple[str, int], platform: Platform, tenant: str) -> None:
    assert ack_code(send(mllp, adt_a01())) == "AA"
    a = send(mllp, adt_a40())
    assert ack_code(a) == "AA", str(a)
    survivor = search(platform, tenant, "Patient", [("identifier", INS_DUPONT)])[0]
    prior = search(platform, tenant, "Patient", [("identifier", "IPP999999")])[0]
    assert prior["active"] is False
    assert prior["link"][0] == {
        "other": {"reference": f"Patient/{survivor['id']}"},
        "type": "replaced-by",
    }
    assert survivor["link"][0]["type"] == "replaces"


def test_messages_stored_sealed(
    mllp: tuple[str, int], platform: Platform, settings: Settings
) -> None:
    send(mllp, adt_a01("SEAL-1", family="ZYGOMATIQUE"))
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("file grep on SQLite; PostgreSQL is covered by the imaging dump test")
    db = Path(settings.database_url.removeprefix("sqlite:///"))
    for f in [db, *db.parent.glob(db.name + "-wal")]:
        data = f.read_bytes()
        assert b"ZYGOMATIQUE" not in data and INS_DUPONT.encode() not in data


def test_stopping_the_listener_closes_its_open_connections(
    platform: Platform, tenant: str, settings: Settings
) -> None:
    """A sender still connected when the listener stops sees its connection closed at once
    (its handler ended on the running loop, not left to the garbage collector)."""
    settings.hl7.port = 0
    settings.hl7.senders = [Hl7SenderSettings(application="SIH_ADT", tenant=tenant)]
    server = MllpServer(platform)
    host, port = server.start()
    with socket.create_connection((host, port), timeout=10) as idle:
        time.sleep(0.2)  # accepted: its handler waits for a first message
        server.stop()
        assert idle.recv(100) == b""  # closed by the server, not timed out


def test_a_port_already_taken_is_reported_at_once(platform: Platform, settings: Settings) -> None:
    """The MLLP listener's bind failure is raised by ``start`` with its reason, at once; it
    used to kill the listener's thread and leave ``start`` waiting 15 s for a vague error
    (seen in CI, two listeners given the same port)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings.hl7.host, settings.hl7.port = "127.0.0.1", taken.getsockname()[1]
        server = MllpServer(platform)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"could not start on 127\.0\.0\.1") as raised:
            server.start()
        assert time.monotonic() - started < 5
        assert isinstance(raised.value.__cause__, OSError)
        server.stop()  # nothing to stop: no error either
