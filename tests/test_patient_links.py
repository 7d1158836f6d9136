"""The API's memory of account-patient links (PatientRegistry.belongs_to) against a real
Postgres: trusted for a while, spread over time, and asked again once it runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import pytest

from inventory.api.models import Gender, PatientCreate
from inventory.privacy.crypto import BlindIndex, FieldKeyring
from inventory.privacy.identity import make_resident_id
from inventory.record.patients import PatientRegistry
from inventory.record.pool import create_pool
from inventory.record.queries import QUERIES


def registry(pool: asyncpg.Pool, link_cache_s: float) -> PatientRegistry:
    return PatientRegistry(
        pool,
        FieldKeyring.generate(),
        BlindIndex.generate(),
        link_cache_s=link_cache_s,
    )


async def register(patients: PatientRegistry, account: str, n: int) -> str:
    birth = date(1990, 1, 1 + n % 28)
    view, _ = await patients.register(
        account,
        PatientCreate(
            name="张三",
            gender=Gender.MALE,
            birth_date=birth,
            phone=f"1380013{n:04d}",
            resident_id=make_resident_id(birth, "male", seq=n),
        ),
    )
    return str(view["patient_id"])


async def test_a_link_is_remembered_then_asked_again(pool: asyncpg.Pool) -> None:
    """Unlinked in Postgres: still trusted from memory, refused once memory runs out
    (at most 125 % of the configured lifetime)."""
    patients = registry(pool, link_cache_s=0.4)
    patient = await register(patients, "acct-a", 1)
    assert await patients.belongs_to(patient, "acct-a")
    assert not await patients.belongs_to(patient, "acct-b")
    async with pool.acquire() as connection:
        assert await connection.fetchrow(QUERIES["unlink_account_patient"], "acct-a", patient)
    assert await patients.belongs_to(patient, "acct-a")  # remembered
    await asyncio.sleep(0.55)
    assert not await patients.belongs_to(patient, "acct-a")


async def test_links_confirmed_together_run_out_at_different_times(pool: asyncpg.Pool) -> None:
    patients = registry(pool, link_cache_s=60.0)
    accounts = [(f"acct-{n}", await register(patients, f"acct-{n}", n)) for n in range(60)]
    before = time.monotonic()
    for account, patient in accounts:
        assert await patients.belongs_to(patient, account)
    lifetimes = [expiry - before for expiry in patients._links.values()]
    assert min(lifetimes) >= 0.75 * 60 - 1
    assert max(lifetimes) <= 1.25 * 60 + 1
    assert max(lifetimes) - min(lifetimes) > 15  # 60 uniform draws over 30 s


@pytest.fixture
async def redis_client(redis_server: Any) -> AsyncIterator[Any]:
    """A redis-py client on the session's Redis."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def test_links_are_copied_to_redis_and_answered_from_there(
    pool: asyncpg.Pool, redis_client: Any
) -> None:
    """Registration copies the link to the patient's tag in Redis; a registry that never
    saw the patient answers from that copy with Postgres unreachable; a link that is
    only in Postgres is copied the first time Postgres confirms it."""
    from inventory.devtools.servers import free_port
    from inventory.record.errors import DatabaseUnavailableError
    from inventory.store import keys

    keyring, index = FieldKeyring.generate(), BlindIndex.generate()
    writer = PatientRegistry(pool, keyring, index, redis=redis_client)
    patient = await register(writer, "acct-r1", 7)
    assert await redis_client.hkeys(keys.patient_accounts_key(patient)) == ["acct-r1"]

    nowhere = await create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        min_size=0,
        max_size=1,
        init_size=0,
        connect_timeout_s=1,
    )
    try:
        fresh = PatientRegistry(nowhere, keyring, index, redis=redis_client)
        assert await fresh.belongs_to(patient, "acct-r1")
        with pytest.raises(DatabaseUnavailableError):  # not in Redis: Postgres must say
            await fresh.belongs_to(patient, "acct-other")
    finally:
        await nowhere.close()

    await redis_client.delete(keys.patient_accounts_key(patient))  # a copy lost with Redis
    repairing = PatientRegistry(pool, keyring, index, redis=redis_client)
    assert await repairing.belongs_to(patient, "acct-r1")
    assert await redis_client.hexists(keys.patient_accounts_key(patient), "acct-r1")


async def test_rebuild_copies_links_and_slot_locations(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """`inventory rebuild --lookups` (copy_lookups) copies every link and every slot's
    location that Postgres has to Redis, in pages, so that links made before the copies
    existed (or lost with Redis's data) serve reserves while Postgres is down."""
    from redis.asyncio import Redis

    from inventory.devtools.servers import start_redis
    from inventory.recovery.rebuild import copy_lookups
    from inventory.store import keys
    from inventory.store.slot_store import SlotStore
    from tests.db.seed import VISIT, seed_all

    seed = await seed_all(pool)
    with start_redis(tmp_path / "redis") as server:  # fixed seed ids: a Redis of its own
        client = Redis.from_url(server.url, decode_responses=True)
        try:
            store = await SlotStore.connect_scripts(client)
            async with pool.acquire() as connection:
                expected = await connection.fetchval("SELECT count(*) FROM account_patients")
                slots = await connection.fetchval("SELECT count(*) FROM slots")
            assert await copy_lookups(store, pool, page=2) == (expected, slots)
            assert await client.hexists(keys.patient_accounts_key(seed.patient), seed.account)
            location = await store.slot_location(seed.slot_early)
            assert location is not None
            assert (location.department_id, location.visit_date) == (seed.cardio, VISIT)
            assert location.hospital_id == seed.hospital
        finally:
            await client.aclose()
