"""The catalogue in Postgres (hospitals, departments, doctors, schedules, slots) and
how it reaches Redis.

Reads serve the patient's path; writes come from operators (and later the HIS sync).
A schedule write runs inside one Postgres transaction that also loads the schedule into
Redis (``load_schedule``): if Redis refuses (say, capacity below what is taken) the
Postgres change rolls back; if the commit fails after Redis took it, the caller's retry
of the same write is idempotent. Slot locations never change, so they are cached (in
memory, and in Redis beside the schedules, so that a reserve needs no Postgres).
Every load passes the tag's sequence as Postgres recorded it, so a tag whose Redis
history was lost is fenced rather than loaded afresh (lua/load_schedule.lua).
"""

from __future__ import annotations

import contextlib
from dataclasses import fields
from datetime import date, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory import keys
from inventory.db.pool import acquire
from inventory.db.queries import QUERIES
from inventory.domain import HospitalPolicy, ScheduleSpec, SlotLocation, SlotSpec
from inventory.errors import InventoryError
from inventory.store import SlotStore

_POLICY_FIELDS = {f.name for f in fields(HospitalPolicy)}


def policy_from_json(data: dict[str, Any] | None) -> HospitalPolicy:
    """A hospital's policy from its ``policy`` column (unknown keys are ignored: they
    belong to rules evaluated elsewhere, such as the wall-clock release time)."""
    known = {k: v for k, v in (data or {}).items() if k in _POLICY_FIELDS}
    return HospitalPolicy(**known)


class PgCatalogue:
    """Catalogue reads and writes over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, store: SlotStore, *, acquire_timeout_s: float = 5.0):
        self._pool = pool
        self._store = store
        self._timeout = acquire_timeout_s
        self._locations: dict[str, SlotLocation] = {}
        #: hospital id -> policy; shared with the store's PolicyBook (same dict).
        self.policies: dict[str, HospitalPolicy] = {}

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            return list(await connection.fetch(QUERIES[query], *args))  # type: ignore[literal-required]

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            return await connection.fetchrow(QUERIES[query], *args)  # type: ignore[literal-required]

    async def load_policies(self) -> None:
        """Read every hospital's policy (at start-up and periodically)."""
        for row in await self.fetch("list_hospitals"):
            self.policies[row["id"]] = policy_from_json(row["policy"])

    def known_slot_location(self, slot_id: str) -> SlotLocation | None:
        """Where a slot lives, if this process already knows (no I/O)."""
        return self._locations.get(slot_id)

    async def slot_location(self, slot_id: str) -> SlotLocation | None:
        """Where a slot lives (cached: a slot never moves). Asks this process's memory,
        then the record Redis keeps of every loaded schedule's slots, then Postgres (a
        location found there is recorded in Redis): a reserve for a slot this process
        has not served yet needs no Postgres, so holds keep working while it is down."""
        cached = self._locations.get(slot_id)
        if cached is not None:
            return cached
        location: SlotLocation | None = None
        with contextlib.suppress(InventoryError):  # Redis away: Postgres decides
            location = await self._store.slot_location(slot_id)
        if location is None:
            row = await self.fetchrow("get_slot_location", slot_id)
            if row is None:
                return None
            location = SlotLocation(
                row["hospital_id"], row["department_id"], row["visit_date"], row["schedule_id"]
            )
            with contextlib.suppress(InventoryError):  # repaired on the next miss
                await self._store.copy_slot_locations([slot_id], location)
        self._locations[slot_id] = location
        return location

    async def put_schedule(self, schedule: dict[str, Any], slots: list[dict[str, Any]]) -> None:
        """Create or replace a schedule and its slots in Postgres and Redis, together."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            # Status moves only through suspend / reopen (which Redis also tracks): a
            # rewrite of the schedule keeps whatever status it has.
            existing = await connection.fetchrow(QUERIES["get_schedule"], schedule["schedule_id"])
            row = await connection.fetchrow(
                QUERIES["upsert_schedule"],
                schedule["schedule_id"],
                schedule["hospital_id"],
                schedule["department_id"],
                schedule["doctor_id"],
                schedule["visit_date"],
                schedule["session"],
                schedule["starts_at"],
                schedule["ends_at"],
                schedule["release_at"],
                schedule["cancel_deadline"],
                schedule["fee_fen"],
                schedule["location"],
                existing["status"] if existing is not None else "open",
            )
            for slot in slots:
                await connection.execute(
                    QUERIES["upsert_slot"],
                    slot["slot_id"],
                    row["id"],
                    slot["starts_at"],
                    slot["ends_at"],
                    slot["capacity"],
                )
            all_slots = await connection.fetch(QUERIES["list_schedule_slots"], row["id"])
            spec = spec_from_rows(row, all_slots)
            await self._store.load_schedule(
                spec,
                self.policies.get(row["hospital_id"]),
                postgres_seq=await _postgres_seq(connection, spec),
            )

    async def load_schedule_into_store(self, schedule_id: str) -> bool:
        """(Re)load one schedule from Postgres into Redis; False if there is none."""
        row = await self.fetchrow("get_schedule", schedule_id)
        if row is None:
            return False
        slots = await self.fetch("list_schedule_slots", schedule_id)
        spec = spec_from_rows(row, slots)
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            postgres_seq = await _postgres_seq(connection, spec)
        await self._store.load_schedule(
            spec, self.policies.get(row["hospital_id"]), postgres_seq=postgres_seq
        )
        return True

    async def set_status(self, schedule_id: str, status: str, reason: str) -> str | None:
        """Suspend or reopen in Postgres and Redis together; the schedule's tag, or None
        if there is no such schedule."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(QUERIES["get_schedule"], schedule_id)
            if row is None:
                return None
            await connection.execute(QUERIES["set_schedule_status"], schedule_id, status)
            tag = keys.department_day_tag(row["department_id"], row["visit_date"])
            if status == "suspended":
                await self._store.suspend(tag, schedule_id, reason)
            else:
                await self._store.reopen(tag, schedule_id, reason)
            return tag


async def _postgres_seq(connection: asyncpg.Connection, spec: ScheduleSpec) -> int:
    """The highest seq Postgres recorded for the schedule's tag (0: none yet). Read
    before Redis is written: Postgres only learns seqs from Redis's own events, so a
    healthy Redis is never below it, and a load into a tag that is gets fenced."""
    tag = keys.department_day_tag(spec.department_id, spec.visit_date)
    row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
    return 0 if row is None else int(row["last_seq"])


def spec_from_rows(schedule: asyncpg.Record, slots: list[asyncpg.Record]) -> ScheduleSpec:
    """The store's view of a schedule row and its slot rows."""
    visit_date: date = schedule["visit_date"]
    starts_at: datetime = schedule["starts_at"]
    return ScheduleSpec(
        schedule_id=schedule["id"],
        hospital_id=schedule["hospital_id"],
        department_id=schedule["department_id"],
        visit_date=visit_date,
        release_at=schedule["release_at"],
        starts_at=starts_at,
        ends_at=schedule["ends_at"],
        cancel_deadline=schedule["cancel_deadline"],
        fee_fen=int(schedule["fee_fen"]),
        slots=tuple(SlotSpec(s["id"], int(s["capacity"])) for s in slots),
    )
