"""The HIS simulator as a server: it speaks valid FHIR R4, seeds the demo hospital,
answers errors as OperationOutcomes and keeps its state across a restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from inventory.his import mapping
from inventory.his.client import FhirHisClient
from inventory.his.fhir import FHIR_JSON, SYSTEMS
from inventory.his.types import HisPatient, HisRefusal
from inventory.simulators.his.process import SimProcess
from tests.his.conftest import CHINA, SimAdmin, booking_id, client_config, tomorrow


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with session.get(url) as response:
        return response.status, response.content_type, await response.json(content_type=None)


def _resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["resourceType"] == "Bundle":
        return [document] + [e["resource"] for e in document.get("entry", [])]
    return [document]


async def test_every_resource_the_sim_serves_is_valid_fhir(
    sim: SimProcess, admin: SimAdmin, his: FhirHisClient
) -> None:
    """Metadata, every search and read, and error answers validate as FHIR (R4B models)."""
    slot = await admin.fresh_slot(his)
    made = await his.create_appointment(booking_id(), slot.slot_id, HisPatient("李四"))
    await admin.book_other(slot.slot_id, "window")
    day = tomorrow().isoformat()
    base = sim.fhir_url
    urls = [
        f"{base}/metadata",
        f"{base}/Organization",
        f"{base}/Organization/cardiology",
        f"{base}/Location",
        f"{base}/Practitioner",
        f"{base}/Practitioner/cardiology-dr1",
        f"{base}/PractitionerRole?_include=PractitionerRole:practitioner",
        f"{base}/PractitionerRole/role-cardiology-dr1",
        f"{base}/Schedule?date={day}&_include=Schedule:actor&_revinclude=Slot:schedule",
        f"{base}/Schedule/{slot.schedule_id}",
        f"{base}/Slot?schedule=Schedule/{slot.schedule_id}",
        f"{base}/Slot/{slot.slot_id}",
        f"{base}/Appointment?date={day}",
        f"{base}/Appointment?slot.schedule=Schedule/{slot.schedule_id}",
        f"{base}/Appointment/{made.appointment_id}",
    ]
    seen: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for url in urls:
            status, content_type, document = await _get(session, url)
            assert status == 200, url
            assert content_type == FHIR_JSON
            for resource in _resources(document):
                mapping.validate_any(resource)
                seen.add(resource["resourceType"])
        for url, expected in (
            (f"{base}/Appointment/no-such", 404),
            (f"{base}/Schedule?colour=blue", 400),
            (f"{base}/Encounter", 404),
        ):
            status, content_type, document = await _get(session, url)
            assert status == expected
            assert content_type == FHIR_JSON
            assert document["resourceType"] == "OperationOutcome"
            mapping.validate_any(document)
    assert seen >= {
        "CapabilityStatement",
        "Bundle",
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "Schedule",
        "Slot",
        "Appointment",
    }


async def test_search_pages_follow_next_links(sim: SimProcess, admin: SimAdmin) -> None:
    """A search pages by _count; the client reads every page and gets each schedule once."""
    async with FhirHisClient(client_config(sim, page_size=7)) as small_pages:
        paged = await small_pages.list_schedules(tomorrow(), tomorrow())
    async with FhirHisClient(client_config(sim)) as one_page:
        whole = await one_page.list_schedules(tomorrow(), tomorrow())
    assert [s.schedule_id for s in paged] == [s.schedule_id for s in whole]
    assert len(whole) > 7
    state = await admin.state()
    assert state["requests"]["by_resource"]["Schedule"] >= len(whole) // 7 + 1


async def test_the_demo_hospital_is_seeded(admin: SimAdmin, his: FhirHisClient) -> None:
    """At least 5 departments, 20 doctors with titles and specialties, 14 days of
    morning and afternoon schedules from today, slots with capacity and a fee."""
    summary = (await admin.state())["state"]
    today = datetime.now(tz=CHINA).date()
    assert summary["departments"] >= 5
    assert summary["practitioners"] >= 20
    assert summary["first_day"] == today.isoformat()
    assert summary["last_day"] == (today + timedelta(days=13)).isoformat()
    catalogue = await his.fetch_catalogue()
    assert catalogue.hospital_id == "demo-hospital"
    assert len(catalogue.departments) >= 5
    assert len(catalogue.doctors) >= 20
    assert all(d.title and d.specialty and d.name for d in catalogue.doctors)
    assert {d.title for d in catalogue.doctors} >= {"主任医师", "住院医师"}
    assert {loc.department_id for loc in catalogue.locations} == {
        d.department_id for d in catalogue.departments
    }
    schedules = await his.list_schedules(today, today + timedelta(days=13))
    assert {s.visit_date for s in schedules} == {today + timedelta(days=n) for n in range(14)}
    assert {s.session for s in schedules} == {"morning", "afternoon"}
    assert {s.doctor_id for s in schedules} == {d.doctor_id for d in catalogue.doctors}
    for schedule in schedules:
        assert schedule.fee_fen > 0
        assert schedule.release_at is not None
        assert schedule.cancel_deadline is not None
        assert schedule.cancel_deadline < schedule.starts_at
        assert len(schedule.slots) >= 2
        assert all(slot.capacity >= 1 for slot in schedule.slots)
        assert schedule.location_name


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    """Appointments, numbers, suspensions and capacity changes are there after a restart,
    and the hospital is not seeded a second time."""
    with SimProcess(tmp_path / "restart", seed_rng=3) as sim:
        async with aiohttp.ClientSession() as session:
            admin = SimAdmin(sim, session)
            async with FhirHisClient(client_config(sim)) as his:
                slot = await admin.fresh_slot(his)
                first = await his.create_appointment(booking_id(), slot.slot_id)
                other = await admin.fresh_slot(his)
                await admin.add_capacity(other.slot_id, 3)
                await admin.suspend(other.schedule_id, "院内会议")
            before = (await admin.state())["state"]
        sim.restart()
        async with aiohttp.ClientSession() as session:
            admin = SimAdmin(sim, session)
            after = (await admin.state())["state"]
            async with FhirHisClient(client_config(sim)) as his:
                again = await his.find_appointment(str(first.booking_id))
                schedule = await his.get_schedule(other.schedule_id)
    assert after == before
    assert again == first
    assert schedule is not None
    assert not schedule.active
    assert schedule.status_reason == "院内会议"
    grown = next(s for s in schedule.slots if s.slot_id == other.slot_id)
    assert grown.capacity == other.capacity + 3
    assert grown.status == "busy-unavailable"


@pytest.mark.parametrize(
    ("settings", "status"),
    [({"error_rate": 2}, 400), ({"colour": 1}, 400), ({"error_status": 404}, 400)],
)
async def test_admin_refuses_bad_fault_settings(
    admin: SimAdmin, settings: dict[str, Any], status: int
) -> None:
    """Fault settings out of range or unknown are refused and change nothing."""
    before = (await admin.state())["faults"]
    async with admin.session.post(f"{admin.sim.base_url}/$admin/faults", json=settings) as response:
        assert response.status == status
    assert (await admin.state())["faults"] == before


async def test_identifier_systems_are_the_documented_ones(
    admin: SimAdmin, his: FhirHisClient
) -> None:
    """Our booking id and the appointment number travel as the documented identifiers,
    another channel's booking under its own system."""
    slot = await admin.fresh_slot(his)
    ours = booking_id()
    await his.create_appointment(ours, slot.slot_id)
    [window] = await admin.book_other(slot.slot_id, "window")
    async with aiohttp.ClientSession() as session:
        _, _, bundle = await _get(
            session, f"{admin.sim.fhir_url}/Appointment?slot=Slot/{slot.slot_id}"
        )
    systems = {
        e["resource"]["id"]: {i["system"]: i["value"] for i in e["resource"]["identifier"]}
        for e in bundle["entry"]
    }
    assert sorted(v.get(SYSTEMS.booking) for v in systems.values() if SYSTEMS.booking in v) == [
        ours
    ]
    assert systems[window["id"]][SYSTEMS.channel_identifier("window")] == window["identifier"]
    assert all(SYSTEMS.appointment_number in v for v in systems.values())


async def test_admin_schedule_changes_show_over_fhir(admin: SimAdmin, his: FhirHisClient) -> None:
    """A new schedule appears, a suspension can be lifted, and the hospital's own cancel
    and a lost appointment show in what the HIS serves."""
    day = tomorrow() + timedelta(days=20)
    made = await admin.call(
        "POST",
        "schedules",
        {
            "doctor": "pediatrics-dr2",
            "date": day.isoformat(),
            "session": "evening",
            "slots": 2,
            "capacity": [3, 1],
            "fee_fen": 2500,
        },
    )
    schedule = await his.get_schedule(made["schedule"])
    assert schedule is not None
    assert (schedule.session, schedule.fee_fen, schedule.visit_date) == ("evening", 2500, day)
    assert [s.capacity for s in schedule.slots] == [3, 1]
    assert schedule.department_id == "pediatrics"
    await admin.suspend(schedule.schedule_id)
    await admin.call("POST", f"schedules/{schedule.schedule_id}/resume")
    reopened = await his.get_schedule(schedule.schedule_id)
    assert reopened is not None
    assert reopened.active
    assert reopened.status_reason is None
    slot = schedule.slots[0]
    cancelled = await his.create_appointment(booking_id(), slot.slot_id)
    lost = await his.create_appointment(booking_id(), slot.slot_id)
    await admin.call(
        "POST", f"appointments/{cancelled.appointment_id}/cancel", {"reason": "医生调班"}
    )
    await admin.call("DELETE", f"appointments/{lost.appointment_id}")
    again = await his.get_appointment(cancelled.appointment_id)
    assert again is not None
    assert (again.status, again.cancel_reason) == ("cancelled", "医生调班")
    assert await his.find_appointment(str(lost.booking_id)) is None
    after = await his.get_schedule(schedule.schedule_id)
    assert after is not None
    assert after.slots[0].booked == 0
    assert (await admin.state())["state"]["slots_with_count_drift"] == 0


async def test_creates_without_the_condition_cannot_book_twice(
    sim: SimProcess, admin: SimAdmin, his: FhirHisClient
) -> None:
    """Without If-None-Exist a taken identifier is refused (409 conflict); a condition
    that contradicts the body is refused (400)."""
    slot = await admin.fresh_slot(his)
    ours = booking_id()
    await his.create_appointment(ours, slot.slot_id)
    body = {
        "resourceType": "Appointment",
        "status": "booked",
        "identifier": [{"system": SYSTEMS.booking, "value": ours}],
        "slot": [{"reference": f"Slot/{slot.slot_id}"}],
        "participant": [{"actor": {"display": "赵六"}, "status": "accepted"}],
    }
    headers = {"Content-Type": FHIR_JSON}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sim.fhir_url}/Appointment", json=body, headers=headers) as r:
            assert r.status == 409
            outcome = mapping.validate(await r.json(content_type=None), OperationOutcome)
        async with session.post(
            f"{sim.fhir_url}/Appointment",
            json=body,
            headers={**headers, "If-None-Exist": f"identifier={SYSTEMS.booking}|other"},
        ) as r:
            assert r.status == 400
    assert mapping.refusal_of(outcome) is HisRefusal.CONFLICT
    assert (
        len(
            [
                a
                for a in await his.search_appointments(schedule_id=slot.schedule_id)
                if a.booking_id == ours
            ]
        )
        == 1
    )
