"""The waitlist through the whole stack (an ``inventory serve`` and an ``inventory
worker`` process): offers made under rules on the patient's own tag are settled by the
worker, survive kill -9 of the worker between the schedule-side offer and the patient
side (nothing stuck, nothing held twice), and reach Postgres through the outbox."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer
from inventory.domain import HospitalPolicy, WaitlistState
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore
from inventory.store.waitlist import WaitlistStore
from tests.api.helpers import Catalogue

from .stack import Stack, patients, reserve, wait_until, wait_verified

pytestmark = pytest.mark.slow

POLICY = {"blacklist": True, "max_open_per_patient": 2}


async def join(
    stack: Stack, http: aiohttp.ClientSession, account: str, patient: str, schedule: str
) -> dict[str, Any]:
    async with http.post(
        stack.api.url + f"/v1/schedules/{schedule}/waitlist",
        json={"patient_id": patient, "channel": "app"},
        headers=stack.api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        data: dict[str, Any] = await answer.json()
        assert answer.status == 201, data
        return data


async def release(stack: Stack, http: aiohttp.ClientSession, account: str, hold_id: str) -> None:
    async with http.delete(
        stack.api.url + f"/v1/holds/{hold_id}", headers=stack.api.headers(account)
    ) as answer:
        assert answer.status == 200, await answer.text()


def kill_worker(stack: Stack) -> None:
    assert stack.worker is not None
    os.kill(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait(timeout=10)


async def test_offers_settle_across_worker_kills(
    stack: Stack, private_redis: RedisServer, database: str, http: aiohttp.ClientSession
) -> None:
    """Three holds released while the worker is dead leave three schedule-side offers
    unsettled (one of them for a banned patient, one half-settled as a worker killed
    after taking the patient's token would leave it); a new worker settles two, refuses
    the banned patient's (its unit goes to the fourth in line), then declined offers
    pass on while the worker is killed again mid-way. At the end no offer is left
    unsettled, no unit is held twice, and Postgres has every entry as Redis has it."""
    stack.start_worker()
    await wait_verified(private_redis.url)

    async def ready() -> bool:
        async with http.get(stack.api.url + "/readyz") as answer:
            return answer.status == 200

    await wait_until(ready, timeout_s=30)
    cat = await Catalogue(stack.api, http).create(policy=POLICY)
    schedule, (slot,), _ = await cat.schedule([3])
    holders = await patients(stack, http, 3, prefix="holder")
    holds = []
    for account, patient in holders:
        status, body = await reserve(stack, http, account, patient, slot)
        assert status == 201, body
        holds.append(body["hold_id"])
    waiters = await patients(stack, http, 6, prefix="waiter")
    entries = [await join(stack, http, account, patient, schedule) for account, patient in waiters]
    tag = keys.tag_of_hold(entries[0]["entry_id"])

    client = Redis.from_url(private_redis.url, decode_responses=True)
    store = await SlotStore.connect_scripts(
        client, policies=PolicyBook(default=HospitalPolicy(**POLICY))
    )
    waitlist = WaitlistStore(store)
    try:
        await store.ban_patient(
            waiters[0][1], hospital_id=cat.hospital_id, until_ms=2**42, reason="no_show"
        )
        kill_worker(stack)
        await asyncio.gather(
            *(release(stack, http, h[0], hold) for h, hold in zip(holders, holds, strict=True))
        )
        offered = [await waitlist.entry(e["entry_id"]) for e in entries[:3]]
        assert all(o is not None and o.state is WaitlistState.OFFERED for o in offered)
        assert len(await store.unsettled_offers(tag)) == 3
        # The crash point: step one done (a pending token), the tag never told.
        second = offered[1]
        assert second is not None
        await store.acquire_patient_item(
            keys.patient_keys(second.patient_id),
            second.offer_hold_id,
            hospital_id=cat.hospital_id,
            max_items=2,
            policy=HospitalPolicy(**POLICY),
            reap=lambda ids: store.reap_patient_tokens(second.patient_id, ids),
        )

        stack.start_worker()

        async def all_settled() -> bool:
            return not await store.unsettled_offers(tag)

        await wait_until(all_settled, timeout_s=30)
        states = [
            (await waitlist.entry(e["entry_id"])).state  # type: ignore[union-attr]
            for e in entries
        ]
        assert states == [
            WaitlistState.REFUSED,
            WaitlistState.OFFERED,
            WaitlistState.OFFERED,
            WaitlistState.OFFERED,
            WaitlistState.WAITING,
            WaitlistState.WAITING,
        ]
        for index in (1, 2, 3):
            entry = await waitlist.entry(entries[index]["entry_id"])
            assert entry is not None
            tokens = await store.patient_tokens(entry.patient_id)
            assert tokens == {entry.offer_hold_id: float("inf")}
        assert await store.patient_tokens(waiters[0][1]) == {}

        # Two offers declined with the worker killed right after: they pass on to the
        # fifth and sixth, whose patient side a restarted worker settles.
        for index in (1, 2):
            entry = await waitlist.entry(entries[index]["entry_id"])
            assert entry is not None
            await release(stack, http, waiters[index][0], entry.offer_hold_id)
        kill_worker(stack)
        stack.start_worker()
        await wait_until(all_settled, timeout_s=30)
        states = [
            (await waitlist.entry(e["entry_id"])).state  # type: ignore[union-attr]
            for e in entries
        ]
        assert states[4:] == [WaitlistState.OFFERED, WaitlistState.OFFERED]
        counts = (await store.slot_counts(tag, [slot]))[slot]
        assert counts.conserved
        assert (counts.remaining, counts.held, counts.booked) == (0, 3, 0)
        open_offers = {
            (await waitlist.entry(e["entry_id"])).offer_hold_id  # type: ignore[union-attr]
            for e in entries
            if (await waitlist.entry(e["entry_id"])).state is WaitlistState.OFFERED  # type: ignore[union-attr]
        }
        assert len(open_offers) == 3

        # The record: every entry as Redis has it, every offer a hold row.
        expected = {
            e["entry_id"]: (await waitlist.entry(e["entry_id"])).state.value  # type: ignore[union-attr]
            for e in entries
        }

        async def recorded() -> bool:
            connection = await asyncpg.connect(database)
            try:
                rows = await connection.fetch("SELECT id, state FROM waitlist_entries")
                held = await connection.fetchval(
                    "SELECT count(*) FROM holds WHERE id = ANY($1::text[]) AND state = 'held'",
                    list(open_offers),
                )
            finally:
                await connection.close()
            return {r["id"]: r["state"] for r in rows} == expected and held == 3

        # Entries a killed worker had read and not acknowledged come back to the next
        # one after the persister's claim idle time (30 s).
        await wait_until(recorded, timeout_s=90)
        async with http.get(
            stack.api.url + "/v1/waitlist", headers=stack.api.headers(waiters[4][0])
        ) as answer:
            mine = await answer.json()
        assert [item["state"] for item in mine["items"]] == ["offered"]
        assert mine["items"][0]["offer"]["state"] == "held"
        log = stack.worker_log.read_text(errors="replace")
        assert "waitlist.offer_refused" in log
        assert "worker.loop_failed" not in log
    finally:
        await client.aclose()
