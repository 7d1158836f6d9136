"""Payments that arrive after the hold's deadline (G11 "money is never kept"): a free unit
of the slot is taken again, otherwise the payment is refunded; an unpaid order is closed
when its hold ends, and a close that finds the order paid settles it. Every paid order
ends as a booking or a refund: 0 orphans."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import orjson

from tests.api.conftest import ApiServer

from .conftest import PaySimServer
from .helpers import (
    FEE,
    Patient,
    backdate_hold,
    backdate_payment,
    catalogue,
    payment_row,
    refund_count,
    sim,
    wait_for,
)


async def paying_patient(
    api: ApiServer, http: aiohttp.ClientSession, slot_id: str
) -> tuple[Patient, str, str]:
    """A patient with a hold on ``slot_id`` whose payment has started."""
    patient = await Patient(api, http).register()
    hold_id = (await patient.hold(slot_id))["hold_id"]
    payment_id = (await patient.start_payment(hold_id))["payment_id"]
    return patient, hold_id, payment_id


async def sim_orders(http: aiohttp.ClientSession, pay_sim: PaySimServer) -> dict[str, Any]:
    """The simulator's orders by payment id."""
    return {o["payment_id"]: o for o in (await sim(http, pay_sim, "GET", "/sim/orders"))["items"]}


async def test_late_payment_takes_a_free_unit_again(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    """Paid after the deadline with a unit free: the same slot is booked again."""
    (slot,) = await catalogue(pay_api, http, [1])
    patient, hold_id, payment_id = await paying_patient(pay_api, http, slot)
    await backdate_hold(pay_api.env["INVENTORY_REDIS_URL"], hold_id)
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    assert paid["notify_status"] == 204, paid
    row = await payment_row(pay_db, payment_id)
    assert row["status"] == "paid"
    booking_id = row["booking_id"]
    assert booking_id is not None
    assert booking_id != hold_id
    status, booking = await patient.get(f"/v1/bookings/{booking_id}")
    assert status == 200, booking
    assert (booking["status"], booking["payment_ref"], booking["slot_id"]) == (
        "confirmed",
        payment_id,
        slot,
    )
    assert booking["patient_id"] == patient.patient_id
    status, old = await patient.get(f"/v1/holds/{hold_id}")
    assert old["state"] == "expired"
    shown = await patient.payment(hold_id)
    assert (shown["status"], shown["booking_id"], shown["refund"]) == ("paid", booking_id, None)
    assert await refund_count(pay_db, payment_id) == 0


async def test_late_payment_with_the_slot_taken_is_refunded(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    """Paid after the deadline with the unit taken: 2xx, then the refund succeeds."""
    (slot,) = await catalogue(pay_api, http, [1])
    patient, hold_id, payment_id = await paying_patient(pay_api, http, slot)
    await backdate_hold(pay_api.env["INVENTORY_REDIS_URL"], hold_id)
    other = await Patient(pay_api, http).register()
    await other.hold(slot)  # reclaims the due hold and takes its unit
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay")
    assert paid["notify_status"] == 204, paid
    row = await payment_row(pay_db, payment_id)
    assert (row["status"], row["booking_id"]) == ("paid", None)

    async def refunded() -> bool:
        status, refund = await patient.get(f"/v1/bookings/{hold_id}/refund")
        return status == 200 and refund["status"] == "succeeded"

    await wait_for(refunded, what="the refund to succeed")
    _, refund = await patient.get(f"/v1/bookings/{hold_id}/refund")
    assert (refund["reason"], refund["amount_fen"], refund["payment_id"]) == (
        "expired_after_payment",
        FEE,
        payment_id,
    )
    shown = await patient.payment(hold_id)
    assert shown["refund"]["status"] == "succeeded"
    refunds = [
        r
        for r in (await sim(http, pay_sim, "GET", "/sim/refunds"))["items"]
        if r["payment_id"] == payment_id
    ]
    assert [(r["status"], r["amount_fen"]) for r in refunds] == [("SUCCESS", FEE)]
    async with pay_db.acquire() as c:
        bookings = await c.fetchval(
            "SELECT count(*) FROM bookings WHERE payment_ref = $1", payment_id
        )
    assert bookings == 0


async def test_unpaid_order_is_closed_when_its_hold_ends(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    """A hold that ends unpaid gets its order closed: it can no longer be paid."""
    (slot,) = await catalogue(pay_api, http, [1])
    patient, hold_id, payment_id = await paying_patient(pay_api, http, slot)
    await backdate_hold(pay_api.env["INVENTORY_REDIS_URL"], hold_id)
    await backdate_payment(pay_db, payment_id)

    async def closed() -> bool:
        return (await payment_row(pay_db, payment_id))["status"] == "closed"

    await wait_for(closed, what="the payment to close")
    assert (await sim_orders(http, pay_sim))[payment_id]["state"] == "CLOSED"
    async with http.post(pay_sim.url + f"/sim/orders/{payment_id}/pay", json={}) as answer:
        assert answer.status == 409
    status, body = await patient.call("POST", f"/v1/holds/{hold_id}/payments", json={})
    assert (status, body["code"]) == (409, "payment_closed")


async def test_order_paid_without_a_notification_is_settled_when_closing(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    """Paid but never notified: the close finds it paid and books it."""
    (slot,) = await catalogue(pay_api, http, [1])
    patient, hold_id, payment_id = await paying_patient(pay_api, http, slot)
    paid = await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay", notify=False)
    assert paid["notify_status"] is None
    await backdate_hold(pay_api.env["INVENTORY_REDIS_URL"], hold_id)
    await backdate_payment(pay_db, payment_id)

    async def settled() -> bool:
        return (await payment_row(pay_db, payment_id))["status"] == "paid"

    await wait_for(settled, what="the payment to settle")
    row = await payment_row(pay_db, payment_id)
    assert row["provider_txn_id"] == paid["transaction"]["transaction_id"]
    status, booking = await patient.get(f"/v1/bookings/{row['booking_id']}")
    assert (status, booking["status"], booking["payment_ref"]) == (200, "confirmed", payment_id)


async def test_no_paid_order_is_left_without_a_booking_or_refund(
    pay_api: ApiServer,
    pay_sim: PaySimServer,
    pay_db: asyncpg.Pool,
    http: aiohttp.ClientSession,
) -> None:
    """G11: 15 on-time, late and unnotified payments end booked or refunded: 0 orphans."""
    redis_url = pay_api.env["INVENTORY_REDIS_URL"]
    expected: dict[str, str] = {}
    # On time: booked.
    (shared,) = await catalogue(pay_api, http, [3])
    for _ in range(3):
        _, _, payment_id = await paying_patient(pay_api, http, shared)
        assert (await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay"))[
            "notify_status"
        ] == 204
        expected[payment_id] = "booked"
    # Late, a unit free: booked again.
    (spare,) = await catalogue(pay_api, http, [3])
    for _ in range(3):
        _, hold_id, payment_id = await paying_patient(pay_api, http, spare)
        await backdate_hold(redis_url, hold_id)
        assert (await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay"))[
            "notify_status"
        ] == 204
        expected[payment_id] = "booked"
    # Late, the unit taken by someone else: refunded.
    for _ in range(3):
        (single,) = await catalogue(pay_api, http, [1])
        _, hold_id, payment_id = await paying_patient(pay_api, http, single)
        await backdate_hold(redis_url, hold_id)
        await (await Patient(pay_api, http).register()).hold(single)
        assert (await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay"))[
            "notify_status"
        ] == 204
        expected[payment_id] = "refunded"
    # Paid, never notified, hold ended: settled by the close; booked when a unit is free...
    (quiet,) = await catalogue(pay_api, http, [3])
    for _ in range(3):
        _, hold_id, payment_id = await paying_patient(pay_api, http, quiet)
        await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay", notify=False)
        await backdate_hold(redis_url, hold_id)
        await backdate_payment(pay_db, payment_id)
        expected[payment_id] = "booked"
    # ... and refunded when it is taken.
    for _ in range(3):
        (single,) = await catalogue(pay_api, http, [1])
        _, hold_id, payment_id = await paying_patient(pay_api, http, single)
        await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay", notify=False)
        await backdate_hold(redis_url, hold_id)
        await (await Patient(pay_api, http).register()).hold(single)
        await backdate_payment(pay_db, payment_id)
        expected[payment_id] = "refunded"

    async def outcomes() -> dict[str, str]:
        async with pay_db.acquire() as c:
            rows = await c.fetch(
                "SELECT p.id, p.status, b.status AS booking, r.status AS refund"
                " FROM payments p"
                " LEFT JOIN bookings b ON b.id = p.booking_id AND b.payment_ref = p.id"
                " LEFT JOIN refunds r ON r.payment_id = p.id"
                " WHERE p.id = ANY($1::text[])",
                list(expected),
            )
        found = {}
        for row in rows:
            if row["status"] != "paid":
                found[row["id"]] = row["status"]
            elif row["booking"] == "confirmed" and row["refund"] is None:
                found[row["id"]] = "booked"
            elif row["booking"] is None and row["refund"] == "succeeded":
                found[row["id"]] = "refunded"
            else:
                found[row["id"]] = f"orphan? booking={row['booking']} refund={row['refund']}"
        return found

    async def all_settled() -> bool:
        return await outcomes() == expected

    await wait_for(all_settled, timeout_s=30, what="every payment to settle")
    orders = await sim_orders(http, pay_sim)
    paid_at_sim = {p for p in expected if orders[p]["state"] in ("SUCCESS", "REFUND")}
    assert paid_at_sim == set(expected)
    refunded_at_sim = {p for p in expected if orders[p]["state"] == "REFUND"}
    assert refunded_at_sim == {p for p, outcome in expected.items() if outcome == "refunded"}
    async with pay_db.acquire() as c:
        orphans = await c.fetchval(
            "SELECT count(*) FROM payments p WHERE p.status = 'paid' AND"
            " NOT EXISTS (SELECT 1 FROM bookings b WHERE b.id = p.booking_id) AND"
            " NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id)"
        )
    print(
        "\nG11 paid-after-deadline: "
        + orjson.dumps(
            {
                "payments": len(expected),
                "booked": sum(v == "booked" for v in expected.values()),
                "refunded": sum(v == "refunded" for v in expected.values()),
                "orphans": orphans,
            }
        ).decode()
    )
    assert orphans == 0
