"""Doctor substitution (替诊) cut short by kill -9: the API is killed while 40 patients
accept another doctor's schedule on another day, then the worker (killed once itself
while it recovers the moves) finishes or undoes every one. Afterwards each patient holds
exactly one unit (the old booking or the new one), no move is pending, every offer whose
move was done is accepted, and no accepted offer lacks its new booking."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer
from inventory.domain import HoldState
from inventory.store import keys
from tests.api.helpers import Catalogue, uid

from .stack import (
    Stack,
    kill_api_during,
    patients,
    reserve,
    stop_process,
    wait_ready,
    wait_until,
    wait_verified,
)
from .test_reschedule_crash import _decided_some, _hold, _none_pending

pytestmark = pytest.mark.slow

PATIENTS = 40


@pytest.fixture
def stack(stack: Stack) -> Stack:
    """The API and the worker on the private Redis."""
    stack.start_worker()
    return stack


async def test_api_and_worker_killed_mid_acceptances_leave_one_unit_per_patient(
    stack: Stack, private_redis: RedisServer, database: str, http: aiohttp.ClientSession
) -> None:
    """kill -9 of the API during 40 concurrent acceptances, then of the worker while it
    recovers them: every patient ends with exactly one unit, offers agree with moves."""
    await wait_verified(private_redis.url)
    await wait_ready(stack, http)
    shop = await Catalogue(stack.api, http).create(policy={"token_window_s": 1})
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    suspended, (from_slot,), _ = await shop.schedule([PATIENTS], visit_date=day)
    shop.doctor_id = uid("doc")
    await shop.put(
        f"/v1/operator/doctors/{shop.doctor_id}",
        {
            "hospital_id": shop.hospital_id,
            "department_id": shop.department_id,
            "name": "Dr Wang",
            "title": "主治医师",
            "specialty": "arrhythmia",
        },
    )
    target, (to_slot,), _ = await shop.schedule([PATIENTS], visit_date=day + timedelta(days=1))
    pairs = await patients(stack, http, PATIENTS)
    bookings: list[tuple[str, str]] = []
    for account, patient in pairs:
        status, hold = await reserve(stack, http, account, patient, from_slot)
        assert status == 201, hold
        async with http.post(
            stack.api.url + f"/v1/holds/{hold['hold_id']}/confirm",
            json={"payment_ref": f"wx-{patient}"},
            headers=stack.api.headers(account),
        ) as answer:
            assert answer.status == 200, await answer.text()
        bookings.append((account, hold["hold_id"]))
    async with http.post(
        stack.api.url + f"/v1/operator/schedules/{suspended}/substitute",
        json={"target_schedule_id": target, "respond_within_s": 3600},
        headers=shop.op,
    ) as answer:
        assert answer.status == 200, await answer.text()

    assert stack.worker is not None
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    to_tag = keys.department_day_tag(shop.department_id, day + timedelta(days=1))
    moves = [(account, old, uuid.uuid4().hex) for account, old in bookings]

    async def accept(account: str, old: str, key: str) -> int:
        async with http.post(
            stack.api.url + f"/v1/bookings/{old}/substitution",
            json={"accept": True},
            headers={**stack.api.headers(account), "Idempotency-Key": key},
        ) as answer:
            await answer.read()
            return answer.status

    results = await kill_api_during(stack, [accept(*m) for m in moves])
    assert sum(isinstance(r, aiohttp.ClientError) for r in results) > 0, results

    stack.start_worker()
    await wait_until(lambda: _decided_some_or_none(database), timeout_s=60)
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    stack.start_worker()
    await wait_until(lambda: _none_pending(database), timeout_s=90)

    client = Redis.from_url(private_redis.url, decode_responses=True)
    connection = await asyncpg.connect(database)
    try:
        accepted = 0
        for account, old_id, key in moves:
            new_id = keys.hold_id_for(account, "reschedule:" + key, to_tag)
            old, new = await _hold(client, old_id), await _hold(client, new_id)
            assert old is not None
            assert old.moving_to == "", old
            booked = [h for h in (old, new) if h is not None and h.state is HoldState.BOOKED]
            assert len(booked) == 1, (old, new)
            offer = await connection.fetchrow(
                "SELECT status, new_booking_id FROM substitution_offers WHERE booking_id = $1",
                old_id,
            )
            move = await connection.fetchval("SELECT status FROM reschedules WHERE id = $1", new_id)
            if move == "done":
                assert (offer["status"], offer["new_booking_id"]) == ("accepted", new_id)
                assert booked[0].hold_id == new_id
                accepted += 1
            else:
                # Not moved: the offer is open again, or its acceptance never reached a
                # move (the API died first); either way the old booking stands.
                assert offer["status"] in ("offered", "accepting"), offer
                assert booked[0].hold_id == old_id
        assert accepted > 0
        counts = await client.hgetall(keys.tag_keys(to_tag).slots)
        assert int(counts[f"{to_slot}:booked"]) == accepted
    finally:
        await connection.close()
        await client.aclose()
        stop_process(stack.api.process)


async def _decided_some_or_none(database: str) -> bool:
    """Some move decided by the worker, or none left to decide (the API finished them)."""
    return await _decided_some(database) or await _none_pending(database)
