"""A move (改约) to a dearer window with payments on charges the fee difference: the move
holds the new unit and opens a payment of the difference; paying it completes the move
(the old booking cancelled, both payments backing the new one, a cancellation refunding
both); unpaid past its deadline, the unit is freed and the old booking kept; a
difference paid for a move that can no longer happen is refunded whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from inventory.booking.rescheduling import recover_moves
from inventory.domain import HospitalPolicy
from inventory.store.slot_store import PolicyBook, SlotStore
from tests.api.conftest import ApiServer
from tests.api.helpers import Catalogue

from .conftest import PaySimServer
from .helpers import Patient, backdate_hold, payment_row, sim, wait_for

CHEAP, DEAR = 1200, 9000


async def _booked(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession
) -> tuple[Patient, str, str, str]:
    """A paid 12-yuan booking and a 90-yuan window the next day: (patient, booking, its
    payment, the dearer slot)."""
    shop = await Catalogue(pay_api, http).create(policy={"one_per_day": False})
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    _, (cheap,), _ = await shop.schedule([2], visit_date=day, fee_fen=CHEAP)
    _, (dear,), _ = await shop.schedule([2], visit_date=day + timedelta(days=1), fee_fen=DEAR)
    patient = await Patient(pay_api, http).register()
    booking_id = (await patient.hold(cheap))["hold_id"]
    payment_id = (await patient.start_payment(booking_id))["payment_id"]
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    assert paid["notify_status"] == 204, paid
    return patient, booking_id, payment_id, dear


async def _move(patient: Patient, booking_id: str, slot: str, key: str) -> tuple[int, Any]:
    return await patient.call(
        "POST",
        f"/v1/bookings/{booking_id}/reschedule",
        json={"slot_id": slot},
        headers={"Idempotency-Key": key},
    )


async def test_dearer_window_charges_the_difference_then_moves(
    pay_api: ApiServer, pay_sim: PaySimServer, pay_db: asyncpg.Pool, http: aiohttp.ClientSession
) -> None:
    """The move awaits a 78-yuan payment (the old booking still booked and not cancellable
    meanwhile); once paid the same key answers the done move; cancelling the new booking
    refunds both payments: 90 yuan in all, once each."""
    patient, booking_id, first_payment, dear = await _booked(pay_api, pay_sim, http)
    key = uuid.uuid4().hex
    status, pending = await _move(patient, booking_id, dear, key)
    assert status == 201, pending
    assert pending["status"] == "awaiting_payment"
    assert (pending["charge_fen"], pending["booking"]) == (DEAR - CHEAP, None)
    new_id = pending["reschedule_id"]
    assert (await _move(patient, booking_id, dear, key))[1]["payment_id"] == pending["payment_id"]
    status, refused = await patient.call("POST", f"/v1/bookings/{booking_id}/cancel", json={})
    assert (status, refused["code"]) == (409, "reschedule_in_progress"), refused

    difference = await patient.start_payment(new_id, expect=200)
    assert (difference["payment_id"], difference["amount_fen"]) == (
        pending["payment_id"],
        DEAR - CHEAP,
    )
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{difference['payment_id']}/pay")
    assert paid["notify_status"] == 204, paid

    status, done = await _move(patient, booking_id, dear, key)
    assert status == 201, done
    assert (done["status"], done["charge_fen"], done["refund_fen"]) == ("done", DEAR - CHEAP, 0)
    assert done["booking"]["status"] == "confirmed"
    status, old = await patient.get(f"/v1/bookings/{booking_id}")
    assert (status, old["status"], old["cancel_reason"]) == (200, "cancelled", "rescheduled")
    row = await payment_row(pay_db, difference["payment_id"])
    assert (row["status"], row["booking_id"]) == ("paid", new_id)
    assert (await payment_row(pay_db, first_payment))["booking_id"] == new_id

    status, cancelled = await patient.call("POST", f"/v1/bookings/{new_id}/cancel", json={})
    assert (status, cancelled["status"]) == (200, "cancelled"), cancelled

    async def all_refunded() -> bool:
        items = (await sim(http, pay_sim, "GET", "/sim/refunds"))["items"]
        mine = sorted(
            (str(r["payment_id"]), int(r["amount_fen"]), str(r["status"]))
            for r in items
            if r["payment_id"] in (first_payment, difference["payment_id"])
        )
        return mine == sorted(
            [
                (first_payment, CHEAP, "SUCCESS"),
                (difference["payment_id"], DEAR - CHEAP, "SUCCESS"),
            ]
        )

    await wait_for(all_refunded, what="both payments refunded")

    # The booking's refund, as the patient reads it: both parts, 90 yuan, succeeded
    # once both have.
    async def shown_refunded() -> bool:
        status, refund = await patient.get(f"/v1/bookings/{new_id}/refund")
        return status == 200 and refund["status"] == "succeeded"

    await wait_for(shown_refunded, what="the refund shown succeeded")
    _, refund = await patient.get(f"/v1/bookings/{new_id}/refund")
    assert refund["amount_fen"] == DEAR
    assert sorted((p["payment_id"], p["amount_fen"]) for p in refund["parts"]) == sorted(
        [(first_payment, CHEAP), (difference["payment_id"], DEAR - CHEAP)]
    )
    assert all(p["status"] == "succeeded" for p in refund["parts"])


async def test_unpaid_difference_frees_the_unit_and_a_late_payment_is_refunded(
    pay_api: ApiServer, pay_sim: PaySimServer, pay_db: asyncpg.Pool, http: aiohttp.ClientSession
) -> None:
    """Past the difference's deadline the move is abandoned (the worker's recovery): the
    new unit is free, the old booking still confirmed and cancellable; the difference
    paid afterwards is refunded whole and moves nothing."""
    patient, booking_id, _, dear = await _booked(pay_api, pay_sim, http)
    status, pending = await _move(patient, booking_id, dear, uuid.uuid4().hex)
    assert status == 201, pending
    new_id = pending["reschedule_id"]
    difference = await patient.start_payment(new_id, expect=200)

    # The deadline passes: the hold's in Redis, the move's in Postgres.
    await backdate_hold(pay_api.env["INVENTORY_REDIS_URL"], new_id)
    async with pay_db.acquire() as connection:
        await connection.execute(
            "UPDATE reschedules SET moving_until = now() - interval '1 minute' WHERE id = $1",
            new_id,
        )
    client = Redis.from_url(pay_api.env["INVENTORY_REDIS_URL"], decode_responses=True)
    try:
        store = await SlotStore.connect_scripts(client, policies=PolicyBook(HospitalPolicy()))
        assert await recover_moves(pay_db, store) >= 1
    finally:
        await client.aclose()
    async with pay_db.acquire() as connection:
        move = await connection.fetchrow(
            "SELECT status, error FROM reschedules WHERE id = $1", new_id
        )
    assert (move["status"], move["error"]) == ("aborted", "unpaid")
    status, old = await patient.get(f"/v1/bookings/{booking_id}")
    assert (status, old["status"], old["cancellable"]) == (200, "confirmed", True), old

    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{difference['payment_id']}/pay")
    assert paid["notify_status"] == 204, paid
    row = await payment_row(pay_db, difference["payment_id"])
    assert (row["status"], row["booking_id"]) == ("paid", None)
    async with pay_db.acquire() as connection:
        refund = await connection.fetchrow(
            "SELECT amount_fen, reason FROM refunds WHERE payment_id = $1",
            difference["payment_id"],
        )
    assert (refund["amount_fen"], refund["reason"]) == (DEAR - CHEAP, "reschedule_not_completed")
    status, old = await patient.get(f"/v1/bookings/{booking_id}")
    assert (status, old["status"]) == (200, "confirmed")


async def test_policy_off_refuses_a_dearer_window(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession
) -> None:
    """A hospital that does not charge differences refuses the dearer window as before
    (reschedule_fee_higher, with the fee), holding nothing."""
    shop = await Catalogue(pay_api, http).create(
        policy={"one_per_day": False, "charge_fee_difference": False}
    )
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    _, (cheap,), _ = await shop.schedule([1], visit_date=day, fee_fen=CHEAP)
    _, (dear,), _ = await shop.schedule([1], visit_date=day, fee_fen=DEAR, session="afternoon")
    patient = await Patient(pay_api, http).register()
    booking_id = (await patient.hold(cheap))["hold_id"]
    payment_id = (await patient.start_payment(booking_id))["payment_id"]
    await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    status, body = await _move(patient, booking_id, dear, uuid.uuid4().hex)
    assert (status, body["code"], body["fee_fen"]) == (409, "reschedule_fee_higher", DEAR)
