"""Every message kind through the real path: a fact made the way the service makes it
(the API's confirm and the persister, the HIS flows' end_booking, the refund loop's
finish_refund, the ban's upsert) -> its trigger -> the worker's notifier -> the WeChat
and SMS simulator processes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
from redis.asyncio import Redis

from inventory.his.compensation import end_booking
from inventory.record.queries import QUERIES
from inventory.store.slot_store import SlotStore
from inventory.visits.outcomes import record_no_show
from tests.api.helpers import register_patient
from tests.durability.stack import Stack, wait_until

from .conftest import MessageSimServer
from .helpers import PHONE, book, delivered, has_booking, subscribe, world


async def test_booking_messages_reach_subscribers_and_phones(
    notify_stack: Stack,
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> None:
    """A booking paid, then refused by the HIS, and a 停诊 with its refund: the subscribed
    account gets each by WeChat (with time and place), SMS goes always for money, as the
    fallback otherwise; an account that did not subscribe gets no WeChat message."""
    stack = notify_stack
    _, slots = await world(stack, client)
    subscribed, plain = f"acct-{os.urandom(3).hex()}", f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, subscribed, phone=PHONE)
    other = await register_patient(stack.api, client, plain, phone="13900001111")
    await subscribe(stack, client, subscribed, "openid-subscribed")

    first = await book(stack, client, subscribed, patient, slots[0])
    unsubscribed_booking = await book(stack, client, plain, other, slots[0])
    wechat = await delivered(wechat_sim, 1)
    assert [m["address"] for m in wechat] == ["openid-subscribed"]
    assert wechat[0]["content"]["template_id"] == "tmpl-booking-confirmed"
    data = wechat[0]["content"]["data"]
    assert data["thing1"]["value"] == "Demo HospitalCardiol"  # a thing is 20 characters
    assert data["thing4"]["value"] == "Building 2, Room 301"
    assert data["time3"]["value"].endswith(":00")
    # booking_confirmed goes by SMS only as the fallback: to the unsubscribed account.
    sms = await delivered(sms_sim, 1)
    assert [m["address"] for m in sms] == ["13900001111"]
    assert "预约成功" in sms[0]["content"]["text"]

    client_redis = Redis.from_url(stack.api.env["INVENTORY_REDIS_URL"], decode_responses=True)
    try:
        store = await SlotStore.connect_scripts(client_redis)
        # The HIS refuses the first booking; the schedule of the second is suspended.
        await wait_until(lambda: has_booking(db, unsubscribed_booking), timeout_s=20)
        await _pay(db, first, subscribed)
        await end_booking(
            db, store, first, outcome="rejected", code="his_rejected", message="号源已被占用"
        )
        await end_booking(
            db, store, unsubscribed_booking, outcome="cancelled", code="suspended", message="停诊"
        )
    finally:
        await client_redis.aclose()
    wechat = await delivered(wechat_sim, 2)
    assert wechat[1]["content"]["template_id"] == "tmpl-his-rejected"
    assert wechat[1]["content"]["data"]["thing2"]["value"] == "号源已被占用"
    sms = await delivered(sms_sim, 3)
    texts = [m["content"]["text"] for m in sms]
    assert any("未能成功（号源已被占用）" in t and "50.00元" in t for t in texts), texts
    assert any("因医生停诊" in t for t in texts), texts
    assert {m["address"] for m in sms} == {PHONE, "13900001111"}
    # The refund of the refused booking goes through, as the refund loop records it.
    refund_id = await db.fetchval("SELECT id FROM refunds WHERE hold_id = $1", first)
    assert refund_id is not None
    await db.execute(
        QUERIES["finish_refund"], refund_id, "succeeded", "rf-1", "", datetime.now(tz=UTC)
    )
    wechat = await delivered(wechat_sim, 3)
    assert wechat[2]["content"]["template_id"] == "tmpl-refund-succeeded"
    assert wechat[2]["content"]["data"]["amount2"]["value"] == "50.00元"
    # Nothing was sent twice, and every delivery is recorded as sent.
    assert len({m["key"] for m in sms_sim.messages()}) == len(sms_sim.messages())
    statuses = await db.fetch("SELECT status, count(*) FROM notification_deliveries GROUP BY 1")
    assert {r["status"]: r["count"] for r in statuses} == {"sent": 6}


async def _pay(db: asyncpg.Pool, booking_id: str, account: str) -> None:
    """The booking's payment as the payment flow records it (paid, buying the booking)."""
    await wait_until(lambda: has_booking(db, booking_id), timeout_s=20)
    await db.execute(
        """
        INSERT INTO payments (id, hold_id, account_id, provider, amount_fen, status,
                              provider_txn_id, paid_at, booking_id, settled_at)
        SELECT $2::text, id, $3, 'wechatpay', amount_fen, 'paid', $2::text, now(), id, now()
        FROM bookings WHERE id = $1
        """,
        booking_id,
        f"pay{os.urandom(6).hex()}",
        account,
    )


async def test_reminder_no_show_ban_and_its_end(
    notify_stack: Stack,
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> None:
    """The day-before reminder at the hospital's time, a no-show, a ban and its lifting
    each reach the patient by WeChat and SMS as their kinds say."""
    stack = notify_stack
    tomorrow = (datetime.now(tz=ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).date()
    shop, slots = await world(stack, client, visit_date=tomorrow)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    await subscribe(stack, client, account, "openid-reminded")
    # The hospital reminds from midnight on, so the reminder is due now.
    async with client.put(
        stack.api.url + f"/v1/operator/hospitals/{shop.hospital_id}/notifications",
        json={"reminder_time": "00:00", "sms_sign": "示范医院"},
        headers=stack.api.headers("ops", operator=True),
    ) as answer:
        assert answer.status == 201, await answer.text()
        assert (await answer.json())["reminder_time"] == "00:00"
    booking = await book(stack, client, account, patient, slots[0])
    wechat = await delivered(wechat_sim, 2)
    assert {m["content"]["template_id"] for m in wechat} == {
        "tmpl-booking-confirmed",
        "tmpl-visit-reminder",
    }
    assert sms_sim.messages() == []  # both go by SMS only as the fallback

    await wait_until(lambda: has_booking(db, booking), timeout_s=20)
    await db.execute(
        QUERIES["record_his_appointment"], booking, "appt-1", "A017", None, "门诊楼3层"
    )
    assert await record_no_show(db, booking, source="his")  # the visits flow's own step
    sms = await delivered(sms_sim, 1)
    assert sms[0]["content"]["text"].startswith("【示范医院】")
    assert "已记爽约一次" in sms[0]["content"]["text"]
    assert sms[0]["address"] == PHONE

    now = datetime.now(tz=UTC)
    await db.execute(
        QUERIES["upsert_patient_ban"],
        patient,
        shop.hospital_id,
        now + timedelta(days=30),
        "no_show",
        now,
    )
    sms = await delivered(sms_sim, 2)
    assert "预约资格暂停至" in sms[1]["content"]["text"]
    lifted = datetime.now(tz=UTC)
    await db.execute(
        QUERIES["upsert_patient_ban"], patient, shop.hospital_id, lifted, "lifted", lifted
    )
    wechat = await delivered(wechat_sim, 5)
    kinds = [m["content"]["template_id"] for m in wechat]
    assert kinds[2:] == ["tmpl-no-show-recorded", "tmpl-patient-banned", "tmpl-ban-ended"]
    assert len(sms_sim.messages()) == 2  # ban_ended: SMS only as the fallback


async def test_a_refund_without_a_booking_is_told(
    notify_stack: Stack,
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    sms_sim: MessageSimServer,
) -> None:
    """Money paid for a hold that never became a booking (paid after its deadline) is
    refunded; the patient hears of the refund by SMS, with the amount and the hospital."""
    from inventory.payments.refunds import request_refund

    stack = notify_stack
    _, slots = await world(stack, client)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    async with client.post(
        stack.api.url + "/v1/holds",
        json={"slot_id": slots[1], "patient_id": patient, "channel": "wechat"},
        headers={**stack.api.headers(account), "Idempotency-Key": os.urandom(8).hex()},
    ) as answer:
        hold_id = (await answer.json())["hold_id"]

    async def held() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM holds WHERE id = $1", hold_id))

    await wait_until(held, timeout_s=20)
    await db.execute(
        """
        INSERT INTO payments (id, hold_id, account_id, provider, amount_fen, status,
                              provider_txn_id, paid_at, settled_at)
        SELECT $2::text, id, $3, 'wechatpay', amount_fen, 'paid', $2::text, now(), now()
        FROM holds WHERE id = $1
        """,
        hold_id,
        f"pay{os.urandom(6).hex()}",
        account,
    )
    refund = await request_refund(db, hold_id, None, "expired_after_payment", "late-1")
    assert refund is not None
    await db.execute(
        QUERIES["finish_refund"], refund.refund_id, "succeeded", "rf-2", "", datetime.now(tz=UTC)
    )
    (sms,) = await delivered(sms_sim, 1)
    assert sms["address"] == PHONE
    assert "Demo Hospital的挂号费50.00元已退回" in sms["content"]["text"]
