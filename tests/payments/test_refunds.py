"""Refunds of paid bookings: on cancellation (once, however often it is asked), on a HIS
refusal through request_refund, by the payment loop's sweep when nobody asked, and retried
on the same refund through provider failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from inventory.payments.ids import refund_id_for
from inventory.payments.refunds import request_refund
from tests.api.conftest import ApiServer

from .conftest import PaySimServer
from .helpers import FEE, Patient, catalogue, refund_count, sim, wait_for


@pytest.fixture(scope="module")
async def slot(pay_api: ApiServer) -> str:
    """A slot with room for every test of this module."""
    async with aiohttp.ClientSession() as http:
        return (await catalogue(pay_api, http, [100]))[0]


async def paid_booking(
    api: ApiServer, http: aiohttp.ClientSession, pay_sim: PaySimServer, slot: str
) -> tuple[Patient, str, str]:
    """A patient with a booking paid through the simulator: (patient, booking, payment)."""
    patient = await Patient(api, http).register()
    hold_id = (await patient.hold(slot))["hold_id"]
    payment_id = (await patient.start_payment(hold_id))["payment_id"]
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    assert paid["notify_status"] == 204, paid
    return patient, hold_id, payment_id


async def sim_refunds(
    http: aiohttp.ClientSession, pay_sim: PaySimServer, payment_id: str
) -> list[dict[str, object]]:
    """The simulator's refunds of one order."""
    items = (await sim(http, pay_sim, "GET", "/sim/refunds"))["items"]
    return [r for r in items if r["payment_id"] == payment_id]


async def refund_status(patient: Patient, booking_id: str) -> str | None:
    """The booking's refund status as the patient sees it (None: no refund)."""
    status, body = await patient.get(f"/v1/bookings/{booking_id}/refund")
    if status == 404:
        return None
    assert status == 200, body
    return str(body["status"])


@pytest.fixture
async def refund_fault(http: aiohttp.ClientSession, pay_sim: PaySimServer) -> AsyncIterator[None]:
    """Refunds fail at the simulator until the test says otherwise (reset afterwards)."""
    await sim(http, pay_sim, "PUT", "/sim/faults", refund="fail")
    try:
        yield
    finally:
        await sim(http, pay_sim, "PUT", "/sim/faults", refund="succeed")


async def test_cancellation_refunds_the_fee_once(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    slot: str,
) -> None:
    """Two cancels and a HIS request give one refund of the whole fee."""
    patient, booking_id, payment_id = await paid_booking(pay_api, http, pay_sim, slot)
    assert await refund_status(patient, booking_id) is None
    for _ in range(2):
        status, body = await patient.call("POST", f"/v1/bookings/{booking_id}/cancel", json={})
        assert (status, body["status"]) == (200, "cancelled"), body

    async def succeeded() -> bool:
        return await refund_status(patient, booking_id) == "succeeded"

    await wait_for(succeeded, what="the refund to succeed")
    status, refund = await patient.get(f"/v1/bookings/{booking_id}/refund")
    assert refund == refund | {
        "refund_id": refund_id_for(payment_id),
        "booking_id": booking_id,
        "payment_id": payment_id,
        "amount_fen": FEE,
        "reason": "patient_cancelled",
    }
    assert refund["succeeded_at"] is not None
    again = await request_refund(pay_db, booking_id, None, "his_rejected", "his:dup")
    assert again is not None
    assert (again.created, again.refund_id, again.reason) == (
        False,
        refund["refund_id"],
        "patient_cancelled",
    )
    assert [
        (r["status"], r["amount_fen"]) for r in await sim_refunds(http, pay_sim, payment_id)
    ] == [("SUCCESS", FEE)]
    assert await refund_count(pay_db, payment_id) == 1
    other = await Patient(pay_api, http).register()
    assert (await other.get(f"/v1/bookings/{booking_id}/refund"))[0] == 404


async def test_his_refusal_refund_through_request_refund(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    slot: str,
) -> None:
    """request_refund (the HIS refusal path) queues a refund the loop sends."""
    patient, booking_id, payment_id = await paid_booking(pay_api, http, pay_sim, slot)
    refund = await request_refund(pay_db, booking_id, FEE, "his_rejected", f"his:{booking_id}")
    assert refund is not None
    assert (refund.created, refund.reason, refund.status) == (True, "his_rejected", "pending")

    async def succeeded() -> bool:
        return await refund_status(patient, booking_id) == "succeeded"

    await wait_for(succeeded, what="the refund to succeed")
    assert len(await sim_refunds(http, pay_sim, payment_id)) == 1


async def test_sweep_refunds_a_cancelled_booking_nobody_refunded(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    slot: str,
) -> None:
    """A paid booking ended without a refund request gets one from the safety net."""
    patient, booking_id, payment_id = await paid_booking(pay_api, http, pay_sim, slot)
    async with pay_db.acquire() as c:
        await c.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now(),"
            " cancel_reason = 'suspended' WHERE id = $1",
            booking_id,
        )

    async def succeeded() -> bool:
        return await refund_status(patient, booking_id) == "succeeded"

    await wait_for(succeeded, what="the swept refund to succeed")
    _, refund = await patient.get(f"/v1/bookings/{booking_id}/refund")
    assert refund["reason"] == "suspended"
    assert len(await sim_refunds(http, pay_sim, payment_id)) == 1


async def test_failed_refund_is_retried_on_the_same_refund(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
    slot: str,
    refund_fault: None,
) -> None:
    """A refused refund shows failed, then succeeds once on the same out_refund_no."""
    patient, booking_id, payment_id = await paid_booking(pay_api, http, pay_sim, slot)
    status, _ = await patient.call("POST", f"/v1/bookings/{booking_id}/cancel", json={})
    assert status == 200

    async def failed() -> bool:
        return await refund_status(patient, booking_id) == "failed"

    await wait_for(failed, what="the refund to fail")
    async with pay_db.acquire() as c:
        row = await c.fetchrow("SELECT * FROM refunds WHERE payment_id = $1", payment_id)
    assert "NOT_ENOUGH" in row["last_error"]
    assert row["attempts"] >= 1
    assert await sim_refunds(http, pay_sim, payment_id) == []
    await sim(http, pay_sim, "PUT", "/sim/faults", refund="succeed")
    async with pay_db.acquire() as c:
        # Skip the back-off wait: the retry is due now.
        await c.execute(
            "UPDATE refunds SET next_attempt_at = now() WHERE payment_id = $1", payment_id
        )

    async def succeeded() -> bool:
        return await refund_status(patient, booking_id) == "succeeded"

    await wait_for(succeeded, what="the retried refund to succeed")
    refunds = await sim_refunds(http, pay_sim, payment_id)
    assert [(r["refund_id"], r["status"]) for r in refunds] == [
        (refund_id_for(payment_id), "SUCCESS")
    ]
    async with pay_db.acquire() as c:
        row = await c.fetchrow("SELECT * FROM refunds WHERE payment_id = $1", payment_id)
    assert row["attempts"] >= 2
    assert row["last_error"] == ""


async def test_booking_not_paid_through_a_provider_has_no_refund(
    pay_api: ApiServer, http: aiohttp.ClientSession, slot: str
) -> None:
    """A booking confirmed without a provider payment (no fee, so a front end may
    confirm it) is cancelled without a refund."""
    patient = await Patient(pay_api, http).register()
    (free_slot,) = await catalogue(pay_api, http, [1], fee_fen=0)
    hold_id = (await patient.hold(free_slot))["hold_id"]
    status, _ = await patient.call(
        "POST", f"/v1/holds/{hold_id}/confirm", json={"payment_ref": "counter-cash-1"}
    )
    assert status == 200
    status, _ = await patient.call("POST", f"/v1/bookings/{hold_id}/cancel", json={})
    assert status == 200
    assert await refund_status(patient, hold_id) is None
