"""The simulator's cashier page, where a browser pays a JSAPI order in dev: it takes
wx.requestPayment's parameters only with a valid merchant paySign, sends the browser
back only to the order's own service, and paying there books the hold (the signed
notification is delivered before the browser is sent back)."""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
import pytest

from tests.api.conftest import ApiServer

from .conftest import PaySimServer
from .helpers import FEE, Patient, catalogue


@pytest.fixture(scope="module")
async def slot(pay_api: ApiServer) -> str:
    """A slot with room for every test of this module."""
    async with aiohttp.ClientSession() as http:
        return (await catalogue(pay_api, http, [20]))[0]


async def _started(
    pay_api: ApiServer, http: aiohttp.ClientSession, slot: str
) -> tuple[Patient, str, dict[str, str]]:
    patient = await Patient(pay_api, http).register()
    hold = await patient.hold(slot)
    payment = await patient.start_payment(hold["hold_id"])
    return patient, hold["hold_id"], dict(payment["prepay"])


async def test_the_cashier_checks_pay_sign_and_the_way_back(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession, slot: str
) -> None:
    """The page shows the order with valid parameters; a changed paySign, a package
    naming no order or a redirect_url on another service is refused."""
    _, hold_id, prepay = await _started(pay_api, http, slot)
    back = f"{pay_api.url}/app/#/paid/{hold_id}"
    async with http.get(
        f"{pay_sim.url}/sim/cashier?" + urlencode({**prepay, "redirect_url": back})
    ) as answer:
        assert answer.status == 200
        page = await answer.text()
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert f'data-amount-fen="{FEE}"' in page
    assert "确认支付" in page
    wrong = [
        {**prepay, "paySign": prepay["paySign"][:-4] + "AAA=", "redirect_url": back},
        {**prepay, "package": "prepay_id=wx-none", "redirect_url": back},
        {**prepay, "redirect_url": "https://elsewhere.example/steal"},
        {**prepay, "redirect_url": f"http://127.0.0.1:1/app/#/paid/{hold_id}"},
    ]
    for params in wrong:
        async with http.get(f"{pay_sim.url}/sim/cashier?" + urlencode(params)) as answer:
            assert answer.status == 400, params
            assert "确认支付" not in await answer.text()


async def test_paying_at_the_cashier_books_the_hold_and_goes_back(
    pay_api: ApiServer, pay_sim: PaySimServer, http: aiohttp.ClientSession, slot: str
) -> None:
    """Cancel goes back with result=cancelled and changes nothing; pay goes back with
    result=paid once the service has booked the hold."""
    patient, hold_id, prepay = await _started(pay_api, http, slot)
    back = f"{pay_api.url}/app/#/paid/{hold_id}"
    form = {**prepay, "redirect_url": back}
    async with http.post(
        f"{pay_sim.url}/sim/cashier", data={**form, "action": "cancel"}, allow_redirects=False
    ) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == back + "?result=cancelled"
    assert (await patient.payment(hold_id))["status"] == "pending"
    async with http.post(
        f"{pay_sim.url}/sim/cashier", data={**form, "action": "pay"}, allow_redirects=False
    ) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == back + "?result=paid"
    payment = await patient.payment(hold_id)
    assert (payment["status"], payment["booking_id"]) == ("paid", hold_id)
    status, booking = await patient.get(f"/v1/bookings/{hold_id}")
    assert (status, booking["amount_fen"]) == (200, FEE)
