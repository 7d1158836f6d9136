"""Driving the notifier's world through the API and the database, for the tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from tests.api.helpers import Catalogue
from tests.durability.stack import Stack, wait_until, wait_verified

from .conftest import MessageSimServer

PHONE = "13812345678"


async def book(
    stack: Stack,
    http: aiohttp.ClientSession,
    account: str,
    patient: str,
    slot: str,
) -> str:
    """Reserve and confirm (payments off: any payment reference books); the booking id."""
    headers = stack.api.headers(account)
    async with http.post(
        stack.api.url + "/v1/holds",
        json={"slot_id": slot, "patient_id": patient, "channel": "wechat"},
        headers={**headers, "Idempotency-Key": os.urandom(8).hex()},
    ) as answer:
        hold = await answer.json()
        assert answer.status == 201, hold
    async with http.post(
        stack.api.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": f"wx-{os.urandom(4).hex()}"},
        headers=headers,
    ) as answer:
        assert answer.status == 200, await answer.text()
    return str(hold["hold_id"])


async def subscribe(
    stack: Stack, http: aiohttp.ClientSession, account: str, openid: str, kinds: Any = None
) -> None:
    """The account accepted these kinds' templates (all by default), as the mini-program
    reports it through the API."""
    from inventory.notify.kinds import KINDS

    for kind in kinds or KINDS:
        async with http.put(
            stack.api.url + f"/v1/notifications/subscriptions/{kind}",
            json={"openid": openid},
            headers=stack.api.headers(account),
        ) as answer:
            assert answer.status in (200, 201), await answer.text()


async def delivered(
    sim: MessageSimServer, count: int, *, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Wait until the simulator holds ``count`` messages; them, oldest first."""

    async def enough() -> bool:
        return len(sim.messages()) >= count

    await wait_until(enough, timeout_s=timeout_s)
    return sorted(sim.messages(), key=lambda m: m["at"])


async def world(
    stack: Stack, http: aiohttp.ClientSession, *, visit_date: Any = None
) -> tuple[Catalogue, list[str]]:
    """A hospital with a released schedule of two slots, once the API's gate is open."""
    await wait_verified(stack.api.env["INVENTORY_REDIS_URL"])

    async def ready() -> bool:
        async with http.get(stack.api.url + "/readyz") as answer:
            return answer.status == 200

    await wait_until(ready, timeout_s=30)
    shop = await Catalogue(stack.api, http).create()
    _, slots, _ = await shop.schedule([5, 5], visit_date=visit_date)
    return shop, slots


async def has_booking(db: asyncpg.Pool, booking_id: str) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM bookings WHERE id = $1", booking_id))


async def deliveries(db: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every delivery, oldest first."""
    rows = await db.fetch("SELECT * FROM notification_deliveries ORDER BY id")
    return [dict(row) for row in rows]


def now() -> datetime:
    return datetime.now(tz=UTC)
