"""A patient paying through the API and the simulator, and notifications made by hand."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from inventory.simulators.paysim import (
    KeySet,
    notification_body,
    signature_headers,
    transaction_resource,
)
from inventory.store import keys
from tests.api.conftest import ApiServer
from tests.api.helpers import Catalogue, register_patient, uid

from .conftest import PaySimServer

NOTIFY = "/v1/payments/wechat/notify"
FEE = 5000  # tests.api.helpers.Catalogue.schedule's fee


class Patient:
    """One account with one patient, booking through the API."""

    def __init__(self, api: ApiServer, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.http = http
        self.account = uid("payer")
        self.headers = api.headers(self.account)
        self.patient_id = ""

    async def register(self) -> Patient:
        self.patient_id = await register_patient(self.api, self.http, self.account)
        return self

    async def call(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.api.url + path, json=json, headers=self.headers | (headers or {})
        ) as answer:
            raw = await answer.read()
            return answer.status, orjson.loads(raw) if raw else None

    async def hold(self, slot_id: str) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/v1/holds",
            json={"slot_id": slot_id, "patient_id": self.patient_id, "channel": "wechat"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert status == 201, body
        return dict(body)

    async def start_payment(self, hold_id: str, *, expect: int = 201) -> dict[str, Any]:
        status, body = await self.call(
            "POST", f"/v1/holds/{hold_id}/payments", json={"openid": "o-" + self.account}
        )
        assert status == expect, body
        return dict(body)

    async def payment(self, hold_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/holds/{hold_id}/payments")
        assert status == 200, body
        assert len(body["items"]) == 1, body
        return dict(body["items"][0])

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)


async def catalogue(
    api: ApiServer,
    http: aiohttp.ClientSession,
    capacities: list[int],
    *,
    fee_fen: int = FEE,
    **policy: Any,
) -> list[str]:
    """A fresh hospital with one schedule; its slot ids."""
    cat = await Catalogue(api, http).create(policy={"one_per_day": False, **policy})
    _, slots, _ = await cat.schedule(capacities, fee_fen=fee_fen)
    return slots


def notification(
    keys_: KeySet,
    payment_id: str,
    *,
    amount_fen: int = FEE,
    transaction_id: str | None = None,
    mchid: str | None = None,
    appid: str | None = None,
    body_options: dict[str, Any] | None = None,
    header_options: dict[str, Any] | None = None,
    signing_key: Any = None,
    serial: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A notification of ``payment_id`` paid, signed and encrypted like WeChat Pay's; the
    options make it wrong in one way."""
    resource = transaction_resource(
        mchid=mchid or keys_.mchid,
        appid=appid or keys_.appid,
        payment_id=payment_id,
        transaction_id=transaction_id or "4200" + uuid.uuid4().hex[:24],
        amount_fen=amount_fen,
    )
    body = notification_body(resource, keys_.apiv3_key, **(body_options or {}))
    headers = signature_headers(
        body,
        signing_key or keys_.platform_key,
        serial or keys_.platform_serial,
        **(header_options or {}),
    )
    return body, headers


async def post_notification(
    api: ApiServer, http: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """POST a notification; (status, JSON body or None)."""
    async with http.post(api.url + NOTIFY, data=body, headers=headers) as answer:
        raw = await answer.read()
        return answer.status, orjson.loads(raw) if raw else None


async def pay(patient: Patient, keys_: KeySet, hold_id: str) -> str:
    """Book ``hold_id`` the only way a hold with a fee is booked with payments on: start
    its payment and deliver the provider's signed notification. The payment id."""
    payment_id = str((await patient.start_payment(hold_id))["payment_id"])
    status, body = await post_notification(
        patient.api, patient.http, *notification(keys_, payment_id)
    )
    assert status == 204, body
    return payment_id


async def sim(
    http: aiohttp.ClientSession, pay_sim: PaySimServer, method: str, path: str, **json: Any
) -> Any:
    """Call the simulator's own /sim routes."""
    async with http.request(method, pay_sim.url + path, json=json or None) as answer:
        data = await answer.json()
        assert answer.status == 200, data
        return data


async def backdate_hold(redis_url: str, hold_id: str) -> None:
    """Move a hold's deadline one second into the past in Redis (record and timers), as if
    its payment deadline had passed: the shortest policy TTL is 60 s."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        tag_keys = keys.tag_keys(keys.tag_of_hold(hold_id))
        record = orjson.loads(await client.hget(tag_keys.holds, hold_id))
        old, new = int(record["deadline"]), int(time.time() * 1000) - 1000
        record["deadline"] = new
        slot = record["slot"]
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(tag_keys.holds, hold_id, orjson.dumps(record).decode())
            pipe.zadd(tag_keys.timers, {f"{slot}|h|{hold_id}": new})
            pipe.zrem(tag_keys.slot_timers, f"{slot}|{old:015d}|h|{hold_id}")
            pipe.zadd(tag_keys.slot_timers, {f"{slot}|{new:015d}|h|{hold_id}": 0})
            await pipe.execute()
    finally:
        await client.aclose()


async def backdate_payment(db: asyncpg.Pool, payment_id: str) -> None:
    """Make a pending payment due for the payment loop (its hold's deadline passed)."""
    async with db.acquire() as c:
        await c.execute(
            "UPDATE payments SET hold_deadline = now() - interval '1 second',"
            " next_check_at = now() WHERE id = $1",
            payment_id,
        )


async def payment_row(db: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    """The payments row."""
    async with db.acquire() as c:
        row = await c.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)
    assert row is not None
    return row


async def refund_count(db: asyncpg.Pool, payment_id: str) -> int:
    """How many refund rows the payment has."""
    async with db.acquire() as c:
        found = await c.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment_id)
    return int(found)


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
