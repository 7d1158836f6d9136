"""Starting a payment: the provider's prepay parameters (signed for wx.requestPayment),
one payment per hold, the hold extended once, and the refusals."""

from __future__ import annotations

from datetime import datetime

import aiohttp
import pytest

from inventory.payments.wechat import signed_message, verify
from inventory.simulators.paysim import KeySet
from tests.api.conftest import ApiServer

from .conftest import PaySimServer
from .helpers import FEE, Patient, catalogue, pay, sim


@pytest.fixture(scope="module")
async def slot(pay_api: ApiServer) -> str:
    """A slot with room for every test of this module."""
    async with aiohttp.ClientSession() as http:
        return (await catalogue(pay_api, http, [100]))[0]


async def test_start_extends_once_and_signs_the_jsapi_parameters(
    pay_api: ApiServer, pay_keys: KeySet, http: aiohttp.ClientSession, slot: str
) -> None:
    """The first start extends the hold and signs the JSAPI params; a repeat is the same."""
    patient = await Patient(pay_api, http).register()
    hold = await patient.hold(slot)
    payment = await patient.start_payment(hold["hold_id"])
    assert (payment["status"], payment["amount_fen"], payment["currency"]) == (
        "pending",
        FEE,
        "CNY",
    )
    assert (payment["method"], payment["provider"], payment["hold_id"]) == (
        "jsapi",
        "wechat",
        hold["hold_id"],
    )
    prepay = payment["prepay"]
    assert prepay["appId"] == pay_keys.appid
    assert prepay["package"].startswith("prepay_id=wx")
    assert prepay["signType"] == "RSA"
    message = signed_message(
        *(prepay[name].encode() for name in ("appId", "timeStamp", "nonceStr", "package"))
    )
    assert verify(pay_keys.merchant_key.public_key(), message, prepay["paySign"])
    status, extended = await patient.get(f"/v1/holds/{hold['hold_id']}")
    assert (status, extended["extended"]) == (200, True)
    assert datetime.fromisoformat(extended["deadline"]) > datetime.fromisoformat(hold["deadline"])
    assert datetime.fromisoformat(payment["deadline"]) == datetime.fromisoformat(
        extended["deadline"]
    )
    again = await patient.start_payment(hold["hold_id"], expect=200)
    assert again["payment_id"] == payment["payment_id"]
    assert again["prepay"]["package"] == prepay["package"]
    _, after = await patient.get(f"/v1/holds/{hold['hold_id']}")
    assert after["deadline"] == extended["deadline"]


async def test_native_payment_gives_a_code_url(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession, slot: str
) -> None:
    """method native answers the QR code's URL; the order exists at the provider."""
    patient = await Patient(pay_api, http).register()
    hold = await patient.hold(slot)
    status, payment = await patient.call(
        "POST", f"/v1/holds/{hold['hold_id']}/payments", json={"method": "native"}
    )
    assert status == 201, payment
    assert payment["prepay"]["code_url"].startswith("weixin://wxpay/")
    orders = {o["payment_id"]: o for o in (await sim(http, pay_sim, "GET", "/sim/orders"))["items"]}
    assert orders[payment["payment_id"]]["method"] == "native"


async def test_start_refusals(
    pay_api: ApiServer, pay_keys: KeySet, http: aiohttp.ClientSession, slot: str
) -> None:
    """Refused: jsapi without openid, another's hold, released or booked holds."""
    patient = await Patient(pay_api, http).register()
    hold_id = (await patient.hold(slot))["hold_id"]
    status, body = await patient.call("POST", f"/v1/holds/{hold_id}/payments", json={})
    assert (status, body["code"]) == (422, "validation_failed")
    assert body["errors"][0]["field"] == "openid"
    stranger = await Patient(pay_api, http).register()
    status, body = await stranger.call(
        "POST", f"/v1/holds/{hold_id}/payments", json={"openid": "o-x"}
    )
    assert (status, body["code"]) == (404, "not_found")
    assert (await stranger.get(f"/v1/holds/{hold_id}/payments"))[0] == 404
    status, _ = await patient.call("DELETE", f"/v1/holds/{hold_id}")
    assert status == 200
    status, body = await patient.call(
        "POST", f"/v1/holds/{hold_id}/payments", json={"openid": "o-x"}
    )
    assert (status, body["code"]) == (409, "hold_not_active")
    booked = (await patient.hold(slot))["hold_id"]
    paid_with = await pay(patient, pay_keys, booked)
    # Booked by its payment: starting again answers that payment, paid, with nothing
    # to pay (already_confirmed is for a hold booked without the provider, which with
    # payments on only a hold without a fee can be; payment_not_needed answers first).
    status, body = await patient.call(
        "POST", f"/v1/holds/{booked}/payments", json={"openid": "o-x"}
    )
    assert (status, body["payment_id"], body["status"]) == (200, paid_with, "paid"), body
    assert "prepay" not in body or body["prepay"] is None
    status, payments = await patient.get(f"/v1/holds/{booked}/payments")
    assert (status, [p["payment_id"] for p in payments["items"]]) == (200, [paid_with])
    started = (await patient.hold(slot))["hold_id"]
    await patient.start_payment(started)
    assert (await patient.call("DELETE", f"/v1/holds/{started}"))[0] == 200
    status, body = await patient.call(
        "POST", f"/v1/holds/{started}/payments", json={"openid": "o-x"}
    )
    assert (status, body["code"]) == (409, "hold_not_active")


async def test_paid_payment_is_shown_without_prepay(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession, slot: str
) -> None:
    """Once paid, a start answers the paid payment without prepay; the list shows it."""
    patient = await Patient(pay_api, http).register()
    hold_id = (await patient.hold(slot))["hold_id"]
    payment_id = (await patient.start_payment(hold_id))["payment_id"]
    assert (await sim(http, pay_sim, "POST", f"/sim/orders/{payment_id}/pay"))[
        "notify_status"
    ] == 204
    again = await patient.start_payment(hold_id, expect=200)
    assert (again["status"], again["prepay"], again["booking_id"]) == ("paid", None, hold_id)
    listed = await patient.payment(hold_id)
    assert (listed["status"], listed["booking_id"], listed["paid_at"] is not None) == (
        "paid",
        hold_id,
        True,
    )


async def test_front_end_cannot_confirm_a_hold_with_a_fee(
    pay_api: ApiServer, pay_keys: KeySet, http: aiohttp.ClientSession, slot: str
) -> None:
    """With payments on, a made-up payment reference confirms nothing: 409
    payment_required, the hold stays held. A hold without a fee is still confirmed."""
    patient = await Patient(pay_api, http).register()
    hold = await patient.hold(slot)
    status, body = await patient.call(
        "POST", f"/v1/holds/{hold['hold_id']}/confirm", json={"payment_ref": "made-up-ref"}
    )
    assert (status, body["code"], body["state"]) == (409, "payment_required", "held"), body
    status, after = await patient.get(f"/v1/holds/{hold['hold_id']}")
    assert (status, after["state"]) == (200, "held")
    assert (await patient.get(f"/v1/bookings/{hold['hold_id']}"))[0] == 404

    # Once its payment is notified the hold is a booking, and confirming it (a front
    # end that confirms after paying) answers that booking, whatever reference it sends.
    paid_with = await pay(patient, pay_keys, hold["hold_id"])
    status, booking = await patient.call(
        "POST", f"/v1/holds/{hold['hold_id']}/confirm", json={"payment_ref": "made-up-ref"}
    )
    assert (status, booking["status"], booking["payment_ref"]) == (200, "confirmed", paid_with)

    (free_slot,) = await catalogue(pay_api, http, [1], fee_fen=0)
    free = await patient.hold(free_slot)
    assert free["amount_fen"] == 0
    status, booking = await patient.call(
        "POST", f"/v1/holds/{free['hold_id']}/confirm", json={"payment_ref": "counter-0"}
    )
    assert (status, booking["status"], booking["amount_fen"]) == (200, "confirmed", 0), booking
