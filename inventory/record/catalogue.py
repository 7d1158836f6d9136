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

What an answer needs to show a schedule's instants (its hospital's time zone) and its
cancellation deadline is :class:`ScheduleTerms`, cached per schedule for a few seconds
(an operator's change of the deadline shows everywhere within that; the cancel script
enforces the deadline itself, from Redis).
"""

from __future__ import annotations

import contextlib
import time
import zoneinfo
from dataclasses import fields
from datetime import date, datetime
from typing import Any, Final, NamedTuple

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from inventory.domain import HospitalPolicy, ScheduleSpec, SlotLocation, SlotSpec
from inventory.errors import ConflictError, InventoryError
from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

_POLICY_FIELDS = {f.name for f in fields(HospitalPolicy)}

log = structlog.get_logger(__name__)

#: The zone of a hospital whose configured zone this machine does not know.
DEFAULT_ZONE: Final = zoneinfo.ZoneInfo("Asia/Shanghai")
#: How long a schedule's terms are reused before Postgres is asked again.
TERMS_TTL_S: Final = 5.0


def zone_named(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name`` (Asia/Shanghai when this machine does not know it)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("catalogue.unknown_timezone", timezone=name[:64])
        return DEFAULT_ZONE


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


class ScheduleTerms(NamedTuple):
    """What answers show of a schedule besides its rows: the hospital's time zone (every
    instant is written in it) and the cancellation deadline as the cancel script
    enforces it (the configured deadline, and never after the session starts)."""

    zone: zoneinfo.ZoneInfo
    cancel_deadline_ms: int

    @classmethod
    def of(
        cls, zone: zoneinfo.ZoneInfo, cancel_deadline: datetime, starts_at: datetime
    ) -> ScheduleTerms:
        """The terms of a schedule row."""
        return cls(zone, min(_ms(cancel_deadline), _ms(starts_at)))

    def cancellable(self, now_ms: int | None = None) -> bool:
        """Whether a booking of the schedule can still be cancelled (at ``now_ms``)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now < self.cancel_deadline_ms


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
        #: hospital id -> its time zone.
        self.zones: dict[str, zoneinfo.ZoneInfo] = {}
        #: schedule id -> (monotonic expiry, terms).
        self._terms: dict[str, tuple[float, ScheduleTerms]] = {}

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            return list(await connection.fetch(QUERIES[query], *args))  # type: ignore[literal-required]

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            return await connection.fetchrow(QUERIES[query], *args)  # type: ignore[literal-required]

    async def _write(self, query: str, *args: Any) -> asyncpg.Record:
        """One upsert's row; a broken reference or constraint is the caller's conflict."""
        try:
            row = await self._fetchrow(query, *args)
        except asyncpg.ForeignKeyViolationError as error:
            raise ConflictError(
                "a referenced hospital, department or doctor does not exist"
            ) from error
        except asyncpg.IntegrityConstraintViolationError as error:
            raise ConflictError("the change breaks a catalogue rule") from error
        assert row is not None
        return row

    # -- reads (rows and columns as docs/schema.md lists them) --------------------------

    async def hospitals(self) -> list[asyncpg.Record]:
        """Every hospital, by name."""
        return await self._fetch("list_hospitals")

    async def hospital(self, hospital_id: str) -> asyncpg.Record | None:
        """One hospital, or None."""
        return await self._fetchrow("get_hospital", hospital_id)

    async def department(self, department_id: str) -> asyncpg.Record | None:
        """One department, or None."""
        return await self._fetchrow("get_department", department_id)

    async def doctor(self, doctor_id: str) -> asyncpg.Record | None:
        """One doctor, or None."""
        return await self._fetchrow("get_doctor", doctor_id)

    async def department_tree(self, hospital_id: str) -> list[asyncpg.Record]:
        """A hospital's departments in tree order (a parent before its children)."""
        return await self._fetch("list_department_tree", hospital_id)

    async def department_doctors(self, department_id: str) -> list[asyncpg.Record]:
        """A department's doctors, by name."""
        return await self._fetch("list_department_doctors", department_id)

    async def day_schedules(self, department_id: str, day: date) -> list[asyncpg.Record]:
        """A department's schedules on a visit date, with their doctors."""
        return await self._fetch("list_department_schedules", department_id, day)

    async def schedule_rooms(self, schedule_ids: list[str]) -> dict[str, asyncpg.Record]:
        """The latest waiting room of each schedule that has one (release_id, opens_at,
        t0), by schedule id."""
        rows = await self._fetch("list_schedule_rooms", schedule_ids)
        return {str(row["schedule_id"]): row for row in rows}

    async def day_slots(self, department_id: str, day: date) -> list[asyncpg.Record]:
        """Every slot of a department's schedules on a visit date (one tag's slots)."""
        return await self._fetch("list_tag_slots", department_id, day)

    async def schedule(self, schedule_id: str) -> asyncpg.Record | None:
        """One schedule with its doctor, department and hospital, or None."""
        return await self._fetchrow("get_schedule", schedule_id)

    async def schedule_slots(self, schedule_id: str) -> list[asyncpg.Record]:
        """A schedule's slots in time order."""
        return await self._fetch("list_schedule_slots", schedule_id)

    # -- operators' writes of the catalogue around schedules ------------------------------

    async def put_hospital(
        self, hospital_id: str, name: str, timezone: str, policy: dict[str, Any]
    ) -> asyncpg.Record:
        """Create or replace a hospital (its row, with ``inserted``)."""
        return await self._write("upsert_hospital", hospital_id, name, timezone, policy)

    async def put_department(
        self,
        department_id: str,
        *,
        hospital_id: str,
        parent_id: str | None,
        name: str,
        sort_order: int,
    ) -> asyncpg.Record:
        """Create or replace a department (its row, with ``inserted``)."""
        return await self._write(
            "upsert_department", department_id, hospital_id, parent_id, name, sort_order
        )

    async def put_doctor(
        self,
        doctor_id: str,
        *,
        hospital_id: str,
        department_id: str,
        name: str,
        title: str,
        specialty: str,
    ) -> asyncpg.Record:
        """Create or replace a doctor (its row, with ``inserted``)."""
        return await self._write(
            "upsert_doctor", doctor_id, hospital_id, department_id, name, title, specialty
        )

    async def load_policies(self) -> None:
        """Read every hospital's policy (at start-up and periodically)."""
        for row in await self.hospitals():
            self.policies[row["id"]] = policy_from_json(row["policy"])
            self.zones[row["id"]] = zone_named(row["timezone"])

    async def zone(self, hospital_id: str) -> zoneinfo.ZoneInfo:
        """A hospital's time zone (cached; Asia/Shanghai for an unknown hospital)."""
        found = self.zones.get(hospital_id)
        if found is None:
            row = await self.hospital(hospital_id)
            found = zone_named(row["timezone"]) if row is not None else DEFAULT_ZONE
            if row is not None:
                self.zones[hospital_id] = found
        return found

    def hospital_changed(self, hospital_id: str, timezone: str) -> None:
        """An operator wrote the hospital: its zone, and its schedules' terms, anew."""
        self.zones[hospital_id] = zone_named(timezone)
        self._terms.clear()

    def known_terms(self, schedule_id: str) -> ScheduleTerms | None:
        """A schedule's terms if this process has fresh ones (no I/O)."""
        cached = self._terms.get(schedule_id)
        if cached is None or cached[0] < time.monotonic():
            return None
        return cached[1]

    async def terms(
        self, schedule_id: str, *, location: SlotLocation | None = None
    ) -> ScheduleTerms | None:
        """A schedule's terms (cached for ``TERMS_TTL_S``), or None if there is none.

        With the ``location`` of one of its slots (the reserve path has it) the terms
        come from the schedule as its tag holds it in Redis when this process knows the
        hospital's zone, so a reserve does not wait for Postgres; and while Postgres
        cannot answer, from Redis with the default zone (instants are the same, written
        with another offset) rather than failing a hold that was already taken."""
        found = self.known_terms(schedule_id)
        if found is not None:
            return found
        if location is not None and location.hospital_id in self.zones:
            from_store = await self._terms_from_store(schedule_id, location)
            if from_store is not None:
                return self._remember(schedule_id, from_store)
        try:
            row = await self.schedule(schedule_id)
        except (DatabaseUnavailableError, DatabaseBusyError):
            from_store = await self._terms_from_store(schedule_id, location) if location else None
            if from_store is None:
                raise
            return from_store  # not remembered: Postgres's answer replaces it when back
        if row is None:
            return None
        return self.remember_terms(row)

    async def _terms_from_store(
        self, schedule_id: str, location: SlotLocation
    ) -> ScheduleTerms | None:
        tag = keys.department_day_tag(location.department_id, location.visit_date)
        try:
            times = await self._store.schedule_times(tag, schedule_id)
        except InventoryError:
            return None
        if times is None:
            return None
        start_ms, deadline_ms = times
        zone = self.zones.get(location.hospital_id, DEFAULT_ZONE)
        return ScheduleTerms(zone, min(deadline_ms, start_ms))

    def _remember(self, schedule_id: str, found: ScheduleTerms) -> ScheduleTerms:
        if len(self._terms) > 100_000:
            self._terms.clear()
        self._terms[schedule_id] = (time.monotonic() + TERMS_TTL_S, found)
        return found

    def remember_terms(self, row: asyncpg.Record) -> ScheduleTerms:
        """The terms of a ``get_schedule`` row, remembered for ``TERMS_TTL_S``."""
        zone = zone_named(row["hospital_timezone"])
        self.zones[row["hospital_id"]] = zone
        return self._remember(
            row["id"], ScheduleTerms.of(zone, row["cancel_deadline"], row["starts_at"])
        )

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
            row = await self._fetchrow("get_slot_location", slot_id)
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
            self._terms.pop(row["id"], None)
            all_slots = await connection.fetch(QUERIES["list_schedule_slots"], row["id"])
            spec = spec_from_rows(row, all_slots)
            await self._store.load_schedule(
                spec,
                self.policies.get(row["hospital_id"]),
                postgres_seq=await _postgres_seq(connection, spec),
            )

    async def load_schedule_into_store(self, schedule_id: str) -> bool:
        """(Re)load one schedule from Postgres into Redis; False if there is none."""
        row = await self.schedule(schedule_id)
        if row is None:
            return False
        slots = await self.schedule_slots(schedule_id)
        spec = spec_from_rows(row, slots)
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            postgres_seq = await _postgres_seq(connection, spec)
        await self._store.load_schedule(
            spec, self.policies.get(row["hospital_id"]), postgres_seq=postgres_seq
        )
        return True

    async def set_status(
        self,
        schedule_id: str,
        status: str,
        reason: str,
        *,
        message: str | None = None,
        source: str = "operator",
    ) -> str | None:
        """Suspend or reopen in Postgres and Redis together; the schedule's tag, or None
        if there is no such schedule. ``reason`` is the store's (a code); ``message``
        (default: ``reason``) is kept as ``schedules.status_reason``, what a suspension
        tells the patients whose bookings it cancels; ``source`` (``operator`` or
        ``his``) who decided it."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(QUERIES["get_schedule"], schedule_id)
            if row is None:
                return None
            await connection.execute(
                QUERIES["set_schedule_status"],
                schedule_id,
                status,
                reason if message is None else message,
                source,
            )
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
