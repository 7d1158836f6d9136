"""Reconciliation against the simulator process: 100 divergences injected among two
thousand clean bookings are all found and classified, with no false positive, and fixed
exactly as the policy allows; the policy's parsing; `inventory reconcile`."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest

from inventory.his.reconcile import (
    CAPACITY_CHANGED,
    DEFAULT_FIX,
    FIXABLE,
    KINDS,
    MISSING_IN_HIS,
    MISSING_IN_POSTGRES,
    NEW_SCHEDULE,
    OTHER_CHANNEL,
    SCHEDULE_SUSPENDED,
    STATUS_MISMATCH,
    ReconcilePolicy,
)
from inventory.store import keys
from tests.his.conftest import SimAdmin
from tests.his.world import World, tomorrow

CLEAN_BOOKINGS = 2000


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, bytes, str]:
    """``inventory reconcile ARGS`` as a child process: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inventory",
        "reconcile",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return int(process.returncode or 0), out, err.decode(errors="replace")


def assert_json_log_lines(err: str) -> None:
    """Every line the command wrote to stderr is a JSON log object (not a bytes repr)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "the command logged nothing"
    for line in lines:
        assert isinstance(orjson.loads(line), dict), line


def _subjects(report: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in report.items:
        found.setdefault(item.kind, set()).add(item.subject)
    return found


async def test_hundred_divergences_among_thousands_of_bookings(
    world: World, admin: SimAdmin
) -> None:
    """2,000 clean bookings in the HIS, Postgres and Redis; 100 divergences of seven
    kinds injected into the HIS: a report-only run finds exactly them (0 false
    positives), a run with the default policy fixes the fixable ones and only those, and
    after the submitter's retries only the report-only kinds are left."""
    started = time.monotonic()
    rng = random.Random(5)
    days = [tomorrow() + timedelta(days=n) for n in range(6)]  # released, bookable
    schedules = [
        s for s in await world.his.list_schedules(days[0], days[-1]) if s.active and s.slots
    ]
    # -- two thousand clean bookings, each slot keeping one unit free
    plan: list[str] = []
    for schedule in schedules:
        for slot in schedule.slots:
            plan += [slot.slot_id] * max(0, slot.free - 1)
    rng.shuffle(plan)
    made = await world.book_many(plan[:CLEAN_BOOKINGS])
    assert len(made) == CLEAN_BOOKINGS
    await world.submitter.drain(timeout_s=60)
    rows = await world.fetch("SELECT status, count(*) AS n FROM bookings GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"his_confirmed": CLEAN_BOOKINGS}
    clean = await world.reconciler.reconcile(fix=False)
    assert clean.total == 0, clean.as_dict()["items"][:5]
    assert clean.checked["bookings"] == CLEAN_BOOKINGS

    # -- 100 divergences, each on a schedule of its own
    booked = await world.fetch(
        "SELECT id, schedule_id, slot_id, his_appointment_id FROM bookings ORDER BY id"
    )
    by_schedule: dict[str, list[Any]] = {}
    for row in booked:
        by_schedule.setdefault(row["schedule_id"], []).append(row)
    pool = [s for s in schedules if s.schedule_id in by_schedule]
    rng.shuffle(pool)
    take = iter(pool)
    expected: dict[str, set[str]] = {kind: set() for kind in KINDS}
    capacity_added: dict[str, int] = {}
    for _ in range(20):  # the HIS loses one of our appointments
        row = by_schedule[next(take).schedule_id][0]
        await admin.call("DELETE", f"appointments/{row['his_appointment_id']}")
        expected[MISSING_IN_HIS].add(row["id"])
    for _ in range(15):  # the hospital cancels one of our appointments
        row = by_schedule[next(take).schedule_id][0]
        await admin.call("POST", f"appointments/{row['his_appointment_id']}/cancel", {})
        expected[STATUS_MISMATCH].add(row["id"])
    for n in range(15):  # 加号
        slot = next(take).slots[0]
        capacity_added[slot.slot_id] = 1 + n % 3
        await admin.add_capacity(slot.slot_id, capacity_added[slot.slot_id])
        expected[CAPACITY_CHANGED].add(slot.slot_id)
    for n in range(15):  # booked at the window or by phone
        slot = next(take).slots[0]
        await admin.book_other(slot.slot_id, ("window", "phone")[n % 2])
        expected[OTHER_CHANNEL].add(slot.slot_id)
    for _ in range(10):  # 停诊
        schedule = next(take)
        await admin.suspend(schedule.schedule_id, "专家外出会诊")
        expected[SCHEDULE_SUSPENDED].add(schedule.schedule_id)
    for n in range(15):  # an appointment under our identifier that we never made
        slot = next(take).slots[0]
        tag = keys.department_day_tag(slot.slot_id.split("-dr")[0], days[0])
        ghost_id = keys.hold_id_for("ghost", str(n), tag)
        ghost = await world.his.create_appointment(ghost_id, slot.slot_id)
        expected[MISSING_IN_POSTGRES].add(ghost.appointment_id)
    doctors = sorted({s.schedule_id.rsplit("-", 2)[0] for s in schedules})
    for n in range(10):  # a new evening clinic
        day = days[0] + timedelta(days=1 + n)
        made_schedule = await admin.call(
            "POST",
            "schedules",
            {"doctor": doctors[n], "date": day.isoformat(), "session": "evening"},
        )
        expected[NEW_SCHEDULE].add(made_schedule["schedule"])
    expected = {kind: subjects for kind, subjects in expected.items() if subjects}
    assert sum(len(s) for s in expected.values()) == 100

    # -- report only: exactly the hundred, each classified
    found = await world.reconciler.reconcile(fix=False)
    assert _subjects(found) == expected
    assert found.total == 100
    assert {item.action for item in found.items} == {"reported"}

    # -- the default policy: what it names is fixed, the rest reported
    fixed = await world.reconciler.reconcile(fix=True)
    assert _subjects(fixed) == expected
    for item in fixed.items:
        want = "fixed" if item.kind in DEFAULT_FIX else "reported"
        assert (item.kind, item.subject, item.action, item.error) == (
            item.kind,
            item.subject,
            want,
            "",
        )
    his_slots = {
        s.slot_id: s
        for schedule in await world.his.list_schedules(days[0], days[-1])
        for s in schedule.slots
    }
    for slot_id, added in capacity_added.items():
        counts = await world.counts(slot_id)
        assert counts is not None
        assert counts.capacity == his_slots[slot_id].capacity
        assert his_slots[slot_id].capacity - added >= 2
    for slot_id in expected[OTHER_CHANNEL]:  # one unit kept back for the window / phone
        counts = await world.counts(slot_id)
        assert counts is not None
        assert counts.capacity == his_slots[slot_id].capacity - 1
    for schedule_id in expected[SCHEDULE_SUSPENDED]:
        rows = await world.fetch(
            "SELECT s.status, b.status AS booking, b.cancel_reason FROM schedules s"
            " JOIN bookings b ON b.schedule_id = s.id WHERE s.id = $1",
            schedule_id,
        )
        assert {(r["status"], r["booking"], r["cancel_reason"]) for r in rows} == {
            ("suspended", "cancelled", "suspended: 专家外出会诊")
        }
    for booking_id in expected[MISSING_IN_HIS]:
        assert (await world.booking(booking_id))["status"] == "confirmed"
    for booking_id in expected[STATUS_MISMATCH]:  # reported, untouched
        assert (await world.booking(booking_id))["status"] == "his_confirmed"
    for appointment_id in expected[MISSING_IN_POSTGRES]:  # reported, untouched
        appointment = await world.his.get_appointment(appointment_id)
        assert appointment is not None
        assert appointment.active

    # -- the submitter resends what the HIS lost; then only the reported kinds are left
    await world.submitter.drain(timeout_s=30)
    for booking_id in expected[MISSING_IN_HIS]:
        row = await world.booking(booking_id)
        assert row["status"] == "his_confirmed"
        assert await world.his.find_appointment(booking_id) is not None
    left = await world.reconciler.reconcile(fix=False)
    assert _subjects(left) == {
        kind: expected[kind] for kind in (MISSING_IN_POSTGRES, STATUS_MISMATCH)
    }
    runs = await world.fetch(
        "SELECT r.mode, r.status, r.found, count(i.id) AS items FROM reconciliation_runs r"
        " LEFT JOIN reconciliation_items i ON i.run_id = r.id GROUP BY r.id ORDER BY r.id"
    )
    assert [(r["mode"], r["status"], r["items"]) for r in runs] == [
        ("report", "completed", 0),
        ("report", "completed", 100),
        ("fix", "completed", 100),
        ("report", "completed", 30),
    ]
    assert runs[1]["found"] == {kind: len(subjects) for kind, subjects in expected.items()}
    # A runaway guard, not a speed measurement: the run takes ~25-45 s on two shared CPUs
    # (2,000 bookings through the HIS simulator); a reconciler that went quadratic would not.
    assert time.monotonic() - started < 120


async def test_report_only_policy_in_fix_mode_changes_nothing(
    world: World, admin: SimAdmin
) -> None:
    """With a policy that fixes nothing, a fix run reports a divergence and leaves it."""
    slot = await world.fresh_slot(day=tomorrow() + timedelta(days=7))
    await admin.add_capacity(slot.slot_id, 2)
    before = await world.counts(slot.slot_id)
    world.reconciler.policy = ReconcilePolicy.parse("none")
    try:
        report = await world.reconciler.reconcile(fix=True)
    finally:
        world.reconciler.policy = ReconcilePolicy()
    [item] = [i for i in report.items if i.subject == slot.slot_id]
    assert (item.kind, item.action) == (CAPACITY_CHANGED, "reported")
    assert await world.counts(slot.slot_id) == before


def test_policy_parsing() -> None:
    """Policies name kinds to fix, with default/all/none and -kind to take one away."""
    assert ReconcilePolicy.parse("default").fix == DEFAULT_FIX
    assert ReconcilePolicy.parse("all").fix == FIXABLE
    assert ReconcilePolicy.parse("report-only").fix == frozenset()
    mixed = ReconcilePolicy.parse("default,-other_channel,status_mismatch")
    assert mixed.fix == (DEFAULT_FIX - {OTHER_CHANNEL}) | {STATUS_MISMATCH}
    assert str(ReconcilePolicy.parse("none")) == "none"
    with pytest.raises(ValueError, match="unknown reconciliation kind"):
        ReconcilePolicy.parse("default,missing_in_redis")


async def test_cli_reports_as_json_and_fixes_with_a_policy(world: World, admin: SimAdmin) -> None:
    """`inventory reconcile --json` reports without changing anything (exit 1: drift
    left); `--fix --policy other_channel` fixes that kind and records both runs."""
    slot = await world.fresh_slot(day=tomorrow() + timedelta(days=7))
    await admin.book_other(slot.slot_id, "window")
    env = dict(os.environ)
    env.update(
        {
            "INVENTORY_REDIS_URL": world.redis.url,
            "INVENTORY_DATABASE_URL": world.database_url,
            "INVENTORY_HIS_URL": world.sim.fhir_url,
        }
    )
    code, out, err = await run_cli(env, "--json")
    assert code == 1, err
    assert_json_log_lines(err)
    report = orjson.loads(out)
    assert report["mode"] == "report"
    assert set(report["counts"]) == set(KINDS)
    [item] = [i for i in report["items"] if i["subject"] == slot.slot_id]
    assert (item["kind"], item["action"]) == (OTHER_CHANNEL, "reported")
    code, out, err = await run_cli(env, "--fix", "--policy", "other_channel")
    assert b"other_channel" in out, err
    counts = await world.counts(slot.slot_id)
    assert counts is not None
    assert counts.capacity == slot.capacity - 1
    runs = await world.fetch(
        "SELECT mode, policy FROM reconciliation_runs ORDER BY id DESC LIMIT 2"
    )
    assert [(r["mode"], r["policy"]) for r in runs] == [
        ("fix", ["other_channel"]),
        ("report", []),
    ]


async def test_reconciliation_drift_reaches_the_workers_metrics(
    world: World, admin: SimAdmin
) -> None:
    """A reconciliation that finds drift it may not fix sets
    ``inventory_reconciliation_drift`` on the worker's /metrics (the alert's input)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from inventory.devtools.servers import free_port
    from inventory.ops.sampler import WorkerHealth, start_metrics_server

    slot = await world.fresh_slot(day=tomorrow() + timedelta(days=7))
    await admin.book_other(slot.slot_id, "window")
    port = free_port()
    runner = await start_metrics_server(
        "127.0.0.1", port, WorkerHealth(None, interval_s=5.0, max_backlog=1)
    )
    assert runner is not None
    try:
        report = await world.reconciler.reconcile(fix=False)
        assert report.unresolved[OTHER_CHANNEL] >= 1
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as answer,
        ):
            text = await answer.text()
    finally:
        await runner.cleanup()
    drift = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "inventory_reconciliation_drift"
        for sample in family.samples
    }
    # The gauge is what this run left unresolved, kind by kind (the module's world is
    # shared, so earlier tests may have left drift of other kinds: it must show as well).
    assert drift[OTHER_CHANNEL] == report.unresolved[OTHER_CHANNEL]
    assert drift[STATUS_MISMATCH] == report.unresolved.get(STATUS_MISMATCH, 0)
    assert {kind: value for kind, value in drift.items() if value} == {
        kind: count for kind, count in report.unresolved.items() if count
    }
