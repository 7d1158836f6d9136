"""The data of a run: a freshly migrated database, the hospital's catalogue (Postgres and
Redis), patients and their tokens, the API's environment; and their removal after."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from bench.http.config import BENCH_CAPACITY, HttpBenchConfig
from bench.http.plan import Plan

_CHINA = ZoneInfo("Asia/Shanghai")


def _key() -> str:
    import base64

    return base64.b64encode(secrets.token_bytes(32)).decode()


def api_environment(
    redis_url: str, database_url: str, port: int, *, connections: int, verified_gate: bool
) -> dict[str, str]:
    """The API's environment: this process's, with the benchmark's keys, servers and
    rate limits far above the load (still checked on every reserve)."""
    env = dict(os.environ)
    env.update(
        {
            "INVENTORY_REDIS_URL": redis_url,
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_HOST": "127.0.0.1",
            "INVENTORY_PORT": str(port),
            "INVENTORY_JWT_KEYS": f"k1:{_key()}",
            "INVENTORY_JWT_CURRENT_KEY": "k1",
            "INVENTORY_FIELD_KEYS": f"f1:{_key()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{_key()}",
            "INVENTORY_RESERVE_RATE_PER_ACCOUNT": "1000000/1",
            "INVENTORY_RESERVE_RATE_PER_IP": "1000000/1",
            "INVENTORY_MAX_IN_FLIGHT": str(max(512, 2 * connections)),
            "INVENTORY_REQUIRE_VERIFIED_STORE": "true" if verified_gate else "false",
        }
    )
    return env


@dataclass
class Seeded:
    plan: Plan
    tags: list[str]


async def seed(
    settings: Any, redis_url: str, database_url: str, config: HttpBenchConfig, *, verify: bool
) -> Seeded:
    """Catalogue (Postgres + Redis), patients, tokens; the fence's comparison if asked."""
    from redis.asyncio import Redis

    from inventory.api.auth import mint_token
    from inventory.api.models import PatientCreate
    from inventory.privacy.identity import make_resident_id
    from inventory.record.catalogue import PgCatalogue
    from inventory.record.patients import PatientRegistry
    from inventory.record.pool import acquire, create_pool
    from inventory.record.queries import QUERIES
    from inventory.recovery.fence import verify_store
    from inventory.store import keys
    from inventory.store.slot_store import SlotStore

    client = Redis.from_url(redis_url, decode_responses=True)
    pool = await create_pool(database_url, min_size=1, max_size=16)
    try:
        store = await SlotStore.connect_scripts(client)
        catalogue = PgCatalogue(pool, store)
        hospital = "bench-hospital"
        departments = [f"bench-d{n:02d}" for n in range(config.departments)]
        async with acquire(pool, timeout_s=10.0) as connection:
            await connection.execute(
                QUERIES["upsert_hospital"], hospital, "Bench Hospital", "Asia/Shanghai", {}
            )
            for order, department in enumerate(departments):
                await connection.execute(
                    QUERIES["upsert_department"], department, hospital, None, department, order
                )
                await connection.execute(
                    QUERIES["upsert_doctor"],
                    f"{department}-dr",
                    hospital,
                    department,
                    f"Dr {department}",
                    "主任医师",
                    "general",
                )
        await catalogue.load_policies()
        today = datetime.now(tz=_CHINA).date()
        released = datetime.now(tz=UTC) - timedelta(hours=1)
        slots: list[list[str]] = []
        tags: list[str] = []
        for offset in range(1, config.days + 1):
            day = today + timedelta(days=offset)
            for department in departments:
                day_slots: list[str] = []
                for session, start in (("am", clock_time(8, 0)), ("pm", clock_time(13, 30))):
                    schedule, schedule_slots = _schedule(
                        hospital, department, day, session, start, released, config
                    )
                    await catalogue.put_schedule(schedule, schedule_slots)
                    day_slots += [s["slot_id"] for s in schedule_slots]
                slots.append(day_slots)
                tags.append(keys.department_day_tag(department, day))
        registry = PatientRegistry(pool, settings.keyring(), settings.blind_index())
        limit = asyncio.Semaphore(16)

        async def register(n: int) -> tuple[str, str]:
            account = f"bench-a{n}"
            born = date(1960, 1, 1) + timedelta(days=n // 500)
            body = PatientCreate.model_validate(
                {
                    "name": "测试患者",
                    "gender": "male",
                    "birth_date": born,
                    "phone": f"138{n % 10**8:08d}",
                    "resident_id": make_resident_id(born, "male", seq=n % 500),
                }
            )
            async with limit:
                view, _ = await registry.register(account, body)
            token = mint_token(settings, account, ttl_s=24 * 3600)
            return token, str(view["patient_id"])

        accounts = await asyncio.gather(*(register(n) for n in range(config.patients)))
        if verify:
            await verify_store(store, pool)
        return Seeded(Plan(list(accounts), slots, f"b{secrets.token_hex(4)}"), tags)
    finally:
        await pool.close()
        await client.aclose()


def _schedule(
    hospital: str,
    department: str,
    day: date,
    session: str,
    start: clock_time,
    released: datetime,
    config: HttpBenchConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    starts_at = datetime.combine(day, start, _CHINA)
    schedule = {
        "schedule_id": f"{department}-{day:%Y%m%d}-{session}",
        "hospital_id": hospital,
        "department_id": department,
        "doctor_id": f"{department}-dr",
        "visit_date": day,
        "session": "morning" if session == "am" else "afternoon",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=4),
        "release_at": released,
        "cancel_deadline": datetime.combine(day - timedelta(days=1), clock_time(16, 0), _CHINA),
        "fee_fen": 5000,
        "location": "Outpatient building",
    }
    slots = [
        {
            "slot_id": f"{department}-{day:%Y%m%d}-{session}-{i}",
            "starts_at": starts_at + timedelta(minutes=30 * i),
            "ends_at": starts_at + timedelta(minutes=30 * (i + 1)),
            "capacity": BENCH_CAPACITY,
        }
        for i in range(config.slots_per_schedule)
    ]
    return schedule, slots


async def create_database(server_url: str) -> str:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    from inventory.record.migrate import migrate_database

    name = f"bench_http_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    await migrate_database(url)
    return url


async def drop_database(server_url: str, database_url: str) -> None:
    import asyncpg

    name = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def delete_tags(redis_url: str, tags: Sequence[str]) -> None:
    from redis.asyncio import Redis

    from inventory.store import keys

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        for tag in tags:
            await client.delete(*keys.tag_keys(tag).as_list())
            await client.srem(keys.TAG_REGISTRY_KEY, tag)
    finally:
        await client.aclose()
