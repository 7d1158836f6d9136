"""The money and HIS-queue metrics: refused WeChat Pay notifications counted by reason on
the API's /metrics; pending payments, open refunds and bookings waiting for the HIS, with
the age of the oldest of each, sampled from a real Postgres into the worker's families."""

from __future__ import annotations

import secrets

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from inventory.ops import metrics
from inventory.ops.sampler import sample_records
from inventory.payments.refunds import request_refund
from inventory.simulators.paysim import KeySet
from tests.api.conftest import ApiServer
from tests.conftest import ServerHandle
from tests.db.seed import seed_all

from .helpers import notification, post_notification
from .test_refunds_db import paid_payment


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _scrape(api: ApiServer, http: aiohttp.ClientSession) -> dict[tuple[str, tuple], float]:
    async with http.get(api.url + "/metrics") as answer:
        return samples(await answer.text())


async def test_refused_notifications_are_counted_by_reason(
    pay_api: ApiServer, pay_keys: KeySet, http: aiohttp.ClientSession
) -> None:
    """An unknown order and a notification without signature headers each count once
    under their reason; the families exist at 0 for every reason before any refusal."""
    name = "inventory_payment_notifications_refused_total"
    before = await _scrape(pay_api, http)
    for reason in (*metrics.NOTIFICATION_REFUSALS, metrics.NOT_SETTLED):
        assert (name, (("reason", reason),)) in before, reason
    status, _ = await post_notification(
        pay_api, http, *notification(pay_keys, "p" + secrets.token_hex(13))
    )
    assert status == 404
    body, _ = notification(pay_keys, "p" + secrets.token_hex(13))
    status, _ = await post_notification(pay_api, http, body, {"Content-Type": "application/json"})
    assert status == 401
    after = await _scrape(pay_api, http)
    for reason in ("unknown_order", "signature_missing"):
        key = (name, (("reason", reason),))
        assert after[key] - before[key] == 1, reason


async def test_open_money_and_the_his_queue_are_sampled(pool: asyncpg.Pool) -> None:
    """A failed refund two hours old, a payment pending for 30 minutes and a confirmed
    booking not yet sent to the HIS appear in the worker's gauges with their ages; once
    settled they read 0."""
    seed = await seed_all(pool)
    payment_id = await paid_payment(pool, seed)
    refund = await request_refund(pool, seed.booking, None, "his_rejected", "k-metrics")
    assert refund is not None
    async with pool.acquire() as c:
        await c.execute(
            "UPDATE refunds SET status = 'failed', created_at = now() - interval '2 hours'"
        )
        await c.execute(
            "UPDATE payments SET status = 'pending', created_at = now() - interval '30 minutes'"
            " WHERE id = $1",
            payment_id,
        )
        await c.execute("UPDATE bookings SET updated_at = now() - interval '40 minutes'")
        waiting = await c.fetchval("SELECT count(*) FROM bookings WHERE status = 'confirmed'")
    assert waiting >= 1
    await sample_records(pool, his_queue=True)
    found = samples(metrics.exposition("worker").decode())
    assert found[("inventory_payments_pending", ())] == 1
    assert 1790 <= found[("inventory_payment_oldest_pending_age_seconds", ())] < 1900
    assert found[("inventory_refunds_open", (("status", "failed"),))] == 1
    assert found[("inventory_refunds_open", (("status", "pending"),))] == 0
    assert 7190 <= found[("inventory_refund_oldest_open_age_seconds", ())] < 7300
    assert found[("inventory_his_submission_queue", (("status", "confirmed"),))] == waiting
    assert 2390 <= found[("inventory_his_submission_oldest_age_seconds", ())] < 2500
    async with pool.acquire() as c:
        await c.execute("UPDATE refunds SET status = 'succeeded', succeeded_at = now()")
        await c.execute("UPDATE payments SET status = 'closed'")
        await c.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now(),"
            " cancel_reason = 'patient_cancelled'"
        )
    await sample_records(pool, his_queue=True)
    found = samples(metrics.exposition("worker").decode())
    assert found[("inventory_refunds_open", (("status", "failed"),))] == 0
    assert found[("inventory_refund_oldest_open_age_seconds", ())] == 0
    assert found[("inventory_payments_pending", ())] == 0
    assert found[("inventory_his_submission_queue", (("status", "confirmed"),))] == 0
    assert found[("inventory_his_submission_oldest_age_seconds", ())] == 0


async def test_the_worker_sampler_serves_the_money_gauges(
    pool: asyncpg.Pool, redis_server: ServerHandle
) -> None:
    """The worker's sampler, given the worker's pool, fills the gauges on its own
    /metrics within one turn (a failed refund shows as failed)."""
    import asyncio

    from inventory.devtools.servers import free_port
    from inventory.ops.sampler import run_sampler
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    seed = await seed_all(pool)
    await paid_payment(pool, seed)
    await request_refund(pool, seed.booking, None, "his_rejected", "k-sampler")
    async with pool.acquire() as c:
        await c.execute("UPDATE refunds SET status = 'failed'")
    client = await connect_redis(redis_server.url)
    store = await SlotStore.connect_scripts(client)
    stop = asyncio.Event()
    port = free_port()
    task = asyncio.create_task(
        run_sampler(
            store, stats=None, stop=stop, max_backlog=1, port=port, pool=pool, his_queue=False
        )
    )
    try:
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        key = ("inventory_refunds_open", (("status", "failed"),))
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                        found = samples(await answer.text())
                except aiohttp.ClientConnectionError:
                    continue
                if found.get(key) == 1:
                    break
        assert found.get(key) == 1
    finally:
        stop.set()
        await task
        await client.aclose()
