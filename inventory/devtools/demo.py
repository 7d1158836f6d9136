"""A demo hospital for `inventory dev` (until the HIS simulator feeds the catalogue):
five departments, twenty doctors, a week of morning and afternoon schedules with
half-hour slots, released now."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

CHINA = ZoneInfo("Asia/Shanghai")
DEPARTMENTS = (
    ("cardiology", "心内科 Cardiology"),
    ("pediatrics", "儿科 Pediatrics"),
    ("dermatology", "皮肤科 Dermatology"),
    ("orthopedics", "骨科 Orthopedics"),
    ("ophthalmology", "眼科 Ophthalmology"),
)
TITLES = ("主任医师", "副主任医师", "主治医师", "住院医师")
SESSIONS = (("morning", time(8, 0)), ("afternoon", time(13, 30)))


async def seed_demo(catalogue: PgCatalogue, pool: Any, *, days: int = 7) -> dict[str, Any]:
    """Create (or refresh) the demo hospital; returns its ids for the start-up banner."""
    hospital = "demo-hospital"
    async with acquire(pool, timeout_s=10.0) as connection:
        await connection.execute(
            QUERIES["upsert_hospital"], hospital, "示范医院 Demo Hospital", "Asia/Shanghai", {}
        )
        for order, (department, name) in enumerate(DEPARTMENTS):
            await connection.execute(
                QUERIES["upsert_department"], department, hospital, None, name, order
            )
            for n in range(4):
                await connection.execute(
                    QUERIES["upsert_doctor"],
                    f"{department}-dr{n + 1}",
                    hospital,
                    department,
                    f"Dr {department.title()} {n + 1}",
                    TITLES[n],
                    f"{name.split()[-1].lower()} clinic",
                )
    await catalogue.load_policies()
    today = datetime.now(tz=CHINA).date()
    released = datetime.now(tz=UTC) - timedelta(minutes=1)
    count = 0
    for offset in range(1, days + 1):
        day = today + timedelta(days=offset)
        for department, _ in DEPARTMENTS:
            for n in range(4):
                for session, start_time in SESSIONS:
                    await catalogue.put_schedule(
                        _schedule(
                            hospital,
                            department,
                            f"{department}-dr{n + 1}",
                            day,
                            session,
                            start_time,
                            released,
                            fee_fen=(n + 1) * 1000,
                        ),
                        _slots(department, n, day, session, start_time),
                    )
                    count += 1
    return {"hospital_id": hospital, "schedules": count, "first_day": today + timedelta(days=1)}


def _schedule(
    hospital: str,
    department: str,
    doctor: str,
    day: date,
    session: str,
    start_time: time,
    released: datetime,
    *,
    fee_fen: int,
) -> dict[str, Any]:
    starts_at = datetime.combine(day, start_time, CHINA)
    return {
        "schedule_id": f"{doctor}-{day:%Y%m%d}-{session}",
        "hospital_id": hospital,
        "department_id": department,
        "doctor_id": doctor,
        "visit_date": day,
        "session": session,
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=3, minutes=30),
        "release_at": min(released, starts_at),
        "cancel_deadline": datetime.combine(day - timedelta(days=1), time(16, 0), CHINA),
        "fee_fen": fee_fen,
        "location": f"Outpatient building, {department} clinic",
    }


def _slots(
    department: str, n: int, day: date, session: str, start_time: time
) -> list[dict[str, Any]]:
    starts_at = datetime.combine(day, start_time, CHINA)
    return [
        {
            "slot_id": f"{department}-dr{n + 1}-{day:%Y%m%d}-{session}-{i}",
            "starts_at": starts_at + timedelta(minutes=30 * i),
            "ends_at": starts_at + timedelta(minutes=30 * (i + 1)),
            "capacity": 5 if n == 0 else 10,
        }
        for i in range(7)
    ]
