"""Realistic rows for the Postgres tests, written through the named queries.

One hospital with a two-level department tree, doctors with titles and specialties, a
department-day with two schedules (one with three slots), a second visit date, a second
hospital, two accounts sharing one patient, and a confirmed booking.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import asyncpg

from inventory.record.queries import bind
from inventory.store import keys

CHINA = timezone(timedelta(hours=8))
VISIT = date(2027, 3, 8)
NEXT_DAY = date(2027, 3, 9)
POLICY: dict[str, Any] = {
    "hold_ttl_s": 900,
    "max_hold_s": 1800,
    "extend_s": 600,
    "one_per_day": True,
    "max_open_per_patient": 3,
    "blacklist": True,
    "rerelease_min_s": 60,
    "rerelease_max_s": 300,
    "token_window_s": 10,
    "cancel_deadline": "previous_day_16:00",
    "booking_window_days": 7,
    "daily_release_time": "15:00",
}


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A wall-clock instant in China on ``day``."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHINA)


def blind_index(resident_id: str) -> bytes:
    """A stand-in for the keyed HMAC the API computes (32 bytes, like HMAC-SHA256)."""
    return hashlib.sha256(b"test-blind-key\x00" + resident_id.encode()).digest()


async def run(connection: asyncpg.Connection, query: str, /, **values: Any) -> list[asyncpg.Record]:
    """Execute a named query with arguments by name; its rows."""
    rows: list[asyncpg.Record] = await connection.fetch(*bind(query, **values))
    return rows


async def one(
    connection: asyncpg.Connection, query: str, /, **values: Any
) -> asyncpg.Record | None:
    """Execute a named query; its first row or None."""
    row: asyncpg.Record | None = await connection.fetchrow(*bind(query, **values))
    return row


@dataclass(frozen=True)
class Seed:
    """Ids of the seeded rows."""

    hospital: str = "pumch"
    other_hospital: str = "ruijin"
    internal: str = "dept-internal"
    gastro: str = "dept-gastro"
    cardio: str = "dept-cardio"
    surgery: str = "dept-surgery"
    ortho: str = "dept-ortho"
    other_department: str = "dept-rj-er"
    doctor_zhang: str = "doc-zhang"
    doctor_li: str = "doc-li"
    doctor_other: str = "doc-rj-wang"
    morning: str = "sch-zhang-am"
    afternoon: str = "sch-li-pm"
    next_day: str = "sch-zhang-am-next"
    other_schedule: str = "sch-rj-er"
    slot_early: str = "slot-0800"
    slot_mid: str = "slot-0830"
    slot_late: str = "slot-0900"
    other_slot: str = "slot-rj-1"
    patient: str = "pat-1"
    resident_id: str = "11010519491231002X"
    account: str = "acct-parent-a"
    #: The account's login (a WeChat session with one refresh token).
    login_session: str = "sess-parent-a"
    refresh_hash: bytes = b"\x01" * 32
    other_account: str = "acct-parent-b"
    booking: str = keys.hold_id_for("acct-parent-a", "idem-1", f"dept-cardio:{VISIT:%Y%m%d}")

    @property
    def tag(self) -> str:
        """The department-day tag of the seeded schedules."""
        return keys.department_day_tag(self.cardio, VISIT)


def hold_values(seed: Seed, hold_id: str, **changes: Any) -> dict[str, Any]:
    """upsert_hold arguments for a fresh hold on the early slot; ``changes`` override."""
    values: dict[str, Any] = {
        "hold_id": hold_id,
        "tag": keys.tag_of_hold(hold_id),
        "slot_id": seed.slot_early,
        "schedule_id": seed.morning,
        "account_id": seed.account,
        "patient_id": seed.patient,
        "channel": "wechat",
        "amount_fen": 5000,
        "state": "held",
        "deadline": at(date(2027, 3, 1), 9, 15),
        "extended": False,
        "payment_ref": "",
        "created_at": at(date(2027, 3, 1), 9, 0),
        "confirmed_at": None,
        "ended_at": None,
        "end_reason": "",
        "last_seq": 1,
    }
    values.update(changes)
    return values


def booked(seed: Seed, hold_id: str, confirmed_at: datetime, **changes: Any) -> dict[str, Any]:
    """upsert_hold arguments for a booked hold, as a store reply gives it (seq 0)."""
    return hold_values(
        seed,
        hold_id,
        state="booked",
        payment_ref=f"wx-{hold_id[-8:]}",
        confirmed_at=confirmed_at,
        last_seq=0,
        **changes,
    )


async def seed_catalogue(connection: asyncpg.Connection, seed: Seed) -> None:
    """The hospitals, departments, doctors, schedules and slots."""
    await run(
        connection,
        "upsert_hospital",
        hospital_id=seed.hospital,
        name="北京协和医院",
        timezone="Asia/Shanghai",
        policy=POLICY,
    )
    await run(
        connection,
        "upsert_hospital",
        hospital_id=seed.other_hospital,
        name="上海瑞金医院",
        timezone="Asia/Shanghai",
        policy={},
    )
    departments = [
        # Children before their parent: the parent key is checked at commit.
        (seed.cardio, seed.hospital, seed.internal, "心内科", 2),
        (seed.gastro, seed.hospital, seed.internal, "消化内科", 1),
        (seed.internal, seed.hospital, None, "内科", 1),
        (seed.surgery, seed.hospital, None, "外科", 2),
        (seed.ortho, seed.hospital, seed.surgery, "骨科", 1),
        (seed.other_department, seed.other_hospital, None, "急诊科", 1),
    ]
    for department_id, hospital_id, parent_id, name, sort_order in departments:
        await run(
            connection,
            "upsert_department",
            department_id=department_id,
            hospital_id=hospital_id,
            parent_id=parent_id,
            name=name,
            sort_order=sort_order,
        )
    doctors = [
        (seed.doctor_zhang, seed.hospital, seed.cardio, "张三", "主任医师", "冠心病介入治疗"),
        (seed.doctor_li, seed.hospital, seed.cardio, "李四", "副主任医师", "高血压、心律失常"),
        (seed.doctor_other, seed.other_hospital, seed.other_department, "王五", "主治医师", ""),
    ]
    for doctor_id, hospital_id, department_id, name, title, specialty in doctors:
        await run(
            connection,
            "upsert_doctor",
            doctor_id=doctor_id,
            hospital_id=hospital_id,
            department_id=department_id,
            name=name,
            title=title,
            specialty=specialty,
        )
    schedules = [
        (seed.morning, seed.hospital, seed.cardio, seed.doctor_zhang, VISIT, "morning", 8, 12),
        (seed.afternoon, seed.hospital, seed.cardio, seed.doctor_li, VISIT, "afternoon", 13, 17),
        (seed.next_day, seed.hospital, seed.cardio, seed.doctor_zhang, NEXT_DAY, "morning", 8, 12),
        (
            seed.other_schedule,
            seed.other_hospital,
            seed.other_department,
            seed.doctor_other,
            VISIT,
            "morning",
            8,
            12,
        ),
    ]
    for schedule_id, hospital_id, department_id, doctor_id, day, session, start, end in schedules:
        await run(
            connection,
            "upsert_schedule",
            schedule_id=schedule_id,
            hospital_id=hospital_id,
            department_id=department_id,
            doctor_id=doctor_id,
            visit_date=day,
            session=session,
            starts_at=at(day, start),
            ends_at=at(day, end),
            release_at=at(day - timedelta(days=7), 15),
            cancel_deadline=at(day - timedelta(days=1), 16),
            fee_fen=5000,
            location="门诊楼3层 心内科诊区",
            status="open",
        )
    slots = [
        (seed.slot_mid, seed.morning, 8, 30, 2),
        (seed.slot_early, seed.morning, 8, 0, 3),
        (seed.slot_late, seed.morning, 9, 0, 0),
        (seed.other_slot, seed.other_schedule, 8, 0, 5),
    ]
    for slot_id, schedule_id, hour, minute, capacity in slots:
        starts_at = at(VISIT, hour, minute)
        await run(
            connection,
            "upsert_slot",
            slot_id=slot_id,
            schedule_id=schedule_id,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=30),
            capacity=capacity,
        )


async def seed_people(connection: asyncpg.Connection, seed: Seed) -> None:
    """One patient linked to two accounts, and one confirmed booking."""
    await run(
        connection,
        "insert_patient",
        patient_id=seed.patient,
        account_id=seed.account,
        blind_index=blind_index(seed.resident_id),
        key_id="k2027-01",
        name_enc=b"\x01ciphertext-of-name",
        phone_enc=b"\x01ciphertext-of-phone",
        resident_id_enc=b"\x01ciphertext-of-id",
        gender="female",
        birth_date=date(1949, 12, 31),
    )
    await run(
        connection,
        "link_account_patient",
        account_id=seed.account,
        patient_id=seed.patient,
        relation="child",
    )
    await run(
        connection,
        "link_account_patient",
        account_id=seed.other_account,
        patient_id=seed.patient,
        relation="child",
    )
    await run(
        connection,
        "upsert_wechat_account",
        account_id=seed.account,
        openid="o-seed-parent-a",
        unionid=None,
    )
    await run(
        connection,
        "insert_login_session",
        session_id=seed.login_session,
        account_id=seed.account,
        method="wechat",
        max_s=86400.0,
    )
    await run(
        connection,
        "insert_refresh_token",
        token_hash=seed.refresh_hash,
        session_id=seed.login_session,
        ttl_s=3600.0,
    )
    await run(connection, "upsert_hold", **booked(seed, seed.booking, at(date(2027, 3, 1), 9, 5)))
    await run(connection, "insert_booking", hold_id=seed.booking)


async def seed_all(pool: asyncpg.Pool) -> Seed:
    """Write the whole seed in one transaction; its ids."""
    seed = Seed()
    async with pool.acquire() as connection, connection.transaction():
        await seed_catalogue(connection, seed)
        await seed_people(connection, seed)
    return seed
