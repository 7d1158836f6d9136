"""At least once, at most once beyond the provider's de-duplication: a provider that is
down (retries, then the dead letter, then the operator's retry), a worker killed with
SIGKILL between the provider's answer and its record, an account that unsubscribed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import timedelta

import aiohttp
import asyncpg

from inventory.devtools.servers import free_port
from inventory.record.queries import QUERIES
from tests.api.helpers import register_patient
from tests.durability.stack import Stack, wait_until

from .conftest import MessageSimServer
from .helpers import PHONE, delivered, deliveries, now, subscribe, world


async def ban(db: asyncpg.Pool, patient: str, hospital: str) -> None:
    """A ban decided now, as the persister records the ban step's event."""
    at = now()
    await db.execute(
        QUERIES["upsert_patient_ban"], patient, hospital, at + timedelta(days=7), "no_show", at
    )


async def statuses(db: asyncpg.Pool) -> list[str]:
    return [d["status"] for d in await deliveries(db)]


async def test_provider_down_retries_then_dead_letters_and_the_operator_retries_once(
    make_stack: Callable[..., Stack],
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> None:
    """Both providers answer 503: each message is tried MAX_ATTEMPTS times with back-off,
    then dead-lettered (counted, listed for the operator); the operator's retry, once the
    providers are back, sends each exactly once; a second retry of the same letter is 409."""
    metrics_port = free_port()
    stack = make_stack(INVENTORY_WORKER_METRICS_PORT=str(metrics_port))
    shop, _ = await world(stack, client)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    await subscribe(stack, client, account, "openid-down", kinds=["patient_banned"])
    wechat_sim.fault("down")
    sms_sim.fault("down")
    await ban(db, patient, shop.hospital_id)

    async def all_dead() -> bool:
        return await statuses(db) == ["dead", "dead"]

    await wait_until(all_dead, timeout_s=40)
    assert [d["attempts"] for d in await deliveries(db)] == [3, 3]
    assert wechat_sim.messages() == []
    assert sms_sim.messages() == []
    operator = stack.api.headers("ops", operator=True)
    async with client.get(
        stack.api.url + "/v1/operator/notifications/dead-letters", headers=operator
    ) as answer:
        letters = (await answer.json())["items"]
        assert answer.status == 200
    assert sorted(letter["channel"] for letter in letters) == ["sms", "wechat"]
    assert {letter["error"] for letter in letters} == {"http_503: attempts exhausted"}
    assert {letter["recipient"] for letter in letters} == {
        f"account:{account}",
        f"patient:{patient}",
    }
    assert PHONE not in str(letters)
    async with client.get(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
        text = await answer.text()
    for channel in ("sms", "wechat"):
        for outcome, count in (("failed", 3), ("retried", 2), ("dead_lettered", 1)):
            series = (
                f'inventory_notifications_total{{channel="{channel}",kind="patient_banned",'
                f'outcome="{outcome}"}} {count:.1f}'
            )
            assert series in text

    wechat_sim.fault("ok")
    sms_sim.fault("ok")
    for letter in letters:
        url = (
            stack.api.url
            + f"/v1/operator/notifications/dead-letters/{letter['dead_letter_id']}/retry"
        )
        async with client.post(url, headers=operator) as answer:
            assert answer.status == 200, await answer.text()
            assert (await answer.json())["status"] == "pending"
        async with client.post(url, headers=operator) as answer:
            assert answer.status == 409
    assert [m["address"] for m in await delivered(sms_sim, 1)] == [PHONE]
    assert [m["address"] for m in await delivered(wechat_sim, 1)] == ["openid-down"]

    async def all_sent() -> bool:
        return await statuses(db) == ["sent", "sent"]

    await wait_until(all_sent, timeout_s=20)
    async with client.get(
        stack.api.url + "/v1/operator/notifications/dead-letters", headers=operator
    ) as answer:
        assert (await answer.json())["items"] == []


async def test_kill_between_send_and_record_loses_nothing_and_sends_once(
    make_stack: Callable[..., Stack],
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    sms_sim: MessageSimServer,
) -> None:
    """The SMS provider takes the message and does not answer; the worker is killed with
    SIGKILL meanwhile (sent, not recorded). A new worker sends it again after the lease
    with the same key: the provider saw two requests and holds one message, the delivery
    is sent, and nothing else was sent."""
    # The call's limit outlasts the kill, so the kill lands between send and record.
    stack = make_stack(call_timeout_s="20", lease_s="25")
    shop, _ = await world(stack, client)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    sms_sim.fault("hang", hang_s=60)
    await ban(db, patient, shop.hospital_id)
    (message,) = await delivered(sms_sim, 1)
    assert stack.worker is not None
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait(timeout=10)
    (delivery,) = await deliveries(db)
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 1
    assert delivery["idempotency_key"] == message["key"]

    sms_sim.fault("ok")
    stack.start_worker()

    async def sent() -> bool:
        return [d["status"] for d in await deliveries(db)] == ["sent"]

    await wait_until(sent, timeout_s=60)
    (delivery,) = await deliveries(db)
    assert delivery["attempts"] == 2
    (message,) = sms_sim.messages()
    assert message["requests"] == 2  # the second send reached it, and was absorbed
    assert delivery["provider_message_id"] == message["message_id"]
    assert message["address"] == PHONE
    assert "预约资格暂停" in message["content"]["text"]
    # The phone was decrypted for the call only: neither worker's log holds it.
    assert PHONE not in stack.worker_log.read_text(errors="replace")


async def test_unsubscribed_account_gets_no_wechat_message(
    notify_stack: Stack,
    db: asyncpg.Pool,
    client: aiohttp.ClientSession,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> None:
    """An account that withdrew its subscription gets no WeChat message (SMS instead,
    as the fallback), and one that never subscribed neither; its subscriptions list
    says so."""
    stack = notify_stack
    shop, _ = await world(stack, client)
    account = f"acct-{os.urandom(3).hex()}"
    patient = await register_patient(stack.api, client, account, phone=PHONE)
    await subscribe(stack, client, account, "openid-gone", kinds=["ban_ended"])
    headers = stack.api.headers(account)
    async with client.delete(
        stack.api.url + "/v1/notifications/subscriptions/ban_ended", headers=headers
    ) as answer:
        assert answer.status == 200
        assert await answer.json() == {"kind": "ban_ended", "subscribed": False}
    async with client.get(stack.api.url + "/v1/notifications/subscriptions", headers=headers) as a:
        assert (await a.json())["items"] == []
    lifted = now()
    await db.execute(
        QUERIES["upsert_patient_ban"], patient, shop.hospital_id, lifted, "lifted", lifted
    )
    (sms,) = await delivered(sms_sim, 1)
    assert "已恢复" in sms["content"]["text"]
    await asyncio.sleep(1.0)  # a WeChat message would have gone by now
    assert wechat_sim.messages() == []
    assert [(d["channel"], d["status"]) for d in await deliveries(db)] == [("sms", "sent")]
