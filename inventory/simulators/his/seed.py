"""The demo hospital the simulator starts with: six departments, twenty-four doctors and
fourteen days of morning and afternoon schedules from "today" (Asia/Shanghai), each
session cut into hour-long slots of a few places. Ids match ``inventory/devtools/demo.py``
(``cardiology``, ``cardiology-dr1``, ...) so the two demos line up."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from typing import Any

from inventory.simulators.his.state import (
    CHINA,
    NewSchedule,
    NewSlot,
    SimState,
    now_china,
    session_bounds,
)

HOSPITAL_ID = "demo-hospital"
HOSPITAL_NAME = "示范医院 Demo Hospital"
DEPARTMENTS = (
    ("cardiology", "心内科", ("冠心病", "高血压", "心律失常", "心力衰竭")),
    ("pediatrics", "儿科", ("小儿呼吸道感染", "儿童哮喘", "小儿消化", "儿童保健")),
    ("dermatology", "皮肤科", ("湿疹", "痤疮", "银屑病", "皮肤过敏")),
    ("orthopedics", "骨科", ("脊柱外科", "关节置换", "运动损伤", "骨质疏松")),
    ("ophthalmology", "眼科", ("白内障", "青光眼", "近视防控", "眼底病")),
    ("gastroenterology", "消化内科", ("胃食管反流", "炎症性肠病", "消化内镜", "肝病")),
)
#: By doctor number: dr1 is chief, dr4 a resident. Fees in fen by title.
TITLES = (
    ("chief-physician", 5000),
    ("associate-chief-physician", 3000),
    ("attending-physician", 2000),
    ("resident-physician", 1000),
)
DOCTORS_PER_DEPARTMENT = 4
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ("建国", "秀英", "志强", "丽娟", "海峰", "晓燕", "文博", "春梅", "立新", "雅琴", "明", "静")
SESSIONS = ("morning", "afternoon")
SLOTS_PER_SESSION = 4
#: 放号: a schedule is released this many days before the visit, at this time.
RELEASE_DAYS_BEFORE = 7
RELEASE_TIME = time(15, 0)
#: Patients may cancel until this time the day before the visit.
CANCEL_DEADLINE_TIME = time(16, 0)


def seed_demo(
    state: SimState,
    rng: random.Random,
    *,
    days: int = 14,
    today: date | None = None,
    hospital_id: str = HOSPITAL_ID,
    hospital_name: str = HOSPITAL_NAME,
    prefix: str = "",
) -> dict[str, Any]:
    """Create the demo hospital in an empty state; returns what was made. ``prefix``
    goes before every department, location and doctor id, so several hospitals seeded
    alike have ids of their own (``a-cardiology``, ``a-cardiology-dr1``)."""
    first = today or now_china().date()
    organizations: list[dict[str, Any]] = [
        {"id": hospital_id, "name": hospital_name, "part_of": None, "sort": 0}
    ]
    locations: list[dict[str, Any]] = []
    practitioners: list[dict[str, Any]] = []
    for order, (plain, name, skills) in enumerate(DEPARTMENTS, start=1):
        department = f"{prefix}{plain}"
        organizations.append(
            {"id": department, "name": name, "part_of": hospital_id, "sort": order}
        )
        location_id = f"loc-{department}"
        locations.append(
            {
                "id": location_id,
                "name": f"门诊楼 {order} 层 {name}诊区",
                "organization_id": department,
                "address": f"示范医院门诊楼 {order} 层",
            }
        )
        for n in range(DOCTORS_PER_DEPARTMENT):
            practitioners.append(
                {
                    "id": f"{department}-dr{n + 1}",
                    "family": rng.choice(SURNAMES),
                    "given": rng.choice(GIVEN),
                    "gender": rng.choice(("male", "female")),
                    "title_code": TITLES[n][0],
                    "specialty": "、".join(rng.sample(skills, 2)),
                    "department_id": department,
                    "location_id": location_id,
                }
            )
    state.add_catalogue(organizations, locations, practitioners, meta={"seeded": "demo"})
    schedules = [
        build_schedule(
            doctor=p,
            day=first + timedelta(days=offset),
            session=session,
            slots=SLOTS_PER_SESSION,
            capacities=[rng.randint(2, 6) for _ in range(SLOTS_PER_SESSION)],
            fee_fen=TITLES[int(p["id"].rsplit("dr", 1)[1]) - 1][1],
        )
        for offset in range(days)
        for p in practitioners
        for session in SESSIONS
        # Doctors are off some sessions (surgery days, teaching): about one in six.
        if rng.random() >= 1 / 6
    ]
    added = state.add_schedules(schedules)
    return {
        "hospital": hospital_id,
        "departments": len(DEPARTMENTS),
        "practitioners": len(practitioners),
        "schedules": added,
        "first_day": first.isoformat(),
        "last_day": (first + timedelta(days=days - 1)).isoformat(),
    }


def build_schedule(
    *,
    doctor: dict[str, Any],
    day: date,
    session: str,
    slots: int,
    capacities: list[int],
    fee_fen: int,
    release_at: datetime | None = None,
    schedule_id: str | None = None,
) -> NewSchedule:
    """One schedule of ``doctor`` (a practitioner row) cut into ``slots`` equal windows;
    its id is ``<doctor>-<yyyymmdd>-<session>`` unless ``schedule_id`` names it."""
    starts_at, ends_at = session_bounds(day, session)
    schedule_id = schedule_id or f"{doctor['id']}-{day:%Y%m%d}-{session}"
    step = (ends_at - starts_at) / slots
    release = release_at or datetime.combine(
        day - timedelta(days=RELEASE_DAYS_BEFORE), RELEASE_TIME, CHINA
    )
    return NewSchedule(
        schedule_id=schedule_id,
        practitioner_id=doctor["id"],
        location_id=doctor["location_id"],
        visit_date=day,
        session=session,
        starts_at=starts_at,
        ends_at=ends_at,
        release_at=release,
        cancel_deadline=datetime.combine(day - timedelta(days=1), CANCEL_DEADLINE_TIME, CHINA),
        fee_fen=fee_fen,
        slots=tuple(
            NewSlot(
                slot_id=f"{schedule_id}-{i + 1}",
                starts_at=starts_at + step * i,
                ends_at=starts_at + step * (i + 1),
                capacity=capacities[i],
            )
            for i in range(slots)
        ),
    )
