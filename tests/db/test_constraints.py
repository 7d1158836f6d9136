"""Constraints bite: the schema refuses rows that break the rules the service relies on."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.db.conftest import rolled_back
from tests.db.seed import Seed, blind_index

PATIENT_COLUMNS = "(id, account_id, blind_index, key_id, name_enc, resident_id_enc)"
HOLD_COLUMNS = (
    "(id, tag, slot_id, schedule_id, account_id, patient_id, channel, amount_fen, state,"
    " deadline, payment_ref, created_at, confirmed_at, ended_at)"
)


def hold_row(seed: Seed, **changes: Any) -> list[Any]:
    """Arguments for a raw INSERT INTO holds HOLD_COLUMNS; the defaults are a valid hold."""
    row: dict[str, Any] = {
        "id": seed.booking[:-4] + "zzzz",
        "tag": seed.tag,
        "slot_id": seed.slot_early,
        "schedule_id": seed.morning,
        "account_id": seed.account,
        "patient_id": seed.patient,
        "channel": "wechat",
        "amount_fen": 5000,
        "state": "held",
        "deadline": "2027-03-01T09:15:00+08:00",
        "payment_ref": "",
        "created_at": "2027-03-01T09:00:00+08:00",
        "confirmed_at": None,
        "ended_at": None,
    }
    row.update(changes)
    return list(row.values())


INSERT_HOLD = (
    f"INSERT INTO holds {HOLD_COLUMNS} VALUES"
    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::timestamptz, $11,"
    " $12::text::timestamptz, $13::text::timestamptz, $14::text::timestamptz)"
)


async def expect_refused(
    pool: asyncpg.Pool, error: type[Exception], sql: str, *args: Any
) -> asyncpg.PostgresError:
    """Run ``sql`` in a rolled-back transaction; it must fail with ``error``."""
    async with rolled_back(pool) as connection:
        with pytest.raises(error) as caught:
            await connection.execute(sql, *args)
    refused: asyncpg.PostgresError = caught.value
    return refused


async def test_valid_hold_row_is_accepted(pool: asyncpg.Pool, seeded: Seed) -> None:
    """The baseline row of the hold tests below is itself valid (so the refusals are real)."""
    async with rolled_back(pool) as connection:
        await connection.execute(INSERT_HOLD, *hold_row(seeded))


async def test_duplicate_blind_index_is_refused(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A second patient with the same ID number (blind index) cannot be inserted."""
    refused = await expect_refused(
        pool,
        asyncpg.UniqueViolationError,
        f"INSERT INTO patients {PATIENT_COLUMNS} VALUES ($1, $2, $3, 'k1', '\\x01', '\\x01')",
        "pat-second",
        seeded.other_account,
        blind_index(seeded.resident_id),
    )
    assert refused.constraint_name == "patients_blind_index_key"


async def test_negative_capacity_is_refused(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A slot's capacity cannot go below zero."""
    await expect_refused(
        pool,
        asyncpg.CheckViolationError,
        "UPDATE slots SET capacity = -1 WHERE id = $1",
        seeded.slot_early,
    )


@pytest.mark.parametrize(
    ("case", "sql"),
    [
        ("id with a separator", "UPDATE hospitals SET id = 'a:b' WHERE id = 'ruijin'"),
        ("id too long", f"UPDATE hospitals SET id = '{'x' * 65}' WHERE id = 'ruijin'"),
        ("unknown session", "UPDATE schedules SET session = 'night' WHERE id = 'sch-li-pm'"),
        (
            "release after the session starts",
            "UPDATE schedules SET release_at = starts_at + interval '1 minute'"
            " WHERE id = 'sch-li-pm'",
        ),
        ("end before start", "UPDATE slots SET ends_at = starts_at WHERE id = 'slot-0800'"),
        ("negative fee", "UPDATE schedules SET fee_fen = -1 WHERE id = 'sch-li-pm'"),
        ("unknown status", "UPDATE schedules SET status = 'closed' WHERE id = 'sch-li-pm'"),
        ("short blind index", "UPDATE patients SET blind_index = '\\x0102' WHERE id = 'pat-1'"),
        ("policy not an object", "UPDATE hospitals SET policy = '[]' WHERE id = 'ruijin'"),
        (
            "booking confirmed by the HIS without its number",
            "UPDATE bookings SET status = 'his_confirmed'",
        ),
        ("cancelled booking without a time", "UPDATE bookings SET status = 'cancelled'"),
        ("booked hold without a payment", "UPDATE holds SET payment_ref = ''"),
        ("ended hold without an end", "UPDATE holds SET state = 'expired'"),
        (
            "event seq zero",
            "INSERT INTO inventory_events (tag, seq, type, at, payload, stream_id)"
            " VALUES ('d:20270308', 0, 'hold_created', now(), '{}', '1-0')",
        ),
        (
            "malformed tag",
            "INSERT INTO inventory_events (tag, seq, type, at, payload, stream_id)"
            " VALUES ('d-20270308', 1, 'hold_created', now(), '{}', '1-0')",
        ),
        (
            "idempotency key with a space",
            "INSERT INTO idempotency_keys (account_id, key, operation, fingerprint)"
            " VALUES ('a', 'has space', 'POST /v1/x', 'f')",
        ),
    ],
)
async def test_check_constraints_refuse_bad_rows(
    pool: asyncpg.Pool, seeded: Seed, case: str, sql: str
) -> None:
    """Each listed row breaks a CHECK (or a domain's check) and is refused."""
    await expect_refused(pool, asyncpg.CheckViolationError, sql)


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("tag that the id does not name", {"tag": "dept-gastro:20270308"}),
        ("hold id of the wrong shape", {"id": "not-a-hold-id"}),
        ("channel with capitals", {"channel": "WeChat"}),
        ("negative amount", {"amount_fen": -1}),
    ],
)
async def test_hold_rows_are_checked(
    pool: asyncpg.Pool, seeded: Seed, case: str, changes: dict[str, Any]
) -> None:
    """A hold whose id, tag, channel or amount is wrong is refused."""
    await expect_refused(
        pool, asyncpg.CheckViolationError, INSERT_HOLD, *hold_row(seeded, **changes)
    )


async def test_hold_slot_must_belong_to_its_schedule(pool: asyncpg.Pool, seeded: Seed) -> None:
    """A hold naming a slot of another schedule breaks the (slot, schedule) foreign key."""
    await expect_refused(
        pool,
        asyncpg.ForeignKeyViolationError,
        INSERT_HOLD,
        *hold_row(seeded, schedule_id=seeded.afternoon),
    )


async def test_money_is_recorded_once(pool: asyncpg.Pool, seeded: Seed) -> None:
    """One provider transaction is one payment, and a payment is refunded at most once
    per part (0: what is left of it; n: the n-th reschedule's fee difference)."""
    async with rolled_back(pool) as connection:
        insert_payment = (
            "INSERT INTO payments (id, hold_id, account_id, provider, amount_fen, status,"
            " provider_txn_id, paid_at) VALUES ($1, $2, $3, 'wechat', 5000, 'paid', $4, now())"
        )
        await connection.execute(insert_payment, "pay-1", seeded.booking, seeded.account, "wx-42")
        with pytest.raises(asyncpg.UniqueViolationError, match="payments_provider_txn_key"):
            async with connection.transaction():
                await connection.execute(
                    insert_payment, "pay-2", seeded.booking, seeded.account, "wx-42"
                )
        insert_refund = (
            "INSERT INTO refunds (id, payment_id, hold_id, provider, amount_fen, reason, part)"
            " VALUES ($1, 'pay-1', $2, 'wechat', 2000, 'patient_cancelled', $3)"
        )
        await connection.execute(insert_refund, "ref-1", seeded.booking, 0)
        await connection.execute(insert_refund, "ref-2", seeded.booking, 1)
        for part in (0, 1):
            with pytest.raises(asyncpg.UniqueViolationError, match="refunds_payment_part_key"):
                async with connection.transaction():
                    await connection.execute(insert_refund, "ref-3", seeded.booking, part)
