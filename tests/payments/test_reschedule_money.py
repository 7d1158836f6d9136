"""Money of a reschedule (改约) with payments on: the payment follows the booking, a
cheaper window's difference is refunded from it, a dearer window is refused, and a later
cancellation refunds what is left: the refunds add up to what was paid, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from tests.api.conftest import ApiServer
from tests.api.helpers import Catalogue

from .conftest import PaySimServer
from .helpers import Patient, refund_count, sim, wait_for

DEAR, CHEAP, DEARER = 5000, 1200, 9000


async def test_cheaper_window_refunds_the_difference_and_cancel_the_rest(
    pay_api: ApiServer, pay_sim: PaySimServer, pay_db: asyncpg.Pool, http: aiohttp.ClientSession
) -> None:
    """A booking paid 50 yuan moves to a 12-yuan window: 38 refunded; a 90-yuan window is
    refused (the hospital does not charge differences); cancelling the new booking
    refunds the 12 left; cancelling the old one (long cancelled) refunds nothing more."""
    shop = await Catalogue(pay_api, http).create(
        policy={"one_per_day": False, "charge_fee_difference": False}
    )
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    _, (dear,), _ = await shop.schedule([2], visit_date=day, fee_fen=DEAR)
    _, (cheap,), _ = await shop.schedule([2], visit_date=day, fee_fen=CHEAP, session="afternoon")
    _, (dearer,), _ = await shop.schedule([2], visit_date=day + timedelta(days=1), fee_fen=DEARER)
    patient = await Patient(pay_api, http).register()
    booking_id = (await patient.hold(dear))["hold_id"]
    payment_id = (await patient.start_payment(booking_id))["payment_id"]
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    assert paid["notify_status"] == 204, paid

    async def move(slot: str) -> tuple[int, dict[str, object]]:
        status, body = await patient.call(
            "POST",
            f"/v1/bookings/{booking_id}/reschedule",
            json={"slot_id": slot},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        return status, body

    status, body = await move(dearer)
    assert (status, body["code"], body["fee_fen"]) == (409, "reschedule_fee_higher", DEARER)

    status, moved = await move(cheap)
    assert status == 201, moved
    assert moved["refund_fen"] == DEAR - CHEAP
    new_id = str(moved["reschedule_id"])

    async def sim_refunds() -> list[tuple[str, int]]:
        items = (await sim(http, pay_sim, "GET", "/sim/refunds"))["items"]
        return sorted(
            (str(r["status"]), int(r["amount_fen"])) for r in items if r["payment_id"] == payment_id
        )

    async def refunded(expected: list[tuple[str, int]]) -> bool:
        return await sim_refunds() == expected

    await wait_for(lambda: refunded([("SUCCESS", DEAR - CHEAP)]), what="the difference")

    status, cancelled = await patient.call("POST", f"/v1/bookings/{new_id}/cancel", json={})
    assert (status, cancelled["status"]) == (200, "cancelled"), cancelled
    status, old = await patient.call("POST", f"/v1/bookings/{booking_id}/cancel", json={})
    assert (status, old["cancel_reason"]) == (200, "rescheduled"), old
    await wait_for(
        lambda: refunded(sorted([("SUCCESS", CHEAP), ("SUCCESS", DEAR - CHEAP)])),
        what="the rest",
    )
    assert await refund_count(pay_db, payment_id) == 2
    async with pay_db.acquire() as connection:
        total = await connection.fetchval(
            "SELECT sum(amount_fen) FROM refunds WHERE payment_id = $1", payment_id
        )
    assert total == DEAR
