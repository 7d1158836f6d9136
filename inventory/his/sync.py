"""Schedule sync: the HIS's catalogue, schedules and slots for the booking window flow
into Postgres and Redis (docs/his.md, "Schedule sync").

One round (:meth:`ScheduleSync.sync`):

1. the catalogue (hospital, departments, doctors) is upserted when it changed;
2. every HIS schedule of the window is compared with ours and written through
   :meth:`PgCatalogue.put_schedule` (Postgres and Redis together) when it is new or
   differs; a slot's capacity is ``max(0, HIS capacity - other_channel)``, where
   ``other_channel`` (table ``his_slots``) is what we keep back for the hospital's own
   window and phone bookings: the HIS's booked count minus ours the first time a slot is
   seen, then moved only by the reconciler. A capacity the store refuses (below what is
   held, booked or waiting) is lowered only as far as the taken units and reported;
3. a schedule the HIS suspended (停诊) is suspended here, and its open holds and
   bookings are cancelled: bookings with the reason the patient is shown and a refund
   request, then their units released (:mod:`inventory.his.compensation`); a schedule
   the HIS resumed is reopened.

A round over the default window also reads yesterday's and today's appointments back
(:mod:`inventory.his.visit_sync`): what the HIS says of a visit (arrived, fulfilled,
noshow) settles our booking as visited or no_show.

:func:`run_schedule_sync` repeats it every ``interval_s`` in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from inventory.errors import CapacityBelowTakenError, InventoryError, StoreUnavailableError
from inventory.his.client import HisClient
from inventory.his.errors import HisProtocolError
from inventory.his.scope import EVERY_HOSPITAL, HospitalScope
from inventory.his.suspension import SuspensionResult, cancel_suspended
from inventory.his.types import HisCatalogue, HisDoctor, HisSchedule
from inventory.his.visit_sync import read_back_visits
from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS
from inventory.record.catalogue import PgCatalogue
from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

#: The schedule fields compared to decide whether a schedule changed.
_COMPARED = (
    "hospital_id",
    "department_id",
    "doctor_id",
    "visit_date",
    "session",
    "starts_at",
    "ends_at",
    "release_at",
    "cancel_deadline",
    "fee_fen",
    "location",
)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """How the sync runs. Durations in seconds."""

    #: Visit dates from today (in ``timezone``) for this many days.
    window_days: int = 14
    interval_s: float = 60.0
    #: The hospital's zone: "today", and a new hospital's ``timezone``.
    timezone: str = "Asia/Shanghai"
    #: Schedules written at once (each is one Postgres transaction and one Redis step).
    concurrency: int = 4
    acquire_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError("window_days must be at least 1")
        if self.interval_s <= 0 or self.concurrency < 1:
            raise ValueError("interval_s must be positive and concurrency at least 1")


@dataclass
class SyncReport:
    """What one sync round found and did (ids, never personal data)."""

    first_day: date
    last_day: date
    catalogue_changed: bool = False
    schedules: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    #: Slots whose capacity moved (new slots not counted).
    capacity_changed: list[str] = field(default_factory=list)
    #: Slots whose HIS capacity is below what is held, booked or waiting here.
    capacity_refused: list[dict[str, Any]] = field(default_factory=list)
    suspended: list[SuspensionResult] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    #: HIS schedules not written (unknown doctor, refused by Postgres), with why.
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Our schedules of the window the HIS no longer lists (reported, left alone).
    not_in_his: list[str] = field(default_factory=list)
    #: Bookings the HIS reported checked in (visited) or missed (no_show) this round.
    visited: list[str] = field(default_factory=list)
    no_shows: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "catalogue_changed": self.catalogue_changed,
            "schedules": self.schedules,
            "created": self.created,
            "updated": self.updated,
            "capacity_changed": self.capacity_changed,
            "capacity_refused": self.capacity_refused,
            "suspended": [
                {
                    "schedule_id": s.schedule_id,
                    "bookings_cancelled": s.bookings_cancelled,
                    "holds_released": s.holds_released,
                    "refunds_requested": s.refunds_requested,
                }
                for s in self.suspended
            ],
            "reopened": self.reopened,
            "skipped": self.skipped,
            "not_in_his": self.not_in_his,
            "visited": self.visited,
            "no_shows": self.no_shows,
        }

    def summary(self) -> dict[str, int]:
        """Counts for a log line."""
        return {
            "schedules": self.schedules,
            "created": len(self.created),
            "updated": len(self.updated),
            "capacity_changed": len(self.capacity_changed),
            "capacity_refused": len(self.capacity_refused),
            "suspended": len(self.suspended),
            "reopened": len(self.reopened),
            "skipped": len(self.skipped),
            "not_in_his": len(self.not_in_his),
            "visited": len(self.visited),
            "no_shows": len(self.no_shows),
        }


@dataclass
class SyncStats:
    """The sync loop's figures for metrics and /readyz."""

    rounds: int = 0
    failures: int = 0
    last_error: str = ""
    last_success_at: float = 0.0
    last_duration_s: float = 0.0
    last_report: SyncReport | None = None


class ScheduleSync:
    """Brings the HIS's schedules of the window into Postgres and Redis."""

    def __init__(
        self,
        his: HisClient,
        pool: asyncpg.Pool,
        store: SlotStore,
        catalogue: PgCatalogue,
        *,
        config: SyncConfig | None = None,
        hospital_id: str | None = None,
        scope: HospitalScope = EVERY_HOSPITAL,
        connection: str = "default",
    ) -> None:
        self.his = his
        self.pool = pool
        self.store = store
        self.catalogue = catalogue
        self.config = config or SyncConfig()
        self.zone = ZoneInfo(self.config.timezone)
        self._applied: HisCatalogue | None = None
        self._roles: dict[str, HisDoctor] = {}
        #: A hospital's own connection names the hospital (its HIS's Organization id may
        #: be anything); the default connection takes the id its HIS gives.
        self.own_hospital = hospital_id
        self.hospital_id: str | None = hospital_id
        #: The hospitals whose schedules and bookings this connection's flows read.
        self.scope = scope
        #: The connection's name (logs, metrics).
        self.connection = connection

    def window(self, today: date | None = None) -> tuple[date, date]:
        """The visit dates synced: today (hospital time) and the days after it."""
        first = today or datetime.now(tz=self.zone).date()
        return first, first + timedelta(days=self.config.window_days - 1)

    # -- one round --------------------------------------------------------------------

    async def sync(self, first_day: date | None = None, last_day: date | None = None) -> SyncReport:
        """One round over the window (or the days given)."""
        default_first, default_last = self.window()
        first, last = first_day or default_first, last_day or default_last
        report = SyncReport(first, last)
        await self.sync_catalogue(report)
        schedules = await self.his.list_schedules(first, last)
        ours, slots = await self.load_window(first, last)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(schedule: HisSchedule) -> None:
            async with limit:
                try:
                    await self.apply(
                        schedule,
                        ours.get(schedule.schedule_id),
                        slots.get(schedule.schedule_id, ()),
                        report,
                    )
                except (DatabaseUnavailableError, DatabaseBusyError, StoreUnavailableError):
                    raise  # everything else would fail too: the round ends here
                except (InventoryError, asyncpg.PostgresError) as error:
                    # One schedule the store refuses (a fenced tag, say) must not hold up
                    # the others; it is tried again next round.
                    why = getattr(error, "code", None) or type(error).__name__
                    report.skipped.append({"schedule_id": schedule.schedule_id, "why": why})
                    log.warning("his.schedule_not_synced", schedule=schedule.schedule_id, why=why)

        report.schedules = len(schedules)
        await asyncio.gather(*(one(s) for s in schedules))
        report.not_in_his = sorted(set(ours) - {s.schedule_id for s in schedules})
        if first_day is None:
            # Visits happen today and are settled up to a day later (an evening session
            # marked the next morning): read both days back.
            read = await read_back_visits(
                self.his,
                self.pool,
                (default_first - timedelta(days=1), default_first),
                acquire_timeout_s=self.config.acquire_timeout_s,
            )
            report.visited = read.visited + read.consultations
            report.no_shows = read.no_shows
            metrics.observe_visit_readback(time.time(), connection=self.connection)
        return report

    async def load_window(
        self, first: date, last: date
    ) -> tuple[dict[str, asyncpg.Record], dict[str, list[asyncpg.Record]]]:
        """Our schedules of the window by id, and their slots by schedule id."""
        only, but = self.scope.params()
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            schedule_rows = await connection.fetch(
                QUERIES["list_window_schedules"], first, last, only, but
            )
            slot_rows = await connection.fetch(QUERIES["list_window_slots"], first, last, only, but)
        slots: dict[str, list[asyncpg.Record]] = {}
        for row in slot_rows:
            slots.setdefault(row["schedule_id"], []).append(row)
        return {row["id"]: row for row in schedule_rows}, slots

    async def sync_catalogue(self, report: SyncReport | None = None) -> HisCatalogue:
        """Upsert the hospital, departments and doctors when the HIS's differ from what
        was applied last; an operator's timezone and policy of the hospital are kept."""
        catalogue = await self.his.fetch_catalogue()
        self._roles = {d.role_id: d for d in catalogue.doctors}
        hospital = self.own_hospital or catalogue.hospital_id
        self.hospital_id = hospital
        if catalogue == self._applied:
            return catalogue
        async with (
            acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection,
            connection.transaction(),
        ):
            await _refuse_foreign_ids(connection, hospital, catalogue)
            existing = await connection.fetchrow(QUERIES["get_hospital"], hospital)
            name = catalogue.hospital_name or hospital
            if existing is None:
                await connection.execute(
                    QUERIES["upsert_hospital"], hospital, name, self.config.timezone, {}
                )
            elif existing["name"] != name:
                await connection.execute(
                    QUERIES["upsert_hospital"],
                    hospital,
                    name,
                    existing["timezone"],
                    existing["policy"],
                )
            for order, department in enumerate(catalogue.departments):
                await connection.execute(
                    QUERIES["upsert_department"],
                    department.department_id,
                    hospital,
                    None,
                    department.name or department.department_id,
                    order,
                )
            for doctor in catalogue.doctors:
                await connection.execute(
                    QUERIES["upsert_doctor"],
                    doctor.doctor_id,
                    hospital,
                    doctor.department_id,
                    doctor.name or doctor.doctor_id,
                    doctor.title,
                    doctor.specialty,
                )
        self._applied = catalogue
        await self.catalogue.load_policies()
        if report is not None:
            report.catalogue_changed = True
        log.info(
            "his.catalogue_synced",
            connection=self.connection,
            hospital=hospital,
            departments=len(catalogue.departments),
            doctors=len(catalogue.doctors),
        )
        return catalogue

    # -- one schedule -----------------------------------------------------------------

    def schedule_values(self, schedule: HisSchedule) -> dict[str, Any] | None:
        """The schedule as ``put_schedule`` takes it; None when its doctor is unknown."""
        role = self._roles.get(schedule.role_id)
        doctor_id = schedule.doctor_id or (role.doctor_id if role else None)
        department_id = schedule.department_id or (role.department_id if role else None)
        if doctor_id is None or department_id is None or self.hospital_id is None:
            return None
        starts_at, ends_at = schedule.starts_at, schedule.ends_at
        # A HIS that does not say when it releases: bookable as soon as it is in the
        # window; no cancellation deadline: until the session starts.
        release_at = schedule.release_at or starts_at - timedelta(days=self.config.window_days)
        cancel_deadline = schedule.cancel_deadline or starts_at
        return {
            "schedule_id": schedule.schedule_id,
            "hospital_id": self.hospital_id,
            "department_id": department_id,
            "doctor_id": doctor_id,
            "visit_date": schedule.visit_date,
            "session": schedule.session,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "release_at": min(release_at, starts_at),
            "cancel_deadline": min(cancel_deadline, ends_at),
            "fee_fen": schedule.fee_fen,
            "location": schedule.location_name,
        }

    @staticmethod
    def slot_targets(
        schedule: HisSchedule, rows: Iterable[asyncpg.Record]
    ) -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]]]:
        """Our slots for a HIS schedule (capacity = HIS capacity - other channels) and
        the ``his_slots`` record of each: (HIS capacity, other channels)."""
        by_id = {row["id"]: row for row in rows}
        slots: list[dict[str, Any]] = []
        records: dict[str, tuple[int, int]] = {}
        for slot in schedule.slots:
            row = by_id.get(slot.slot_id)
            if row is not None and row["his_capacity"] is not None:
                other = int(row["other_channel"])
            else:
                # First sight: whatever the HIS has booked that is not ours came from
                # its other channels.
                ours = int(row["platform_booked"]) if row is not None else 0
                other = max(0, slot.booked - ours)
            slots.append(
                {
                    "slot_id": slot.slot_id,
                    "starts_at": slot.starts_at,
                    "ends_at": slot.ends_at,
                    "capacity": max(0, slot.capacity - other),
                }
            )
            records[slot.slot_id] = (slot.capacity, other)
        return slots, records

    async def apply(
        self,
        schedule: HisSchedule,
        row: asyncpg.Record | None,
        slot_rows: Iterable[asyncpg.Record],
        report: SyncReport,
    ) -> None:
        """Bring one schedule in line with the HIS (write, suspend, reopen)."""
        values = self.schedule_values(schedule)
        if values is None:
            report.skipped.append(
                {"schedule_id": schedule.schedule_id, "why": "unknown doctor or department"}
            )
            return
        slot_rows = list(slot_rows)
        slots, records = self.slot_targets(schedule, slot_rows)
        by_id = {r["id"]: r for r in slot_rows}
        changed_slots = [
            s["slot_id"]
            for s in slots
            if (r := by_id.get(s["slot_id"])) is None
            or (r["starts_at"], r["ends_at"], int(r["capacity"]))
            != (s["starts_at"], s["ends_at"], s["capacity"])
        ]
        differs = row is None or any(row[k] != values[k] for k in _COMPARED)
        if differs or changed_slots:
            written = await self.write(values, slots, report)
            if not written:
                return
            if row is None:
                report.created.append(schedule.schedule_id)
            else:
                report.updated.append(schedule.schedule_id)
                report.capacity_changed += [
                    s["slot_id"]
                    for s in slots
                    if (r := by_id.get(s["slot_id"])) is not None
                    and int(r["capacity"]) != s["capacity"]
                ]
        stale = {
            slot_id: record
            for slot_id, record in records.items()
            if (r := by_id.get(slot_id)) is None
            or (r["his_capacity"], r["other_channel"]) != record
        }
        if stale:
            await self.record_his_slots(stale)
        status = row["status"] if row is not None else "open"
        if not schedule.active:
            if status == "open" or await self.has_open_bookings(schedule.schedule_id):
                report.suspended.append(
                    await self.suspend(schedule.schedule_id, schedule.status_reason)
                )
        elif status == "suspended" and row is not None and row["status_source"] != "operator":
            # A 停诊 an operator entered here stands until an operator reopens it, even
            # while the HIS still lists the schedule as active.
            await self.catalogue.set_status(
                schedule.schedule_id, "open", "his_resumed", source="his"
            )
            report.reopened.append(schedule.schedule_id)
            log.info("his.schedule_reopened", schedule=schedule.schedule_id)

    async def write(
        self, values: dict[str, Any], slots: list[dict[str, Any]], report: SyncReport
    ) -> bool:
        """``put_schedule``; a capacity below what is taken is raised to the taken units
        (and reported) rather than refused. False when the schedule was not written."""
        schedule_id = values["schedule_id"]
        for _ in range(len(slots) + 1):
            try:
                await self.catalogue.put_schedule(values, slots)
            except CapacityBelowTakenError:
                if not await self._clamp(values, slots, report):
                    break
            except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as error:
                # e.g. the HIS moved a schedule to another department or date: its tag
                # cannot change here (suspend it and create a new one).
                report.skipped.append({"schedule_id": schedule_id, "why": str(error)[:200]})
                log.warning("his.schedule_refused", schedule=schedule_id, error=str(error))
                return False
            else:
                return True
        report.skipped.append({"schedule_id": schedule_id, "why": "capacity_below_taken"})
        return False

    async def _clamp(
        self, values: dict[str, Any], slots: list[dict[str, Any]], report: SyncReport
    ) -> bool:
        tag = keys.department_day_tag(values["department_id"], values["visit_date"])
        counts = await self.store.slot_counts(tag, [s["slot_id"] for s in slots])
        clamped = False
        for slot in slots:
            found = counts.get(slot["slot_id"])
            if found is None:
                continue
            taken = found.held + found.booked + found.waiting
            if slot["capacity"] < taken:
                report.capacity_refused.append(
                    {"slot_id": slot["slot_id"], "wanted": slot["capacity"], "taken": taken}
                )
                log.warning(
                    "his.capacity_below_taken",
                    slot=slot["slot_id"],
                    wanted=slot["capacity"],
                    taken=taken,
                )
                slot["capacity"] = taken
                clamped = True
        return clamped

    async def record_his_slots(self, records: dict[str, tuple[int, int]]) -> None:
        """Upsert ``his_slots`` rows: slot id -> (HIS capacity, other channels)."""
        ids = sorted(records)
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            await connection.execute(
                QUERIES["upsert_his_slots"],
                ids,
                [records[i][0] for i in ids],
                [records[i][1] for i in ids],
            )

    async def has_open_bookings(self, schedule_id: str) -> bool:
        """Whether a booking of the schedule is still open in Postgres."""
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            rows = await connection.fetch(QUERIES["list_schedule_open_bookings"], schedule_id)
        return bool(rows)

    async def suspend(self, schedule_id: str, reason: str | None) -> SuspensionResult:
        """停诊: close the schedule here (Postgres and Redis), cancel its open bookings
        (patient told why, refund requested) and release every open hold, through the
        code path every suspension shares (:mod:`inventory.his.suspension`). Idempotent:
        a second call finds nothing open."""
        tag = await self.catalogue.set_status(
            schedule_id, "suspended", "his_suspended", message=reason or "", source="his"
        )
        if tag is None:
            return SuspensionResult(schedule_id)
        result = await cancel_suspended(
            self.pool,
            self.store,
            schedule_id,
            tag,
            message=reason,
            acquire_timeout_s=self.config.acquire_timeout_s,
        )
        log.info(
            "his.schedule_suspended",
            schedule=schedule_id,
            bookings=len(result.bookings_cancelled),
            holds=len(result.holds_released),
            refunds=len(result.refunds_requested),
        )
        return result


async def _refuse_foreign_ids(connection: Any, hospital: str, catalogue: HisCatalogue) -> None:
    """Department and doctor ids are the platform's, not a hospital's: a HIS naming one
    another hospital owns would move it to its hospital. Refuse the whole catalogue
    instead (nothing is written; the round fails and says why, until the ids are
    told apart)."""
    for kind, query, ids in (
        ("department", QUERIES["get_department"], [d.department_id for d in catalogue.departments]),
        ("doctor", QUERIES["get_doctor"], [d.doctor_id for d in catalogue.doctors]),
    ):
        for found_id in ids:
            row = await connection.fetchrow(query, found_id)
            if row is not None and row["hospital_id"] != hospital:
                raise HisIdsTakenError(
                    f"the HIS of {hospital} names {kind} {found_id}, "
                    f"which belongs to {row['hospital_id']}"
                )


class HisIdsTakenError(HisProtocolError):
    """A HIS's catalogue names an id another hospital owns here."""


async def run_schedule_sync(
    sync: ScheduleSync,
    *,
    stop: asyncio.Event,
    interval_s: float | None = None,
    stats: SyncStats | None = None,
) -> None:
    """Sync every ``interval_s`` until ``stop``; a failed round (HIS, Redis or Postgres
    away) is logged, counted and tried again at the next interval."""
    stats = stats if stats is not None else SyncStats()
    interval = interval_s if interval_s is not None else sync.config.interval_s
    while not stop.is_set():
        started = time.monotonic()
        stats.rounds += 1
        try:
            report = await sync.sync()
        except TRANSIENT_ERRORS as error:
            stats.failures += 1
            stats.last_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("his.sync_failed", connection=sync.connection, error=stats.last_error)
        else:
            stats.last_report = report
            stats.last_success_at = time.time()
            stats.last_duration_s = time.monotonic() - started
            log.info(
                "his.synced",
                connection=sync.connection,
                seconds=round(stats.last_duration_s, 3),
                **report.summary(),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
