"""A hospital's report computed from a seeded history with known answers: per department
and for the hospital, through the record's queries (Postgres), the API (JSON, CSV, PNG,
SVG, scoped to the hospital's operators) and the CLI.

The history (visit date VISIT, release at R, sessions at START):

* department A, schedule A1 (capacity 2): h1 taken at R+10 s (visited), h2 at R+30 s
  (no-show): sold out 30 s after release;
* department A, schedule A2 (capacity 3 over two slots): h3 at R+5 s expires at R+600 s;
  h4 at R+700 s is booked then cancelled 30 hours before the session; h5 at R+800 s is
  booked: never sold out, two units taken an hour after release;
* department B, schedule B1 (capacity 1): h7 at R+1 s, booked and cancelled four days
  before the session at R+50 s; h6 at R+60 s booked: sold out 1 s after release;
* outside the report: a schedule of A on a later date, and another hospital's.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.reports.figures import lead_bucket
from tests.api.conftest import ApiServer
from tests.databases import Databases

VISIT = date(2027, 3, 8)
LATER = date(2027, 4, 8)
RELEASE = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)
START = datetime(2027, 3, 8, 0, 0, tzinfo=UTC)


class History:
    def __init__(self, suffix: str) -> None:
        self.hospital = f"rep-h-{suffix}"
        self.other_hospital = f"rep-o-{suffix}"
        self.a = f"rep-a-{suffix}"
        self.b = f"rep-b-{suffix}"
        self.other_department = f"rep-od-{suffix}"
        self.suffix = suffix


async def _schedule(
    c: asyncpg.Connection,
    history: History,
    schedule_id: str,
    *,
    hospital: str,
    department: str,
    doctor: str,
    day: date,
    capacities: list[int],
) -> list[str]:
    starts = datetime(day.year, day.month, day.day, 0, 0, tzinfo=UTC)
    await c.execute(
        "INSERT INTO schedules (id, hospital_id, department_id, doctor_id, visit_date, session,"
        " starts_at, ends_at, release_at, cancel_deadline, fee_fen, location)"
        " VALUES ($1, $2, $3, $4, $5, 'morning', $6, $7, $8, $9, 5000, 'Room 1')",
        schedule_id,
        hospital,
        department,
        doctor,
        day,
        starts,
        starts + timedelta(hours=4),
        RELEASE,
        starts - timedelta(hours=12),
    )
    slot_ids = []
    for index, capacity in enumerate(capacities):
        slot_id = f"{schedule_id}-sl{index}"
        await c.execute(
            "INSERT INTO slots (id, schedule_id, starts_at, ends_at, capacity)"
            " VALUES ($1, $2, $3, $4, $5)",
            slot_id,
            schedule_id,
            starts + timedelta(minutes=30 * index),
            starts + timedelta(minutes=30 * (index + 1)),
            capacity,
        )
        slot_ids.append(slot_id)
    return slot_ids


async def _hold(
    c: asyncpg.Connection,
    *,
    department: str,
    day: date,
    slot_id: str,
    schedule_id: str,
    patient: str,
    created_s: float,
    ended_s: float | None = None,
    booking: str | None = None,
    cancelled_at: datetime | None = None,
) -> None:
    """A hold taken ``created_s`` after release (ended ``ended_s`` after it), and its
    booking in the status ``booking`` (None: never booked)."""
    hold_id = f"{department}.{day:%Y%m%d}.{base64.b32encode(os.urandom(15)).decode().lower()}"
    created = RELEASE + timedelta(seconds=created_s)
    ended = None if ended_s is None else RELEASE + timedelta(seconds=ended_s)
    if booking == "cancelled":
        assert cancelled_at is not None
        ended = cancelled_at
    state = "held"
    if booking is not None:
        state = "cancelled" if booking == "cancelled" else "booked"
    elif ended is not None:
        state = "expired"
    await c.execute(
        "INSERT INTO holds (id, tag, slot_id, schedule_id, account_id, patient_id, channel,"
        " amount_fen, state, deadline, payment_ref, created_at, confirmed_at, ended_at)"
        " VALUES ($1, $2, $3, $4, 'acct-rep', $5, 'wechat', 5000, $6, $7, $8, $9, $10, $11)",
        hold_id,
        f"{department}:{day:%Y%m%d}",
        slot_id,
        schedule_id,
        patient,
        state,
        created + timedelta(minutes=15),
        "" if booking is None else "wx-" + hold_id[-8:],
        created,
        None if booking is None else created + timedelta(seconds=1),
        ended,
    )
    if booking is None:
        return
    settled = booking in ("visited", "no_show")
    await c.execute(
        "INSERT INTO bookings (id, tag, slot_id, schedule_id, account_id, patient_id,"
        " amount_fen, payment_ref, status, confirmed_at, his_appointment_no, cancelled_at)"
        " VALUES ($1, $2, $3, $4, 'acct-rep', $5, 5000, $6, $7, $8, $9, $10)",
        hold_id,
        f"{department}:{day:%Y%m%d}",
        slot_id,
        schedule_id,
        patient,
        "wx-" + hold_id[-8:],
        booking,
        created + timedelta(seconds=1),
        "7" if settled else None,
        cancelled_at,
    )


async def _waitlist_entry(
    c: asyncpg.Connection,
    *,
    department: str,
    day: date,
    schedule_id: str,
    patient: str,
    seq: int,
    state: str,
    offered: bool,
) -> None:
    """A waitlist entry of ``schedule_id`` that joined after release and is now
    ``state`` (offered a unit on the way when ``offered``)."""

    def entry_id() -> str:
        return f"{department}.{day:%Y%m%d}.{base64.b32encode(os.urandom(15)).decode().lower()}"

    joined = RELEASE + timedelta(minutes=seq)
    await c.execute(
        "INSERT INTO waitlist_entries (id, tag, schedule_id, account_id, patient_id,"
        " channel, join_seq, state, offer_hold_id, joined_at, offered_at, ended_at,"
        " end_reason, last_seq)"
        " VALUES ($1, $2, $3, 'acct-rep', $4, 'wechat', $5, $6, $7, $8, $9, $10, $11, $5)",
        entry_id(),
        f"{department}:{day:%Y%m%d}",
        schedule_id,
        patient,
        seq,
        state,
        entry_id(),
        joined,
        joined + timedelta(hours=1) if offered else None,
        None if state in ("waiting", "offered") else joined + timedelta(hours=2),
        "" if state in ("waiting", "offered") else state,
    )


async def seed_history(url: str, history: History) -> None:
    c = await asyncpg.connect(url)
    try:
        async with c.transaction():
            for hospital in (history.hospital, history.other_hospital):
                await c.execute(
                    "INSERT INTO hospitals (id, name) VALUES ($1, $2)", hospital, "医院 " + hospital
                )
            for department, hospital, name in (
                (history.a, history.hospital, "心内科"),
                (history.b, history.hospital, "骨科"),
                (history.other_department, history.other_hospital, "急诊"),
            ):
                await c.execute(
                    "INSERT INTO departments (id, hospital_id, name) VALUES ($1, $2, $3)",
                    department,
                    hospital,
                    name,
                )
                await c.execute(
                    "INSERT INTO doctors (id, hospital_id, department_id, name)"
                    " VALUES ($1, $2, $3, 'Dr')",
                    f"doc-{department}",
                    hospital,
                    department,
                )
            await c.execute(
                "INSERT INTO patients (id, account_id, blind_index, key_id, name_enc,"
                " phone_enc, resident_id_enc, gender, birth_date)"
                " VALUES ($1, 'acct-rep', $2, 'k1', '\\x01', '\\x01', '\\x01', 'male',"
                " '1980-01-01')",
                f"pat-{history.suffix}",
                uuid.uuid4().bytes * 2,
            )
            patient = f"pat-{history.suffix}"
            a1 = await _schedule(
                c,
                history,
                f"a1-{history.suffix}",
                hospital=history.hospital,
                department=history.a,
                doctor=f"doc-{history.a}",
                day=VISIT,
                capacities=[2],
            )
            a2 = await _schedule(
                c,
                history,
                f"a2-{history.suffix}",
                hospital=history.hospital,
                department=history.a,
                doctor=f"doc-{history.a}",
                day=LATER,
                capacities=[2, 1],
            )
            b1 = await _schedule(
                c,
                history,
                f"b1-{history.suffix}",
                hospital=history.hospital,
                department=history.b,
                doctor=f"doc-{history.b}",
                day=VISIT,
                capacities=[1],
            )
            later = await _schedule(
                c,
                history,
                f"al-{history.suffix}",
                hospital=history.hospital,
                department=history.b,
                doctor=f"doc-{history.b}",
                day=LATER + timedelta(days=40),
                capacities=[1],
            )
            other = await _schedule(
                c,
                history,
                f"o1-{history.suffix}",
                hospital=history.other_hospital,
                department=history.other_department,
                doctor=f"doc-{history.other_department}",
                day=VISIT,
                capacities=[1],
            )
            a2_start = datetime(LATER.year, LATER.month, LATER.day, tzinfo=UTC)
            b1_start = datetime(VISIT.year, VISIT.month, VISIT.day, tzinfo=UTC)
            holds: list[dict[str, Any]] = [
                {
                    "department": history.a,
                    "day": VISIT,
                    "slot_id": a1[0],
                    "schedule_id": f"a1-{history.suffix}",
                    "created_s": 10,
                    "booking": "visited",
                },
                {
                    "department": history.a,
                    "day": VISIT,
                    "slot_id": a1[0],
                    "schedule_id": f"a1-{history.suffix}",
                    "created_s": 30,
                    "booking": "no_show",
                },
                {
                    "department": history.a,
                    "day": LATER,
                    "slot_id": a2[0],
                    "schedule_id": f"a2-{history.suffix}",
                    "created_s": 5,
                    "ended_s": 600,
                },
                {
                    "department": history.a,
                    "day": LATER,
                    "slot_id": a2[0],
                    "schedule_id": f"a2-{history.suffix}",
                    "created_s": 700,
                    "booking": "cancelled",
                    "cancelled_at": a2_start - timedelta(hours=30),
                },
                {
                    "department": history.a,
                    "day": LATER,
                    "slot_id": a2[1],
                    "schedule_id": f"a2-{history.suffix}",
                    "created_s": 800,
                    "booking": "confirmed",
                },
                {
                    "department": history.b,
                    "day": VISIT,
                    "slot_id": b1[0],
                    "schedule_id": f"b1-{history.suffix}",
                    "created_s": 1,
                    "booking": "cancelled",
                    "cancelled_at": RELEASE + timedelta(seconds=50),
                },
                {
                    "department": history.b,
                    "day": VISIT,
                    "slot_id": b1[0],
                    "schedule_id": f"b1-{history.suffix}",
                    "created_s": 60,
                    "booking": "confirmed",
                },
                {
                    "department": history.b,
                    "day": LATER + timedelta(days=40),
                    "slot_id": later[0],
                    "schedule_id": f"al-{history.suffix}",
                    "created_s": 3,
                    "booking": "no_show",
                },
                {
                    "department": history.other_department,
                    "day": VISIT,
                    "slot_id": other[0],
                    "schedule_id": f"o1-{history.suffix}",
                    "created_s": 3,
                    "booking": "no_show",
                },
            ]
            for hold in holds:
                await _hold(c, patient=patient, **hold)
            # The waitlists: of a1, one entry booked its offer, one let it lapse, one
            # still waits; of b1, one left without an offer; of the other hospital's,
            # one booked (not this hospital's report).
            entries = [
                (history.a, VISIT, f"a1-{history.suffix}", "taken", True),
                (history.a, VISIT, f"a1-{history.suffix}", "lapsed", True),
                (history.a, VISIT, f"a1-{history.suffix}", "waiting", False),
                (history.b, VISIT, f"b1-{history.suffix}", "left", False),
                (history.other_department, VISIT, f"o1-{history.suffix}", "taken", True),
            ]
            for seq, (department, day, schedule_id, state, offered) in enumerate(entries, 1):
                await _waitlist_entry(
                    c,
                    department=department,
                    day=day,
                    schedule_id=schedule_id,
                    patient=patient,
                    seq=seq,
                    state=state,
                    offered=offered,
                )
            assert b1_start - (RELEASE + timedelta(seconds=50)) > timedelta(days=3)
    finally:
        await c.close()


@pytest.fixture(scope="module")
async def seeded(databases: Databases) -> AsyncIterator[tuple[str, History]]:
    async with databases.scratch() as url:
        history = History(uuid.uuid4().hex[:6])
        await seed_history(url, history)
        yield url, history


EXPECTED_A = {
    "schedules": 2,
    "capacity": 5,
    "booked": 3,
    "utilisation": 0.6,
    "filled_first_hour": 0.8,
    "sold_out": 1,
    "sold_out_share": 0.5,
    "median_sell_out_s": 30.0,
    "p90_sell_out_s": 30.0,
    "cancelled": 1,
    "cancellation_rate": 0.25,
    "cancellation_leads": {
        "over_3d": 0,
        "1d_to_3d": 1,
        "2h_to_24h": 0,
        "under_2h": 0,
        "after_start": 0,
    },
    "rejected": 0,
    "visited": 1,
    "no_show": 1,
    "no_show_rate": 0.5,
    "waitlist_joined": 3,
    "waitlist_offered": 2,
    "waitlist_taken": 1,
    "waitlist_lapsed": 1,
    "waitlist_conversion": 1 / 3,
    "waitlist_offer_take_rate": 0.5,
}
EXPECTED_B = {
    "schedules": 1,
    "capacity": 1,
    "booked": 1,
    "utilisation": 1.0,
    "filled_first_hour": 1.0,
    "sold_out": 1,
    "sold_out_share": 1.0,
    "median_sell_out_s": 1.0,
    "p90_sell_out_s": 1.0,
    "cancelled": 1,
    "cancellation_rate": 0.5,
    "cancellation_leads": {
        "over_3d": 1,
        "1d_to_3d": 0,
        "2h_to_24h": 0,
        "under_2h": 0,
        "after_start": 0,
    },
    "rejected": 0,
    "visited": 0,
    "no_show": 0,
    "no_show_rate": None,
    "waitlist_joined": 1,
    "waitlist_offered": 0,
    "waitlist_taken": 0,
    "waitlist_lapsed": 0,
    "waitlist_conversion": 0.0,
    "waitlist_offer_take_rate": None,
}
EXPECTED_TOTAL = {
    "schedules": 3,
    "capacity": 6,
    "booked": 4,
    "utilisation": 4 / 6,
    "filled_first_hour": 5 / 6,
    "sold_out": 2,
    "sold_out_share": 2 / 3,
    "median_sell_out_s": 15.5,
    "p90_sell_out_s": 27.1,
    "cancelled": 2,
    "cancellation_rate": 2 / 6,
    "cancellation_leads": {
        "over_3d": 1,
        "1d_to_3d": 1,
        "2h_to_24h": 0,
        "under_2h": 0,
        "after_start": 0,
    },
    "rejected": 0,
    "visited": 1,
    "no_show": 1,
    "no_show_rate": 0.5,
    "waitlist_joined": 4,
    "waitlist_offered": 2,
    "waitlist_taken": 1,
    "waitlist_lapsed": 1,
    "waitlist_conversion": 0.25,
    "waitlist_offer_take_rate": 0.5,
}


def assert_figures(found: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert found[name] == pytest.approx(value), name
        else:
            assert found[name] == value, name


async def test_the_report_of_a_known_history(seeded: tuple[str, History]) -> None:
    from inventory.record.pool import create_pool
    from inventory.reports.build import hospital_report

    url, history = seeded
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        report = (await hospital_report(pool, history.hospital, VISIT, LATER)).as_dict()
    finally:
        await pool.close()
    departments = {d["department_id"]: d for d in report["departments"]}
    assert set(departments) == {history.a, history.b}
    assert_figures(departments[history.a], EXPECTED_A)
    assert_figures(departments[history.b], EXPECTED_B)
    assert_figures(report["total"], EXPECTED_TOTAL)
    assert departments[history.a]["name"] == "心内科"
    # Visits are settled but no consultation length is recorded: no queue figures.
    assert departments[history.a]["queue"] == {
        "unavailable": "no consultation lengths are recorded"
    }


def test_cancellation_lead_buckets() -> None:
    hour = 3600.0
    assert lead_bucket(-1.0) == "after_start"
    assert lead_bucket(0.0) == "under_2h"
    assert lead_bucket(2 * hour - 1) == "under_2h"
    assert lead_bucket(2 * hour) == "2h_to_24h"
    assert lead_bucket(24 * hour) == "1d_to_3d"
    assert lead_bucket(72 * hour) == "over_3d"


# -- through the API and the CLI ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def report_api(
    seeded: tuple[str, History], redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApiServer]:
    from inventory.devtools.servers import free_port
    from tests.api.conftest import api_env, launch_api, mark_store_verified, stop_api

    url, _ = seeded
    await mark_store_verified(redis_server.url, url)
    server = launch_api(
        api_env(redis_server.url, url, free_port()),
        tmp_path_factory.mktemp("report-api") / "api.log",
    )
    try:
        yield server
    finally:
        stop_api(server.process)


async def test_the_report_through_the_api(
    report_api: ApiServer, seeded: tuple[str, History]
) -> None:
    from inventory.api.auth import mint_token

    _, history = seeded
    own = {
        "Authorization": "Bearer "
        + mint_token(
            report_api.settings, "ops-rep", operator=True, hospitals=[history.hospital], ttl_s=600
        )
    }
    other = {
        "Authorization": "Bearer "
        + mint_token(
            report_api.settings,
            "ops-rep",
            operator=True,
            hospitals=[history.other_hospital],
            ttl_s=600,
        )
    }
    base = f"{report_api.url}/v1/operator/hospitals/{history.hospital}/report"
    period = {"from": VISIT.isoformat(), "to": LATER.isoformat()}
    async with aiohttp.ClientSession() as http:
        async with http.get(base, params=period, headers=own) as answer:
            assert answer.status == 200
            report = await answer.json()
        assert report["from"] == VISIT.isoformat()
        assert_figures(report["total"], EXPECTED_TOTAL)
        async with http.get(base, params=period | {"format": "csv"}, headers=own) as answer:
            assert answer.status == 200
            assert answer.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await answer.text())))
        assert [row["department_id"] for row in rows][-1] == "*"
        total = rows[-1]
        assert total["capacity"] == "6"
        assert float(total["utilisation"]) == pytest.approx(4 / 6)
        assert total["cancelled_over_3d"] == "1"
        for image, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
            for kind in ("rates", "cancellations"):
                async with http.get(
                    base + "/plot", params=period | {"kind": kind, "image": image}, headers=own
                ) as answer:
                    assert answer.status == 200, await answer.text()
                    body = await answer.read()
                    assert body.startswith(magic)
        async with http.get(base, params=period, headers=other) as answer:
            assert answer.status == 404
        async with http.get(
            base, params={"from": LATER.isoformat(), "to": VISIT.isoformat()}, headers=own
        ) as answer:
            assert answer.status == 422
        unknown = f"{report_api.url}/v1/operator/hospitals/no-such-hospital/report"
        platform = report_api.headers("ops-platform", operator=True)
        async with http.get(unknown, params=period, headers=platform) as answer:
            assert answer.status == 404


async def test_the_report_from_the_cli(
    report_api: ApiServer, seeded: tuple[str, History], tmp_path: Any
) -> None:
    _, history = seeded
    plot = tmp_path / "rates.svg"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "inventory",
            "report",
            "--hospital",
            history.hospital,
            "--from",
            VISIT.isoformat(),
            "--to",
            LATER.isoformat(),
            "--plot",
            str(plot),
        ],
        env=report_api.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_figures(json.loads(done.stdout)["total"], EXPECTED_TOTAL)
    assert plot.read_bytes().startswith(b"<?xml")
    refused = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "inventory",
            "report",
            "--hospital",
            history.hospital,
            "--from",
            LATER.isoformat(),
            "--to",
            VISIT.isoformat(),
        ],
        env=report_api.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
