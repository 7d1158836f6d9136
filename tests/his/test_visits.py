"""Visits: the HIS's word on a visit (arrived, fulfilled with the consultation's times,
noshow) settles our bookings, read back by the sync and by the reconciler; staff and
kiosks check patients in through the API; bookings never checked in become no-shows,
and the no-show rule bans through the ban engine, which operators lift with a reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from inventory import errors
from inventory.api.auth import mint_token
from inventory.domain import HospitalPolicy
from inventory.his.compensation import end_booking
from inventory.his.reconcile import VISIT_OUTCOME
from inventory.his.visit_sync import read_back_visits
from inventory.record.queries import QUERIES
from inventory.store.slot_store import PolicyBook
from inventory.visits.bans import apply_no_show_rule
from inventory.visits.noshow import VisitsConfig, mark_no_shows
from tests.his.conftest import CHINA, SimAdmin
from tests.his.world import World, today_schedule, tomorrow


def counted(family: str, **labels: str) -> float:
    """This process's value of one series (0 when it has none yet)."""
    return REGISTRY.get_sample_value(family, labels) or 0.0


async def scraped(
    http: aiohttp.ClientSession, api: dict[str, Any], family: str, **labels: str
) -> float:
    """The API process's value of one series, from its /metrics."""
    async with http.get(api["url"] + "/metrics") as answer:
        text = await answer.text()
    for found in text_string_to_metric_families(text):
        for sample in found.samples:
            if sample.name == family and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture
async def clean(world: World, admin: SimAdmin) -> World:
    """The world, with no faults in the simulator before and after the test."""
    return world


async def appointment_of(world: World, booking_id: str) -> str:
    """The HIS's appointment id of a booking it holds."""
    found = await world.his.find_appointment(booking_id)
    assert found is not None, booking_id
    return found.appointment_id


async def mark(world: World, booking_id: str, status: str, **times: str) -> None:
    """The hospital records the visit in the HIS."""
    appointment = await appointment_of(world, booking_id)
    await world.admin.call(
        "POST", f"appointments/{appointment}/status", {"status": status, **times}
    )


async def events(world: World, booking_id: str) -> list[str]:
    """The lifecycle event types of a booking, in order."""
    rows = await world.fetch(
        "SELECT type FROM lifecycle_events WHERE booking_id = $1 ORDER BY id", booking_id
    )
    return [r["type"] for r in rows]


async def test_his_visit_statuses_settle_bookings_once(clean: World) -> None:
    """arrived -> visited (checked in by the HIS), fulfilled -> visited with the
    consultation's start and end (the capacity model's service minutes), noshow ->
    no_show with nothing refunded; each recorded once however often it is read."""
    world = clean
    schedule = await world.fresh_schedule()
    first, second, third = (s.slot_id for s in schedule.slots[:3])
    arrived = await world.book(first, pay=True)
    fulfilled = await world.book(second, pay=True)
    missed = await world.book(third, pay=True)
    assert await world.submitter.drain() >= 3
    day = tomorrow()
    start = datetime(day.year, day.month, day.day, 8, 10, tzinfo=CHINA)
    await mark(world, arrived, "arrived")
    await mark(
        world,
        fulfilled,
        "fulfilled",
        consultation_start=start.isoformat(),
        consultation_end=(start + timedelta(minutes=12)).isoformat(),
    )
    await mark(world, missed, "noshow")

    visited_before = counted("inventory_visit_outcomes_total", outcome="visited", source="his")
    missed_before = counted("inventory_visit_outcomes_total", outcome="no_show", source="his")
    read = await read_back_visits(world.his, world.pool, [day])
    assert sorted(read.visited) == sorted([arrived, fulfilled])
    assert read.no_shows == [missed]
    [row] = await world.fetch(
        "SELECT status, checked_in_by, consultation_started_at, consultation_ended_at"
        " FROM bookings WHERE id = $1",
        fulfilled,
    )
    assert (row["status"], row["checked_in_by"]) == ("visited", "his")
    assert row["consultation_ended_at"] - row["consultation_started_at"] == timedelta(minutes=12)
    assert (await world.booking(arrived))["status"] == "visited"
    assert (await world.booking(missed))["status"] == "no_show"
    assert await world.refunds(missed) == []

    # The consultation of the first patient ends later: its times are added, once.
    await mark(
        world,
        arrived,
        "fulfilled",
        consultation_start=start.isoformat(),
        consultation_end=(start + timedelta(minutes=7)).isoformat(),
    )
    again = await read_back_visits(world.his, world.pool, [day])
    assert (again.visited, again.no_shows, again.consultations) == ([], [], [arrived])
    last = await read_back_visits(world.his, world.pool, [day])
    assert (last.visited, last.no_shows, last.consultations) == ([], [], [])
    for booking in (arrived, fulfilled):
        assert await events(world, booking) == ["booking_visited"]
    assert await events(world, missed) == ["booking_no_show"]
    # Counted once each, however often read (a consultation's times are no new visit).
    assert (
        counted("inventory_visit_outcomes_total", outcome="visited", source="his"),
        counted("inventory_visit_outcomes_total", outcome="no_show", source="his"),
    ) == (visited_before + 2, missed_before + 1)

    location = await world.location(first)
    outcomes = await world.fetch(
        QUERIES["list_department_booking_outcomes"], location.department_id, day, day
    )
    minutes = {round(r["service_minutes"]) for r in outcomes if r["service_minutes"]}
    assert {7, 12} <= minutes


async def test_reconciler_records_a_noshow_instead_of_cancelling(clean: World) -> None:
    """The HIS's noshow is a visit outcome, not an appointment cancelled in the HIS: the
    reconciler records the no-show (kind visit_outcome) and refunds nothing."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id, pay=True)
    assert await world.submitter.drain() >= 1
    await mark(world, booking, "noshow")
    report = await world.reconciler.reconcile(fix=True, first_day=tomorrow(), last_day=tomorrow())
    mine = [i for i in report.items if i.subject == booking]
    assert [(i.kind, i.action) for i in mine] == [(VISIT_OUTCOME, "fixed")]
    assert (await world.booking(booking))["status"] == "no_show"
    assert await world.refunds(booking) == []
    again = await world.reconciler.reconcile(fix=True, first_day=tomorrow(), last_day=tomorrow())
    assert not [i for i in again.items if i.subject == booking]


async def test_a_sync_round_stamps_the_visit_read_back(clean: World) -> None:
    """Each sync round reads visits back and says when (the read-back's lag)."""
    before = time.time()
    await clean.sync.sync()
    stamp = counted(
        "inventory_visit_readback_last_success_timestamp_seconds",
        connection=clean.sync.connection,
    )
    assert before <= stamp <= time.time()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session."""
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    api: dict[str, Any],
    path: str,
    body: Any,
    *,
    role: str = "staff",
    language: str = "zh-CN",
) -> tuple[int, Any]:
    """POST ``path`` with a token of ``role`` (staff, operator or none): (status, body)."""
    token = mint_token(
        api["settings"], "desk-1", staff=role == "staff", operator=role == "operator", ttl_s=600
    )
    async with http.post(
        api["url"] + path,
        json=body,
        headers={"Authorization": f"Bearer {token}", "Accept-Language": language},
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_check_in_route(
    clean: World, api: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """A kiosk checks today's booking in (visited, once); tomorrow's is 409
    check_in_not_open, a cancelled one 409 booking_not_checkable, an unknown one 404,
    and an account token 403."""
    world = clean
    _, (slot,) = await today_schedule(world, [3])
    booking = await world.book(slot, pay=True)
    path = f"/v1/staff/bookings/{booking}/check-in"
    status, body = await call(http, api, path, {"source": "kiosk"})
    assert status == 200, body
    assert (body["booking_id"], body["status"], body["checked_in_by"]) == (
        booking,
        "visited",
        "kiosk",
    )
    assert body["checked_in_at"].endswith("+08:00")
    assert await call(http, api, path, {"source": "staff"}) == (200, body)
    assert await events(world, booking) == ["booking_visited"]

    later = await world.book((await world.fresh_slot()).slot_id)
    status, body = await call(http, api, f"/v1/staff/bookings/{later}/check-in", {}, language="en")
    assert (status, body["code"]) == (409, "check_in_not_open")
    assert body["title"] == "Check-in opens on the day of the visit"

    cancelled = await world.book(slot, pay=True)
    assert await end_booking(world.pool, world.store, cancelled, outcome="cancelled", code="x")
    status, body = await call(http, api, f"/v1/staff/bookings/{cancelled}/check-in", {})
    assert (status, body["code"]) == (409, "booking_not_checkable")
    assert body["title"] == "该预约已取消或被拒绝，无法签到"

    unknown = booking[:-4] + "aaaa" if not booking.endswith("aaaa") else booking[:-4] + "bbbb"
    status, body = await call(http, api, f"/v1/staff/bookings/{unknown}/check-in", {})
    assert (status, body["code"]) == (404, "not_found")
    status, body = await call(http, api, path, {}, role="account")
    assert (status, body["code"]) == (403, "forbidden")
    status, body = await call(http, api, path, {"source": "robot"})
    assert (status, body["code"]) == (422, "validation_failed")


async def test_no_shows_ban_through_the_ban_engine_and_an_operator_lifts(
    clean: World, api: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """Two bookings of one patient never checked in become no-shows once their session
    and grace are over; with the rule "2 within 30 days ban for 7" the second bans the
    patient (reserve refused: blacklisted), with its history and one event; the rule
    decides once; an operator lifts the ban with a reason and the patient books again."""
    world = clean
    policy = HospitalPolicy(
        one_per_day=False,
        no_show_grace_s=0,
        no_show_ban_count=2,
        no_show_window_days=30,
        no_show_ban_days=7,
    )
    hospital = world.sync.hospital_id
    assert hospital is not None
    saved = world.store.policies, world.catalogue.policies.get(hospital)
    # Loading the schedule copies the policy's one-per-day switch into its tag.
    world.store.policies = PolicyBook(by_hospital={hospital: policy})
    world.catalogue.policies[hospital] = policy
    try:
        schedule_id, (one, two, three) = await today_schedule(world, [2, 2, 2])
        [patient] = await world.new_patients(1)
        bookings = []
        for slot in (one, two):
            hold = await world.hold(slot, patient)
            booked = await world.store.confirm(hold, account_id="", payment_ref="wx-ns")
            await world.bookings.record(booked.hold)
            bookings.append(hold)
        # The session is over (moved into the past, as time would).
        async with world.pool.acquire() as connection:
            await connection.execute(
                "UPDATE schedules SET release_at = now() - interval '4 hours',"
                " starts_at = now() - interval '3 hours',"
                " cancel_deadline = now() - interval '3 hours',"
                " ends_at = now() - interval '2 hours' WHERE id = $1",
                schedule_id,
            )
        no_shows_before = counted(
            "inventory_visit_outcomes_total", outcome="no_show", source="session_ended"
        )
        bans_before = counted("inventory_patient_bans_total", action="applied")
        marked = await mark_no_shows(world.pool, config=VisitsConfig(with_his=False))
        assert set(bookings) <= set(marked)
        assert counted(
            "inventory_visit_outcomes_total", outcome="no_show", source="session_ended"
        ) == no_shows_before + len(marked)
        for booking in bookings:
            assert (await world.booking(booking))["status"] == "no_show"
            assert await events(world, booking) == ["booking_no_show"]

        decisions = await apply_no_show_rule(world.pool, world.store, {hospital: policy}.get)
        [decision] = [d for d in decisions if d.patient_id == patient]
        assert decision.hospital_id == hospital
        assert sorted(decision.no_shows) == sorted(bookings)
        with pytest.raises(errors.PatientRuleError) as refused:
            await world.hold(three, patient)
        assert refused.value.context["rule"] == "blacklisted"
        assert await apply_no_show_rule(world.pool, world.store, {hospital: policy}.get) == []
        assert counted("inventory_patient_bans_total", action="applied") == bans_before + len(
            decisions
        )
        banned = await world.fetch(
            "SELECT type, payload FROM lifecycle_events WHERE patient_id = $1"
            " AND type = 'patient_banned'",
            patient,
        )
        assert len(banned) == 1
        assert sorted(banned[0]["payload"]["no_shows"]) == sorted(bookings)

        path = f"/v1/operator/hospitals/{hospital}/patients/{patient}/bans/lift"
        lifted_before = await scraped(http, api, "inventory_patient_bans_total", action="lifted")
        status, body = await call(http, api, path, {"reason": ""}, role="operator")
        assert (status, body["code"]) == (422, "validation_failed")
        status, body = await call(http, api, path, {"reason": "staff error"}, role="staff")
        assert (status, body["code"]) == (403, "forbidden")
        status, body = await call(
            http, api, path, {"reason": "院方核实：系统故障"}, role="operator"
        )
        assert (status, body) == (
            200,
            {"patient_id": patient, "hospital_id": hospital, "lifted": True},
        )
        assert await world.hold(three, patient)
        status, body = await call(http, api, path, {"reason": "again"}, role="operator")
        assert (status, body["lifted"]) == (200, False)
        # One lift counted (the second found no ban in force).
        assert (
            await scraped(http, api, "inventory_patient_bans_total", action="lifted")
            == lifted_before + 1
        )

        token = mint_token(api["settings"], "ops", operator=True, ttl_s=600)
        async with http.get(
            f"{api['url']}/v1/operator/hospitals/{hospital}/patients/{patient}/bans",
            headers={"Authorization": f"Bearer {token}"},
        ) as answer:
            assert answer.status == 200
            seen = await answer.json()
        assert seen["bans"] == []
        assert [(h["action"], h["decided_by"]) for h in seen["history"]] == [
            ("lifted", "desk-1"),
            ("banned", "no_show_rule"),
        ]
        assert seen["history"][0]["reason"] == "院方核实：系统故障"
        assert seen["history"][1]["banned_until"].endswith("+08:00")
    finally:
        world.store.policies = saved[0]
        if saved[1] is None:
            world.catalogue.policies.pop(hospital, None)
        else:
            world.catalogue.policies[hospital] = saved[1]
