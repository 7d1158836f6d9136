"""Building catalogue data through the operator API, for the HTTP tests."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp

from inventory.privacy.identity import make_resident_id

from .conftest import ApiServer


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Catalogue:
    """One hospital, department and doctor made through the operator routes."""

    def __init__(self, api: ApiServer, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.http = http
        self.op = api.headers("ops", operator=True)
        self.hospital_id = uid("h")
        self.department_id = uid("d")
        self.doctor_id = uid("doc")

    async def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.put(self.api.url + path, json=body, headers=self.op) as answer:
            data: dict[str, Any] = await answer.json(content_type=None)
            assert answer.status in (200, 201), (answer.status, data)
            return data

    async def create(self, *, policy: dict[str, Any] | None = None) -> Catalogue:
        await self.put(
            f"/v1/operator/hospitals/{self.hospital_id}",
            {"name": "Demo Hospital", "policy": policy or {}},
        )
        await self.put(
            f"/v1/operator/departments/{self.department_id}",
            {"hospital_id": self.hospital_id, "name": "Cardiology"},
        )
        await self.put(
            f"/v1/operator/doctors/{self.doctor_id}",
            {
                "hospital_id": self.hospital_id,
                "department_id": self.department_id,
                "name": "Dr Li",
                "title": "主任医师",
                "specialty": "arrhythmia",
            },
        )
        return self

    async def schedule(
        self,
        capacities: list[int],
        *,
        visit_date: date | None = None,
        released: bool = True,
        session: str = "morning",
        fee_fen: int = 5000,
        cancel_deadline: datetime | None = None,
    ) -> tuple[str, list[str], date]:
        day = visit_date or (datetime.now(tz=UTC) + timedelta(days=3)).date()
        start = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
        if session == "afternoon":
            start += timedelta(hours=5)
        release = datetime.now(tz=UTC) - timedelta(hours=1)
        if not released:
            release = datetime.now(tz=UTC) + timedelta(hours=2)
        schedule_id = uid("s")
        slots = [
            {
                "slot_id": uid("sl"),
                "starts_at": (start + timedelta(minutes=30 * i)).isoformat(),
                "ends_at": (start + timedelta(minutes=30 * (i + 1))).isoformat(),
                "capacity": cap,
            }
            for i, cap in enumerate(capacities)
        ]
        await self.put(
            f"/v1/operator/schedules/{schedule_id}",
            {
                "hospital_id": self.hospital_id,
                "department_id": self.department_id,
                "doctor_id": self.doctor_id,
                "visit_date": day.isoformat(),
                "session": session,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=4)).isoformat(),
                "release_at": release.isoformat(),
                "cancel_deadline": (cancel_deadline or start - timedelta(hours=12)).isoformat(),
                "fee_fen": fee_fen,
                "location": "Building 2, Room 301",
                "slots": slots,
            },
        )
        return schedule_id, [s["slot_id"] for s in slots], day


_seq = [0]


def patient_body(**overrides: Any) -> dict[str, Any]:
    """A valid patient (a fresh ID number each call)."""
    _seq[0] += 1
    born = date(1980, 1, 1) + timedelta(days=uuid.uuid4().int % 9000)
    body = {
        "name": "张三",
        "gender": "male",
        "birth_date": born.isoformat(),
        "phone": "13812345678",
        "resident_id": make_resident_id(born, "male", seq=uuid.uuid4().int % 500),
        "relation": "self",
    }
    body.update(overrides)
    return body


async def register_patient(
    api: ApiServer, http: aiohttp.ClientSession, account: str, **overrides: Any
) -> str:
    async with http.post(
        api.url + "/v1/patients", json=patient_body(**overrides), headers=api.headers(account)
    ) as answer:
        data = await answer.json()
        assert answer.status == 201, data
        return str(data["patient_id"])
