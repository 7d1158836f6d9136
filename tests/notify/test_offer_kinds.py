"""The messages of offers and moves through the real path: a waitlist offer (the
store's event -> the persister -> the waitlist row's trigger), a substitute doctor
offered by an operator and a reschedule done (lifecycle events -> their trigger) -> the
worker's notifier -> the WeChat and SMS simulator processes."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from tests.api.helpers import register_patient
from tests.durability.stack import Stack, wait_until

from .conftest import MessageSimServer
from .helpers import PHONE, book, delivered, subscribe, world


async def _call(
    stack: Stack, http: aiohttp.ClientSession, method: str, path: str, account: str, **kw: Any
) -> tuple[int, Any]:
    headers = stack.api.headers(account, operator=kw.pop("operator", False))
    headers |= {"Idempotency-Key": uuid.uuid4().hex}
    async with http.request(method, stack.api.url + path, headers=headers, **kw) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_waitlist_offer_substitution_offer_and_reschedule_done_are_told(
    notify_stack: Stack,
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> None:
    """A patient offered a waitlist unit hears it with the pay-by time (WeChat and SMS:
    the offer lapses); a booking of a schedule offered a substitute hears it with the
    answer-by time (both channels); a reschedule done is told by WeChat (SMS only as the
    fallback); each once."""
    stack = notify_stack
    shop, slots = await world(stack, client)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    await subscribe(stack, client, account, "openid-offers")

    # The waitlist: a schedule of one unit, held by someone else; the patient joins and
    # the holder gives the unit back.
    later = (datetime.now(tz=UTC) + timedelta(days=5)).date()
    schedule, (one,), _ = await shop.schedule([1], visit_date=later)
    holder = f"acct-{os.urandom(3).hex()}"
    other = await register_patient(stack.api, client, holder)
    held = await _hold(stack, client, holder, other, one)
    status, entry = await _call(
        stack, client, "POST", f"/v1/schedules/{schedule}/waitlist", account,
        json={"patient_id": patient, "channel": "wechat"},
    )  # fmt: skip
    assert status == 201, entry
    status, released = await _call(stack, client, "DELETE", f"/v1/holds/{held}", holder)
    assert status == 200, released
    wechat = await delivered(wechat_sim, 1)
    assert wechat[0]["content"]["template_id"] == "tmpl-waitlist-offer"
    assert wechat[0]["content"]["data"]["time4"]["value"] != "-"  # the pay-by time
    sms = await delivered(sms_sim, 1)
    assert "候补成功" in sms[0]["content"]["text"]
    assert "逾期自动释放" in sms[0]["content"]["text"]

    # A booking moved (改约) to the other slot: told by WeChat (besides the new
    # booking's own booking_confirmed, as any paid booking).
    booking = await book(stack, client, account, patient, slots[0])
    status, moved = await _call(
        stack, client, "POST", f"/v1/bookings/{booking}/reschedule", account,
        json={"slot_id": slots[1]},
    )  # fmt: skip
    assert (status, moved["status"]) == (201, "done"), moved
    (done,) = await _wechat_of(wechat_sim, "reschedule-done")
    assert done["content"]["data"]["thing4"]["value"] == "Building 2, Room 301"
    assert done["address"] == "openid-offers"

    # Its schedule is suspended with a substitute offered: told by WeChat and SMS.
    target, _, _ = await shop.schedule([3], visit_date=later + timedelta(days=1))
    new_schedule = await db.fetchval(
        "SELECT schedule_id FROM bookings WHERE id = $1", moved["reschedule_id"]
    )
    status, offered = await _call(
        stack, client, "POST", f"/v1/operator/schedules/{new_schedule}/substitute", "ops",
        operator=True, json={"target_schedule_id": target, "reason": "doctor_ill"},
    )  # fmt: skip
    assert status == 200, offered
    assert moved["reschedule_id"] in offered["booking_ids"]
    (substitute,) = await _wechat_of(wechat_sim, "substitution-offer")
    assert substitute["content"]["data"]["time4"]["value"] != "-"  # answer by
    await wait_until(lambda: _sms_with(sms_sim, "替诊"), timeout_s=30)

    # Each once: one delivery per (fact, channel, recipient), all sent.
    kinds = await db.fetch(
        "SELECT kind, channel, count(*) AS n FROM notification_deliveries"
        " WHERE kind IN ('waitlist_offer', 'substitution_offer', 'reschedule_done')"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [(r["kind"], r["channel"], r["n"]) for r in kinds] == [
        ("reschedule_done", "wechat", 1),
        ("substitution_offer", "sms", 1),
        ("substitution_offer", "wechat", 1),
        ("waitlist_offer", "sms", 1),
        ("waitlist_offer", "wechat", 1),
    ]


async def _hold(
    stack: Stack, http: aiohttp.ClientSession, account: str, patient: str, slot: str
) -> str:
    status, hold = await _call(
        stack, http, "POST", "/v1/holds", account,
        json={"slot_id": slot, "patient_id": patient, "channel": "wechat"},
    )  # fmt: skip
    assert status == 201, hold
    return str(hold["hold_id"])


async def _wechat_of(sim: MessageSimServer, kind: str) -> list[dict[str, Any]]:
    """The WeChat messages of one kind (by its template id), once there is one."""
    template = f"tmpl-{kind}"

    async def found() -> bool:
        return any(m["content"].get("template_id") == template for m in sim.messages())

    await wait_until(found, timeout_s=30)
    return [m for m in sim.messages() if m["content"].get("template_id") == template]


async def _sms_with(sim: MessageSimServer, words: str) -> bool:
    return any(words in m["content"].get("text", "") for m in sim.messages())
