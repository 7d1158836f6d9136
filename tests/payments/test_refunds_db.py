"""request_refund and the payment/refund queries against the migrated schema (no API):
one refund per payment whoever asks, the amount is the whole fee, a caller's transaction
carries the request, and the refund loop's claim and outcome queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from inventory.payments.errors import RefundRequestError
from inventory.payments.ids import payment_id_for, refund_id_for
from inventory.payments.refunds import booking_refunds, request_refund
from inventory.record.pool import create_pool
from inventory.record.queries import QUERIES
from inventory.store import keys
from tests.databases import Databases
from tests.db.seed import Seed, seed_all

NOW = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def pool(databases: Databases) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a migrated database of this module's own."""
    async with databases.scratch() as url:
        pool = await create_pool(url, min_size=1, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture(scope="module")
async def seeded(pool: asyncpg.Pool) -> Seed:
    """The shared seed (it has one confirmed booking), its booking paid through a provider."""
    seed = await seed_all(pool)
    await paid_payment(pool, seed)
    return seed


async def paid_payment(pool: asyncpg.Pool, seed: Seed) -> str:
    """A payment for the seeded booking's hold, paid and settled to the booking."""
    hold_id = seed.booking
    payment_id = payment_id_for(hold_id)
    async with pool.acquire() as c:
        await c.execute(
            QUERIES["insert_payment"],
            payment_id,
            hold_id,
            seed.account,
            "wechat",
            5000,
            "CNY",
            "jsapi",
            seed.slot_early,
            seed.patient,
            "wechat",
            NOW,
            NOW,
            None,
        )
        await c.execute(QUERIES["settle_payment"], payment_id, "4200000001", NOW, hold_id)
    return payment_id


async def test_refund_is_requested_once_per_payment(pool: asyncpg.Pool, seeded: Seed) -> None:
    """Other reasons or keys give one refund row; an unpaid booking gets none."""
    unpaid = keys.hold_id_for(seeded.account, "never-paid", seeded.tag)
    assert await request_refund(pool, unpaid, None, "his_rejected", "k-0") is None
    payment_id = payment_id_for(seeded.booking)
    async with pool.acquire() as c:
        await c.execute("DELETE FROM refunds")
    first = await request_refund(pool, seeded.booking, 5000, "patient_cancelled", "k-1")
    assert first is not None
    assert first.created
    assert (first.refund_id, first.payment_id) == (refund_id_for(payment_id), payment_id)
    assert (first.status, first.amount_fen, first.reason) == ("pending", 5000, "patient_cancelled")
    again = await request_refund(pool, seeded.booking, None, "his_rejected", "k-2")
    assert again is not None
    assert not again.created
    assert (again.refund_id, again.reason) == (first.refund_id, "patient_cancelled")
    async with pool.acquire() as c:
        count = await c.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment_id)
    assert count == 1
    shown = await booking_refunds(pool, seeded.account, seeded.booking)
    assert [refund.refund_id for refund in shown] == [first.refund_id]
    assert await booking_refunds(pool, seeded.other_account, seeded.booking) == []


async def test_refund_requests_are_checked(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A partial amount, a bad reason or key, or a non-booking id is refused before SQL."""
    for args in (
        (seeded.booking, 1, "patient_cancelled", "k"),
        (seeded.booking, 0, "patient_cancelled", "k"),
        (seeded.booking, None, "Patient Cancelled", "k"),
        (seeded.booking, None, "patient_cancelled", ""),
        ("not-a-booking", None, "patient_cancelled", "k"),
    ):
        with pytest.raises(RefundRequestError):
            await request_refund(pool, *args)


async def test_request_joins_the_callers_transaction(pool: asyncpg.Pool, seeded: Seed) -> None:
    """Given a connection, the request rolls back with the caller's transaction."""
    async with pool.acquire() as c:
        await c.execute("DELETE FROM refunds")
        transaction = c.transaction()
        await transaction.start()
        refund = await request_refund(c, seeded.booking, None, "his_rejected", "his:x")
        assert refund is not None
        assert refund.created
        await transaction.rollback()
        assert await c.fetchval("SELECT count(*) FROM refunds") == 0


async def test_refund_loop_queries_claim_lease_and_finish(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A due refund is claimed once (leased), fails and comes back, then succeeds for good."""
    async with pool.acquire() as c:
        await c.execute("DELETE FROM refunds")
    await request_refund(pool, seeded.booking, None, "his_rejected", "k-loop")
    async with pool.acquire() as c:
        await c.execute("UPDATE refunds SET next_attempt_at = now() - interval '1 second'")
        claimed = await c.fetch(QUERIES["claim_due_refunds"], 10, 60.0)
        assert len(claimed) == 1
        assert claimed[0]["attempts"] >= 1
        assert await c.fetch(QUERIES["claim_due_refunds"], 10, 60.0) == []
        refund_id = claimed[0]["refund_id"]
        soon = datetime.now(tz=UTC) - timedelta(seconds=1)
        failed = await c.fetchrow(
            QUERIES["finish_refund"], refund_id, "failed", None, "SYSTEM_ERROR", soon
        )
        assert failed["status"] == "failed"
        assert len(await c.fetch(QUERIES["claim_due_refunds"], 10, 60.0)) == 1
        done = await c.fetchrow(
            QUERIES["finish_refund"], refund_id, "succeeded", "50300001", "", soon
        )
        assert done["succeeded_at"] is not None
        assert await c.fetch(QUERIES["claim_due_refunds"], 10, 60.0) == []
        assert (
            await c.fetchrow(QUERIES["finish_refund"], refund_id, "failed", None, "late", soon)
            is None
        )
