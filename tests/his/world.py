"""A world for the HIS flow tests: the module's simulator process (tests/his/conftest.py),
a private Redis (the demo hospital's ids name the Redis keys, so each module needs its
own), a fresh migrated database, and the sync, submitter and reconciler over them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer, start_redis
from inventory.domain import ReserveRequest, SlotCounts
from inventory.his.client import FhirHisClient
from inventory.his.reconcile import ReconcileConfig, ReconcilePolicy, Reconciler
from inventory.his.submitter import PatientLookup, Submitter, SubmitterConfig
from inventory.his.sync import ScheduleSync, SyncConfig
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import create_pool
from inventory.record.queries import QUERIES, bind
from inventory.simulators.his.process import SimProcess
from inventory.store.slot_store import SlotStore
from tests.databases import Databases
from tests.his.conftest import CHINA, SimAdmin, client_config

#: Submitter settings for tests: short retries and leases.
FAST_SUBMITTER = SubmitterConfig(
    batch_size=200,
    poll_interval_s=0.05,
    lease_s=5.0,
    retry_initial_s=0.05,
    retry_max_s=0.2,
    circuit_retry_s=0.1,
    unreleased_after_s=0.0,
)

try:
    import inventory.payments.refunds  # noqa: F401

    PAYMENTS = True
except ModuleNotFoundError:  # the payments package is not installed here
    PAYMENTS = False


@dataclass
class World:
    """Everything a HIS flow test touches."""

    sim: SimProcess
    admin: SimAdmin
    his: FhirHisClient
    redis: RedisServer
    database_url: str
    pool: asyncpg.Pool
    client: Redis
    store: SlotStore
    catalogue: PgCatalogue
    bookings: PgBookings
    sync: ScheduleSync
    reconciler: Reconciler
    submitter: Submitter
    used_slots: set[str] = field(default_factory=set)

    def submitter_with(
        self, *, patients: PatientLookup | None = None, his: FhirHisClient | None = None
    ) -> Submitter:
        """Another submitter over the same database and store."""
        return Submitter(
            his or self.his, self.pool, self.store, config=FAST_SUBMITTER, patients=patients
        )

    # -- catalogue and slots ----------------------------------------------------------

    async def fresh_slot(self, *, min_free: int = 1, day: date | None = None) -> Any:
        """A slot of an open schedule on ``day`` (tomorrow) that no other test of the
        module touched, with ``min_free`` units free in the HIS and here."""
        visit = day or tomorrow()
        for schedule in await self.his.list_schedules(visit, visit):
            if not schedule.active:
                continue
            for slot in schedule.slots:
                if slot.slot_id in self.used_slots or slot.free < min_free:
                    continue
                counts = await self.counts(slot.slot_id)
                if counts is None or counts.remaining < min_free:
                    continue
                self.used_slots.add(slot.slot_id)
                return slot
        raise AssertionError("the demo hospital ran out of fresh slots")

    async def fresh_schedule(self, *, day: date | None = None) -> Any:
        """An open HIS schedule on ``day`` (tomorrow) none of whose slots was used."""
        visit = day or tomorrow()
        for schedule in await self.his.list_schedules(visit, visit):
            ids = {s.slot_id for s in schedule.slots}
            fresh = not ids & self.used_slots and all(s.free for s in schedule.slots)
            if schedule.active and fresh:
                self.used_slots |= ids
                return schedule
        raise AssertionError("the demo hospital ran out of fresh schedules")

    async def location(self, slot_id: str) -> Any:
        """Where a slot lives here (hospital, department, visit date, schedule)."""
        found = await self.catalogue.slot_location(slot_id)
        assert found is not None, slot_id
        return found

    async def counts(self, slot_id: str) -> SlotCounts | None:
        """The slot's counts in Redis (None when Redis does not know it)."""
        location = await self.catalogue.slot_location(slot_id)
        if location is None:
            return None
        tag = f"{location.department_id}:{location.visit_date:%Y%m%d}"
        return (await self.store.slot_counts(tag, [slot_id])).get(slot_id)

    # -- people, holds, bookings, money -----------------------------------------------

    async def new_patients(self, n: int) -> list[str]:
        """``n`` patients (ciphertexts are placeholders: these tests never decrypt)."""
        ids = [f"p{uuid.uuid4().hex[:16]}" for _ in range(n)]
        async with self.pool.acquire() as connection:
            await connection.executemany(
                "INSERT INTO patients (id, account_id, blind_index, key_id, name_enc,"
                " phone_enc, resident_id_enc, gender, birth_date) VALUES ($1, 'acct', $2,"
                " 'k', '\\x00', '\\x00', '\\x00', 'female', '1990-01-01')",
                [(i, uuid.uuid4().bytes + uuid.uuid4().bytes) for i in ids],
            )
        return ids

    async def hold(self, slot_id: str, patient_id: str | None = None) -> str:
        """Reserve one unit (a hold, unpaid); its id."""
        patient = patient_id or (await self.new_patients(1))[0]
        location = await self.location(slot_id)
        request = ReserveRequest(
            location.hospital_id,
            location.department_id,
            location.visit_date,
            slot_id,
            "acct",
            patient,
            "wechat",
            uuid.uuid4().hex,
        )
        return (await self.store.reserve(request)).hold.hold_id

    async def book(self, slot_id: str, *, pay: bool = False) -> str:
        """Reserve, confirm and record one booking, as the API's confirm does; with
        ``pay`` also the paid payment behind it (when the payments package is here)."""
        hold_id = await self.hold(slot_id)
        booked = await self.store.confirm(hold_id, account_id="", payment_ref=f"wx-{hold_id[-8:]}")
        await self.bookings.record(booked.hold)
        if pay and PAYMENTS:
            await self.pay(hold_id, booked.hold.amount_fen or 1000)
        return hold_id

    async def book_many(self, slot_ids: Sequence[str]) -> list[str]:
        """One booking per slot id given (repeat an id for several), in bulk."""
        patients = await self.new_patients(len(slot_ids))
        locations = {s: await self.location(s) for s in set(slot_ids)}
        limit = asyncio.Semaphore(64)

        async def one(slot_id: str, patient: str) -> str:
            location = locations[slot_id]
            request = ReserveRequest(
                location.hospital_id,
                location.department_id,
                location.visit_date,
                slot_id,
                "acct",
                patient,
                "wechat",
                uuid.uuid4().hex,
            )
            async with limit:
                held = await self.store.reserve(request)
                booked = await self.store.confirm(
                    held.hold.hold_id, account_id="", payment_ref="wx-bulk"
                )
                await self.bookings.record(booked.hold)
            return held.hold.hold_id

        return list(await asyncio.gather(*map(one, slot_ids, patients)))

    async def pay(self, booking_id: str, amount_fen: int) -> None:
        """A paid payment for the booking, through the payments package's queries."""
        payment_id = f"pay-{uuid.uuid4().hex[:16]}"
        now = datetime.now(tz=UTC)
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                *bind(
                    "insert_payment",
                    payment_id=payment_id,
                    hold_id=booking_id,
                    account_id="acct",
                    provider="wechat",
                    amount_fen=amount_fen,
                    currency="CNY",
                    method="jsapi",
                    slot_id=None,
                    patient_id=None,
                    channel="wechat",
                    hold_deadline=now + timedelta(minutes=10),
                    next_check_at=now + timedelta(minutes=10),
                    sub_mchid=None,
                )
            )
            await connection.execute(
                *bind(
                    "settle_payment",
                    payment_id=payment_id,
                    provider_txn_id=f"txn-{payment_id}",
                    paid_at=now,
                    booking_id=booking_id,
                )
            )

    async def booking(self, booking_id: str) -> dict[str, Any]:
        """The booking's row (get_booking), with the submitter's columns."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(QUERIES["get_booking"], booking_id)
            extra = await connection.fetchrow(
                "SELECT his_appointment_id, his_attempts, his_last_error, his_cancelled_at"
                " FROM bookings WHERE id = $1",
                booking_id,
            )
        assert row is not None, booking_id
        assert extra is not None, booking_id
        return {**dict(row), **dict(extra)}

    async def refunds(self, booking_id: str) -> list[asyncpg.Record]:
        """The refund rows requested for a booking."""
        async with self.pool.acquire() as connection:
            return list(
                await connection.fetch(
                    "SELECT id, reason, status, amount_fen FROM refunds WHERE hold_id = $1",
                    booking_id,
                )
            )

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A raw read for assertions."""
        async with self.pool.acquire() as connection:
            return list(await connection.fetch(sql, *args))


def tomorrow() -> date:
    """Tomorrow in the hospital's time zone."""
    return datetime.now(tz=CHINA).date() + timedelta(days=1)


@contextlib.asynccontextmanager
async def open_world(
    sim: SimProcess,
    admin: SimAdmin,
    databases: Databases,
    directory: Path,
    *,
    policy: ReconcilePolicy | None = None,
) -> AsyncIterator[World]:
    """Build a world and take it down again."""
    redis_server = start_redis(directory / "redis")
    database_url = await databases.create(prefix="his")
    pool = await create_pool(database_url, min_size=1, max_size=8)
    client = Redis.from_url(redis_server.url, decode_responses=True)
    his = FhirHisClient(client_config(sim, page_size=500, breaker_cooldown_s=0.3))
    try:
        store = await SlotStore.connect_scripts(client)
        catalogue = PgCatalogue(pool, store)
        sync = ScheduleSync(his, pool, store, catalogue, config=SyncConfig(window_days=14))
        reconciler = Reconciler(
            his, pool, store, sync, policy=policy, config=ReconcileConfig(grace_s=60.0)
        )
        submitter = Submitter(his, pool, store, config=FAST_SUBMITTER)
        yield World(
            sim=sim,
            admin=admin,
            his=his,
            redis=redis_server,
            database_url=database_url,
            pool=pool,
            client=client,
            store=store,
            catalogue=catalogue,
            bookings=PgBookings(pool),
            sync=sync,
            reconciler=reconciler,
            submitter=submitter,
        )
    finally:
        await his.close()
        await pool.close()
        await client.aclose()
        redis_server.close()


async def today_schedule(world: World, capacities: list[int]) -> tuple[str, list[str]]:
    """A schedule of our own today (hospital time) on a demo department, its session
    starting in half an hour: (schedule id, slot ids)."""
    template = await world.fresh_schedule()
    [row] = await world.fetch("SELECT * FROM schedules WHERE id = $1", template.schedule_id)
    now = datetime.now(tz=UTC)
    starts = now + timedelta(minutes=30)
    schedule_id = f"today-{uuid.uuid4().hex[:8]}"
    values = {
        "schedule_id": schedule_id,
        "hospital_id": row["hospital_id"],
        "department_id": row["department_id"],
        "doctor_id": row["doctor_id"],
        "visit_date": now.astimezone(CHINA).date(),
        "session": "evening",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=2),
        "release_at": now - timedelta(hours=1),
        "cancel_deadline": starts,
        "fee_fen": 1000,
        "location": "门诊楼2层",
    }
    slots = [
        {
            "slot_id": f"{schedule_id}-{n}",
            "starts_at": starts + timedelta(minutes=20 * n),
            "ends_at": starts + timedelta(minutes=20 * (n + 1)),
            "capacity": capacity,
        }
        for n, capacity in enumerate(capacities)
    ]
    await world.catalogue.put_schedule(values, slots)
    return schedule_id, [s["slot_id"] for s in slots]


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``inventory worker`` in a session of its own."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "inventory", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
