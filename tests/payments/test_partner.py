"""WeChat Pay partner mode (服务商): the platform is the service provider, and each
hospital's fees settle to its own sub-merchant, whose refunds come from it too. Two
hospitals with different sub-merchants through the whole path (start, pay, notification,
booking, cancel, refund) on an API process and a simulator of this module's own; a
hospital without a merchant takes no paid booking; a notification naming another
sub-merchant is refused; only platform operators set a hospital's merchant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.api.auth import mint_token
from inventory.devtools.servers import free_port
from inventory.simulators.paysim import KeySet, notification_body, signature_headers
from tests.api.conftest import ApiServer, running_api, verified_database
from tests.api.helpers import Catalogue
from tests.databases import Databases

from .conftest import PaySimServer, payment_api_env, start_paysim
from .helpers import Patient, post_notification, sim, wait_for


@pytest.fixture(scope="module")
def partner_keys() -> KeySet:
    return KeySet.generate(mchid="1230000109", appid="wxsp00000000000001")


@pytest.fixture(scope="module")
def partner_sim(
    partner_keys: KeySet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PaySimServer]:
    server = start_paysim(partner_keys, tmp_path_factory.mktemp("partner-sim") / "paysim.log")
    try:
        yield server
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def partner_api(
    redis_server: Any,
    databases: Databases,
    partner_keys: KeySet,
    partner_sim: PaySimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    database_url = verified_database(redis_server.url, databases)
    port = free_port()
    env = payment_api_env(partner_keys, partner_sim, redis_server.url, database_url, port)
    env["INVENTORY_WECHAT_PARTNER"] = "true"
    with running_api(env, tmp_path_factory.mktemp("partner-api") / "api.log") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _hospital(
    api: ApiServer, http: aiohttp.ClientSession, sub_mchid: str | None
) -> tuple[Catalogue, list[str]]:
    """A hospital with one schedule (and its sub-merchant when given); its slot ids."""
    catalogue = await Catalogue(api, http).create(policy={"one_per_day": False})
    _, slots, _ = await catalogue.schedule([3])
    if sub_mchid is not None:
        async with http.put(
            f"{api.url}/v1/operator/hospitals/{catalogue.hospital_id}/merchant",
            json={"sub_mchid": sub_mchid},
            headers=catalogue.op,
        ) as answer:
            assert answer.status == 201, await answer.text()
    return catalogue, slots


async def test_each_hospitals_fees_settle_to_its_own_sub_merchant_and_its_refunds_come_from_it(
    partner_api: ApiServer, partner_sim: PaySimServer, http: aiohttp.ClientSession
) -> None:
    paid: dict[str, str] = {}
    for sub_mchid in ("1900000201", "1900000202"):
        _, slots = await _hospital(partner_api, http, sub_mchid)
        patient = await Patient(partner_api, http).register()
        hold_id = (await patient.hold(slots[0]))["hold_id"]
        payment_id = (await patient.start_payment(hold_id))["payment_id"]
        await sim(http, partner_sim, "POST", f"/sim/orders/{payment_id}/pay")

        async def booked(patient: Patient = patient, hold_id: str = hold_id) -> bool:
            status, body = await patient.get(f"/v1/bookings/{hold_id}")
            return status == 200 and body["status"] != "cancelled"

        await wait_for(booked, timeout_s=30)
        status, body = await patient.call("POST", f"/v1/bookings/{hold_id}/cancel", json={})
        assert status == 200, body
        paid[payment_id] = sub_mchid
    orders = {
        o["payment_id"]: o for o in (await sim(http, partner_sim, "GET", "/sim/orders"))["items"]
    }
    for payment_id, sub_mchid in paid.items():
        assert orders[payment_id]["sub_mchid"] == sub_mchid
        assert orders[payment_id]["state"] in ("SUCCESS", "REFUND")

    async def refunded() -> bool:
        items = (await sim(http, partner_sim, "GET", "/sim/refunds"))["items"]
        done = {r["payment_id"]: r for r in items if r["status"] == "SUCCESS"}
        return all(p in done and done[p]["sub_mchid"] == s for p, s in paid.items())

    await wait_for(refunded, timeout_s=30)


async def test_a_hospital_without_a_merchant_takes_no_paid_booking(
    partner_api: ApiServer, partner_sim: PaySimServer, http: aiohttp.ClientSession
) -> None:
    _, slots = await _hospital(partner_api, http, None)
    patient = await Patient(partner_api, http).register()
    hold_id = (await patient.hold(slots[0]))["hold_id"]
    body = await patient.start_payment(hold_id, expect=409)
    assert body["code"] == "merchant_not_configured"
    status, payments = await patient.get(f"/v1/holds/{hold_id}/payments")
    assert status == 200
    assert payments["items"] == []
    orders = (await sim(http, partner_sim, "GET", "/sim/orders"))["items"]
    assert not [o for o in orders if o["payment_id"].startswith(hold_id[:8])]


async def test_a_notification_for_another_sub_merchant_is_refused(
    partner_api: ApiServer, partner_keys: KeySet, http: aiohttp.ClientSession
) -> None:
    _, slots = await _hospital(partner_api, http, "1900000301")
    patient = await Patient(partner_api, http).register()
    hold_id = (await patient.hold(slots[0]))["hold_id"]
    payment_id = (await patient.start_payment(hold_id))["payment_id"]
    resource = {
        "sp_mchid": partner_keys.mchid,
        "sp_appid": partner_keys.appid,
        "sub_mchid": "1900000999",
        "out_trade_no": payment_id,
        "transaction_id": "4200" + uuid.uuid4().hex[:24],
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "success_time": "2026-12-07T10:00:00+08:00",
        "payer": {"sp_openid": "o-1"},
        "amount": {"total": 5000, "payer_total": 5000, "currency": "CNY"},
    }
    body = notification_body(resource, partner_keys.apiv3_key)
    headers = signature_headers(body, partner_keys.platform_key, partner_keys.platform_serial)
    status, answer = await post_notification(partner_api, http, body, headers)
    assert status == 400, answer
    assert (answer["code"], answer["reason"]) == ("FAIL", "merchant_mismatch"), answer
    db = await asyncpg.connect(partner_api.database_url)
    try:
        row = await db.fetchrow("SELECT status, sub_mchid FROM payments WHERE id = $1", payment_id)
    finally:
        await db.close()
    assert row["status"] == "pending"
    assert row["sub_mchid"] == "1900000301"


async def test_only_platform_operators_set_a_hospitals_merchant(
    partner_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue, _ = await _hospital(partner_api, http, None)
    url = f"{partner_api.url}/v1/operator/hospitals/{catalogue.hospital_id}/merchant"
    own = {
        "Authorization": "Bearer "
        + mint_token(
            partner_api.settings,
            "ops-h",
            operator=True,
            hospitals=[catalogue.hospital_id],
            ttl_s=600,
        )
    }
    async with http.put(url, json={"sub_mchid": "1900000401"}, headers=own) as answer:
        assert answer.status == 403
    async with http.get(url, headers=own) as answer:
        assert answer.status == 404  # none yet
    async with http.put(url, json={"sub_mchid": "19x"}, headers=catalogue.op) as answer:
        assert answer.status == 422
    async with http.put(url, json={"sub_mchid": "1900000401"}, headers=catalogue.op) as answer:
        assert answer.status == 201
    async with http.put(url, json={"sub_mchid": "1900000402"}, headers=catalogue.op) as answer:
        assert answer.status == 200
    async with http.get(url, headers=own) as answer:
        assert answer.status == 200
        assert (await answer.json())["sub_mchid"] == "1900000402"


async def test_a_dearer_moves_difference_settles_to_the_hospitals_sub_merchant(
    partner_api: ApiServer, partner_sim: PaySimServer, http: aiohttp.ClientSession
) -> None:
    """A move to a dearer window (改约) charges the difference through the hospital's own
    sub-merchant, like the booking's fee; paid there, the move completes."""
    catalogue, (first,) = await _hospital(partner_api, http, "1900000401")
    _, (dearer,), _ = await catalogue.schedule([1], session="afternoon", fee_fen=8000)
    patient = await Patient(partner_api, http).register()
    booking_id = (await patient.hold(first))["hold_id"]
    payment_id = (await patient.start_payment(booking_id))["payment_id"]
    await sim(http, partner_sim, "POST", f"/sim/orders/{payment_id}/pay")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    move = f"/v1/bookings/{booking_id}/reschedule"
    status, pending = await patient.call("POST", move, json={"slot_id": dearer}, headers=key)
    assert (status, pending["status"], pending["charge_fen"]) == (201, "awaiting_payment", 3000)
    difference = await patient.start_payment(pending["reschedule_id"], expect=200)
    paid = await sim(http, partner_sim, "POST", f"/sim/orders/{difference['payment_id']}/pay")
    assert paid["notify_status"] == 204, paid
    orders = {
        o["payment_id"]: o for o in (await sim(http, partner_sim, "GET", "/sim/orders"))["items"]
    }
    assert orders[difference["payment_id"]]["sub_mchid"] == "1900000401"
    assert orders[difference["payment_id"]]["amount_fen"] == 3000
    status, done = await patient.call("POST", move, json={"slot_id": dearer}, headers=key)
    assert (status, done["status"], done["booking"]["status"]) == (201, "done", "confirmed")
