"""Reconciliation: compare the HIS, Postgres and Redis over the booking window, fix what
the policy allows, report the rest (docs/his.md, "Reconciliation").

Kinds of difference (each item names one booking, slot, schedule or HIS appointment),
and the fix applied when the policy allows it:

- ``missing_in_his``: a booking submitted or his_confirmed here, no appointment there.
  Fix: requeue it; the submitter sends it again.
- ``missing_in_postgres``: an active HIS appointment of our identifier system, or a
  booked Redis hold, with no booking here. Fix: cancel the appointment in the HIS; for
  the Redis hold, record the booking in Postgres.
- ``missing_in_redis``: an open booking here whose unit Redis does not hold as booked,
  or a schedule Redis lacks. Not fixed here (``inventory rebuild``).
- ``status_mismatch``: ended on one side, active on the other. Fix: cancelled here ->
  cancel in the HIS; cancelled in the HIS -> cancel here (refund, release); ended here
  but booked in Redis -> release the unit.
- ``capacity_changed``: our capacity is not the HIS capacity minus what we keep back for
  other channels. Fix: apply the HIS capacity (加号 or a reduction).
- ``other_channel``: the HIS's active window and phone appointments of a slot are not
  what we keep back. Fix: keep back exactly those (our capacity shrinks or grows).
- ``schedule_suspended``: suspended in the HIS, open here. Fix: suspend here, cancel its
  holds and bookings (refund requested, patient told why).
- ``schedule_resumed``: active in the HIS, suspended here. Fix: reopen here.
- ``new_schedule``: a HIS schedule of the window we do not have. Fix: sync it.
- ``visit_outcome``: the HIS marked our booking's appointment ``arrived``,
  ``fulfilled`` or ``noshow`` and the booking does not say so yet. Fix: record it
  (visited with the consultation's times, or no_show; :mod:`inventory.his.visit_sync`).

The policy on other channels: a unit booked at the hospital's window or by phone is a
unit we must not sell, so our capacity is ``max(0, HIS capacity - other channels'
active appointments)``; ``his_slots.other_channel`` records how many we keep back.

Changes younger than ``grace_s`` (a booking being sent, a cancellation on its way, a
confirm whose Postgres write is in flight) are not differences yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson
import redis.exceptions
import structlog

from inventory.domain import Hold, HoldState
from inventory.errors import InventoryError
from inventory.his.client import HisClient
from inventory.his.compensation import HIS_CANCELLED, end_booking, reason_code, release_unit
from inventory.his.sync import ScheduleSync, SyncReport
from inventory.his.types import HisAppointment, HisSchedule, HisSlot
from inventory.his.visit_sync import apply_visit, differs
from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS
from inventory.record.bookings import PgBookings
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

MISSING_IN_HIS = "missing_in_his"
MISSING_IN_POSTGRES = "missing_in_postgres"
MISSING_IN_REDIS = "missing_in_redis"
STATUS_MISMATCH = "status_mismatch"
CAPACITY_CHANGED = "capacity_changed"
OTHER_CHANNEL = "other_channel"
SCHEDULE_SUSPENDED = "schedule_suspended"
SCHEDULE_RESUMED = "schedule_resumed"
NEW_SCHEDULE = "new_schedule"
VISIT_OUTCOME = "visit_outcome"

#: Every kind, in report order.
KINDS: tuple[str, ...] = (
    MISSING_IN_HIS,
    MISSING_IN_POSTGRES,
    MISSING_IN_REDIS,
    STATUS_MISMATCH,
    CAPACITY_CHANGED,
    OTHER_CHANNEL,
    SCHEDULE_SUSPENDED,
    SCHEDULE_RESUMED,
    NEW_SCHEDULE,
    VISIT_OUTCOME,
)
#: Kinds a policy may fix (a unit Redis lost is ``inventory rebuild``'s job).
FIXABLE = frozenset(KINDS) - {MISSING_IN_REDIS}
#: Fixed by default: what follows the HIS as the system of record. Bookings missing
#: here and status mismatches touch a patient's booking or money: a person decides.
DEFAULT_FIX = frozenset(
    {
        MISSING_IN_HIS,
        CAPACITY_CHANGED,
        OTHER_CHANNEL,
        SCHEDULE_SUSPENDED,
        SCHEDULE_RESUMED,
        NEW_SCHEDULE,
        VISIT_OUTCOME,
    }
)

#: Booking statuses that hold a unit.
_OPEN = frozenset({"confirmed", "submitted", "his_confirmed"})
_HOLDING = _OPEN | {"visited", "no_show"}


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """Which kinds are fixed automatically; the rest are reported."""

    fix: frozenset[str] = DEFAULT_FIX

    @classmethod
    def parse(cls, text: str) -> ReconcilePolicy:
        """``default``, ``all``, ``none`` (or ``report-only``), kinds, and ``-kind`` to
        take one away, comma-separated: e.g. ``default,-other_channel,status_mismatch``."""
        chosen: set[str] = set()
        for token in filter(None, (t.strip() for t in text.split(","))):
            remove = token.startswith("-")
            name = token.lstrip("-+")
            if name == "default":
                names: Iterable[str] = DEFAULT_FIX
            elif name == "all":
                names = FIXABLE
            elif name in ("none", "report-only"):
                chosen.clear()
                continue
            elif name in FIXABLE:
                names = (name,)
            else:
                known = ", ".join(sorted(FIXABLE))
                raise ValueError(f"unknown reconciliation kind {name!r} (fixable: {known})")
            if remove:
                chosen.difference_update(names)
            else:
                chosen.update(names)
        return cls(frozenset(chosen))

    def allows(self, kind: str) -> bool:
        """Whether ``kind`` is fixed automatically."""
        return kind in self.fix

    def __str__(self) -> str:
        return ",".join(k for k in KINDS if k in self.fix) or "none"


@dataclass
class ReconcileItem:
    """One difference: its kind, what it is about, the evidence, and what was done."""

    kind: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: reported, fixed or fix_failed
    action: str = "reported"
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
            "action": self.action,
            "error": self.error,
        }


@dataclass
class ReconcileReport:
    """The outcome of one run: counts by kind (for metrics) and every item."""

    first_day: date
    last_day: date
    mode: str  #: fix or report
    policy: tuple[str, ...]
    run_id: int | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(tz=UTC))
    finished_at: datetime | None = None
    #: What was compared: schedules, slots, bookings, his_appointments, redis_holds.
    checked: dict[str, int] = field(default_factory=dict)
    items: list[ReconcileItem] = field(default_factory=list)

    def _count(self, action: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for item in self.items:
            if action is None or item.action == action:
                counts[item.kind] = counts.get(item.kind, 0) + 1
        return counts

    @property
    def counts(self) -> dict[str, int]:
        """Differences found, by kind (every kind present, 0 included)."""
        return self._count()

    @property
    def fixed(self) -> dict[str, int]:
        """Differences fixed, by kind."""
        return self._count("fixed")

    @property
    def failed(self) -> dict[str, int]:
        """Fixes tried that did not work, by kind."""
        return self._count("fix_failed")

    @property
    def unresolved(self) -> dict[str, int]:
        """Differences left (reported or a failed fix), by kind: the drift to export."""
        return {k: self.counts[k] - self.fixed[k] for k in self.counts}

    @property
    def total(self) -> int:
        """Differences found."""
        return len(self.items)

    @property
    def ok(self) -> bool:
        """Nothing left unresolved."""
        return not any(self.unresolved.values())

    def of_kind(self, kind: str) -> list[ReconcileItem]:
        """The items of one kind."""
        return [item for item in self.items if item.kind == kind]

    def as_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "run_id": self.run_id,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "mode": self.mode,
            "policy": list(self.policy),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "checked": self.checked,
            "total": self.total,
            "counts": self.counts,
            "fixed": self.fixed,
            "failed": self.failed,
            "unresolved": self.unresolved,
            "items": [item.as_dict() for item in self.items],
        }


@dataclass
class ReconcileStats:
    """The reconciler loop's figures for metrics: runs, failures, the last report."""

    runs: int = 0
    failures: int = 0
    last_error: str = ""
    last_success_at: float = 0.0
    last_duration_s: float = 0.0
    last_report: ReconcileReport | None = None


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """How the reconciler runs. Durations in seconds."""

    interval_s: float = 300.0
    #: Changes younger than this are in flight, not differences.
    grace_s: float = 120.0
    #: Days searched for appointments at once.
    concurrency: int = 4
    acquire_timeout_s: float = 10.0


@dataclass
class _Snapshot:
    """Everything one run compares, read before anything is fixed."""

    his_schedules: list[HisSchedule]
    his_appointments: list[HisAppointment]
    schedules: dict[str, Any]
    slots: dict[str, list[Any]]
    bookings: dict[str, Any]
    redis_holds: dict[str, Hold]
    redis_status: dict[str, str]


class Reconciler:
    """Compares the HIS, Postgres and Redis and fixes what ``policy`` allows."""

    def __init__(
        self,
        his: HisClient,
        pool: asyncpg.Pool,
        store: SlotStore,
        sync: ScheduleSync,
        *,
        policy: ReconcilePolicy | None = None,
        config: ReconcileConfig | None = None,
    ) -> None:
        self.his = his
        self.pool = pool
        self.store = store
        self.sync = sync
        self.policy = policy or ReconcilePolicy()
        self.config = config or ReconcileConfig()

    async def reconcile(
        self,
        *,
        fix: bool = True,
        first_day: date | None = None,
        last_day: date | None = None,
        record: bool = True,
    ) -> ReconcileReport:
        """One run over the window: compare, fix (``fix`` and the policy), record the
        run and its items in Postgres (``record``), return the report."""
        default_first, default_last = self.sync.window()
        first, last = first_day or default_first, last_day or default_last
        policy = sorted(self.policy.fix) if fix else []
        report = ReconcileReport(first, last, "fix" if fix else "report", tuple(policy))
        if record:
            async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
                row = await connection.fetchrow(
                    QUERIES["start_reconciliation_run"], first, last, report.mode, policy
                )
            report.run_id = int(row["id"])
        try:
            await self.sync.sync_catalogue()
            snapshot = await self._read(first, last)
            now = datetime.now(tz=UTC)
            self._compare(snapshot, report, now)
            if fix:
                await self._fix(snapshot, report)
        except BaseException as error:
            if record:
                await self._finish(report, "failed", f"{type(error).__name__}: {error}")
            raise
        report.finished_at = datetime.now(tz=UTC)
        if record:
            await self._finish(report, "completed", "")
        # What is left unresolved is the drift a person must look at (what was fixed is
        # gone): the gauge behind the InventoryReconciliationDrift alert.
        metrics.observe_reconciliation(
            report.unresolved, at=time.time(), connection=self.sync.connection
        )
        return report

    # -- reading ----------------------------------------------------------------------

    async def _read(self, first: date, last: date) -> _Snapshot:
        his_schedules = await self.his.list_schedules(first, last)
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        limit = asyncio.Semaphore(self.config.concurrency)

        async def day_appointments(day: date) -> list[HisAppointment]:
            async with limit:
                return await self.his.search_appointments(visit_date=day)

        appointments = [
            a for found in await asyncio.gather(*map(day_appointments, days)) for a in found
        ]
        schedules, slots = await self.sync.load_window(first, last)
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            rows = await connection.fetch(
                QUERIES["list_window_bookings"], first, last, *self.sync.scope.params()
            )
        bookings = {row["booking_id"]: row for row in rows}
        holds: dict[str, Hold] = {}
        statuses: dict[str, str] = {}
        tags = {
            keys.department_day_tag(r["department_id"], r["visit_date"]) for r in schedules.values()
        }
        for tag in sorted(tags):
            tag_keys = keys.tag_keys(tag)
            for value in (await self.store.client.hgetall(tag_keys.holds)).values():
                hold = Hold.from_record(orjson.loads(value))
                holds[hold.hold_id] = hold
            for name, value in (await self.store.client.hgetall(tag_keys.schedules)).items():
                schedule_id, _, part = _text(name).rpartition(":")
                if part == "status":
                    statuses[schedule_id] = _text(value)
        return _Snapshot(his_schedules, appointments, schedules, slots, bookings, holds, statuses)

    # -- comparing --------------------------------------------------------------------

    def _compare(self, snap: _Snapshot, report: ReconcileReport, now: datetime) -> None:
        report.checked = {
            "schedules": len(snap.his_schedules),
            "slots": sum(len(s.slots) for s in snap.his_schedules),
            "bookings": len(snap.bookings),
            "his_appointments": len(snap.his_appointments),
            "redis_holds": len(snap.redis_holds),
        }
        self._compare_schedules(snap, report)
        self._compare_bookings(snap, report, now)
        self._compare_store(snap, report, now)

    def _compare_schedules(self, snap: _Snapshot, report: ReconcileReport) -> None:
        others: dict[str, int] = {}
        for appointment in snap.his_appointments:
            if appointment.channel != "platform" and appointment.active and appointment.slot_id:
                others[appointment.slot_id] = others.get(appointment.slot_id, 0) + 1
        for schedule in snap.his_schedules:
            sid = schedule.schedule_id
            row = snap.schedules.get(sid)
            if row is None:
                detail = {"visit_date": schedule.visit_date.isoformat(), "active": schedule.active}
                report.items.append(ReconcileItem(NEW_SCHEDULE, sid, detail))
                continue
            redis_status = snap.redis_status.get(sid)
            if redis_status is None:
                report.items.append(ReconcileItem(MISSING_IN_REDIS, sid, {"what": "schedule"}))
                continue
            if not schedule.active:
                if row["status"] == "open" or redis_status == "open":
                    detail = {"reason": schedule.status_reason or "", "postgres": row["status"]}
                    report.items.append(ReconcileItem(SCHEDULE_SUSPENDED, sid, detail))
                continue
            if row["status"] == "suspended":
                # An operator's 停诊 stands whatever the HIS lists: not a difference.
                if row["status_source"] != "operator":
                    report.items.append(ReconcileItem(SCHEDULE_RESUMED, sid, {}))
                continue
            rows = {r["id"]: r for r in snap.slots.get(sid, ())}
            for slot in schedule.slots:
                self._compare_slot(schedule, slot, rows.get(slot.slot_id), others, report)

    @staticmethod
    def _compare_slot(
        schedule: HisSchedule,
        slot: HisSlot,
        row: Any,
        others: Mapping[str, int],
        report: ReconcileReport,
    ) -> None:
        other_now = others.get(slot.slot_id, 0)
        if row is None:
            detail = {"schedule_id": schedule.schedule_id, "his_capacity": slot.capacity}
            report.items.append(
                ReconcileItem(CAPACITY_CHANGED, slot.slot_id, detail | {"new": True})
            )
            return
        ours = int(row["capacity"])
        recorded = row["his_capacity"]
        kept_back = int(row["other_channel"]) if recorded is not None else 0
        base = {"schedule_id": schedule.schedule_id, "capacity": ours, "other_channel": kept_back}
        if ours != max(0, slot.capacity - kept_back):
            detail = base | {"his_capacity": slot.capacity, "recorded_his_capacity": recorded}
            report.items.append(ReconcileItem(CAPACITY_CHANGED, slot.slot_id, detail))
        if other_now != kept_back:
            detail = base | {"his_other_channel": other_now}
            report.items.append(ReconcileItem(OTHER_CHANNEL, slot.slot_id, detail))

    def _compare_bookings(self, snap: _Snapshot, report: ReconcileReport, now: datetime) -> None:
        grace = timedelta(seconds=self.config.grace_s)
        ours_in_his = {
            a.booking_id: a
            for a in snap.his_appointments
            if a.channel == "platform" and a.booking_id
        }
        for booking_id, row in snap.bookings.items():
            found = ours_in_his.get(booking_id)
            status = row["status"]
            sent = status == "his_confirmed" or (
                status == "submitted" and row["submitted_at"] < now - grace
            )
            if found is not None and found.visit_outcome is not None:
                # The hospital's word on the visit, not a difference of state.
                if differs(found, row):
                    detail = {"postgres": status, "his": found.status}
                    report.items.append(ReconcileItem(VISIT_OUTCOME, booking_id, detail))
                continue
            if sent:
                if found is None:
                    detail = {"status": status, "appointment_no": row["his_appointment_no"]}
                    report.items.append(ReconcileItem(MISSING_IN_HIS, booking_id, detail))
                elif not found.active:
                    detail = {
                        "postgres": status,
                        "his": found.status,
                        "appointment_id": found.appointment_id,
                        "his_reason": found.cancel_reason or "",
                    }
                    report.items.append(ReconcileItem(STATUS_MISMATCH, booking_id, detail))
            elif status in ("cancelled", "rejected") and found is not None and found.active:
                on_its_way = (
                    status == "cancelled"
                    and row["his_cancelled_at"] is None
                    and row["updated_at"] > now - grace
                )
                if not on_its_way:
                    detail = {
                        "postgres": status,
                        "his": found.status,
                        "appointment_id": found.appointment_id,
                    }
                    report.items.append(ReconcileItem(STATUS_MISMATCH, booking_id, detail))
        for booking_id, appointment in ours_in_his.items():
            if appointment.active and booking_id not in snap.bookings:
                detail = {
                    "present_in": "his",
                    "booking_id": booking_id,
                    "slot_id": appointment.slot_id,
                    "number": appointment.number,
                }
                report.items.append(
                    ReconcileItem(MISSING_IN_POSTGRES, appointment.appointment_id, detail)
                )

    def _compare_store(self, snap: _Snapshot, report: ReconcileReport, now: datetime) -> None:
        grace_ms = self.config.grace_s * 1000
        now_ms = now.timestamp() * 1000
        for booking_id, row in snap.bookings.items():
            if row["status"] not in _OPEN:
                continue
            hold = snap.redis_holds.get(booking_id)
            if hold is not None and hold.state is HoldState.BOOKED:
                continue
            if hold is not None and hold.ended_ms and hold.ended_ms > now_ms - grace_ms:
                continue  # ended in Redis a moment ago; Postgres follows
            detail = {"postgres": row["status"], "redis": hold.state.value if hold else None}
            report.items.append(ReconcileItem(MISSING_IN_REDIS, booking_id, detail))
        for hold_id, hold in snap.redis_holds.items():
            if hold.state is not HoldState.BOOKED or hold.confirmed_ms > now_ms - grace_ms:
                continue
            row = snap.bookings.get(hold_id)
            if row is None:
                detail = {"present_in": "redis", "slot_id": hold.slot_id}
                report.items.append(ReconcileItem(MISSING_IN_POSTGRES, hold_id, detail))
            elif row["status"] not in _HOLDING:
                detail = {"postgres": row["status"], "redis": hold.state.value}
                report.items.append(ReconcileItem(STATUS_MISMATCH, hold_id, detail))

    # -- fixing -----------------------------------------------------------------------

    async def _fix(self, snap: _Snapshot, report: ReconcileReport) -> None:
        his_by_id = {s.schedule_id: s for s in snap.his_schedules}
        capacity_items: dict[str, list[ReconcileItem]] = {}
        for item in report.items:
            if not self.policy.allows(item.kind):
                continue
            if item.kind in (CAPACITY_CHANGED, OTHER_CHANNEL):
                capacity_items.setdefault(item.detail["schedule_id"], []).append(item)
                continue
            try:
                done = await self._fix_one(item, snap, his_by_id)
            except (InventoryError, asyncpg.PostgresError, redis.exceptions.RedisError) as error:
                item.action, item.error = "fix_failed", _error(error)
                continue
            item.action = "fixed" if done is None else "fix_failed"
            item.error = done or ""
        for schedule_id, items in capacity_items.items():
            await self._fix_capacity(his_by_id[schedule_id], snap, items)

    async def _fix_one(
        self, item: ReconcileItem, snap: _Snapshot, his_by_id: Mapping[str, HisSchedule]
    ) -> str | None:
        """Apply one fix; None when it worked, else why not."""
        kind, subject = item.kind, item.subject
        if kind == NEW_SCHEDULE:
            sync_report = SyncReport(item_day(item), item_day(item))
            await self.sync.apply(his_by_id[subject], None, (), sync_report)
            return None if subject in sync_report.created else _why(sync_report)
        if kind == SCHEDULE_SUSPENDED:
            await self.sync.suspend(subject, his_by_id[subject].status_reason)
            return None
        if kind == SCHEDULE_RESUMED:
            tag = await self.sync.catalogue.set_status(subject, "open", "his_resumed", source="his")
            return None if tag is not None else "no such schedule"
        if kind == MISSING_IN_HIS:
            async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
                row = await connection.fetchrow(QUERIES["requeue_his_submission"], subject)
            item.detail["fix"] = "requeued for the submitter"
            return None if row is not None else "the booking is no longer sent or confirmed"
        if kind == MISSING_IN_POSTGRES:
            if item.detail.get("present_in") == "redis":
                await PgBookings(self.pool).record(snap.redis_holds[subject])
                return None
            await self.his.cancel_appointment(subject, "no such booking at the platform")
            return None
        if kind == STATUS_MISMATCH:
            return await self._fix_status(item, snap)
        if kind == VISIT_OUTCOME:
            appointment = next(
                a
                for a in snap.his_appointments
                if a.channel == "platform" and a.booking_id == subject
            )
            done = await apply_visit(self.pool, appointment)
            return None if done is not None else "the booking can no longer take the visit"
        return "not fixable"

    async def _fix_status(self, item: ReconcileItem, snap: _Snapshot) -> str | None:
        subject, detail = item.subject, item.detail
        row = snap.bookings.get(subject)
        if detail.get("redis") == "booked":
            reason = reason_code(row["cancel_reason"]) if row is not None else "reconciled"
            return None if await release_unit(self.store, subject, reason) else "release failed"
        if detail.get("postgres") in ("cancelled", "rejected"):
            await self.his.cancel_appointment(detail["appointment_id"], "cancelled at the platform")
            return None
        ended = await end_booking(
            self.pool,
            self.store,
            subject,
            outcome="cancelled",
            code=HIS_CANCELLED,
            message=detail.get("his_reason"),
            from_status=detail.get("postgres"),
        )
        return None if ended is not None else "the booking is no longer open"

    async def _fix_capacity(
        self, schedule: HisSchedule, snap: _Snapshot, items: list[ReconcileItem]
    ) -> None:
        """One write per schedule: each slot's capacity from the HIS capacity and the
        other channels the policy lets us follow."""
        values = self.sync.schedule_values(schedule)
        rows = {r["id"]: r for r in snap.slots.get(schedule.schedule_id, ())}
        his_slots = {s.slot_id: s for s in schedule.slots}
        flagged: dict[str, set[str]] = {}
        for item in items:
            flagged.setdefault(item.subject, set()).add(item.kind)
        if values is None:
            for item in items:
                item.action, item.error = "fix_failed", "unknown doctor or department"
            return
        slots: list[dict[str, Any]] = []
        records: dict[str, tuple[int, int]] = {}
        others: dict[str, int] = {}
        for a in snap.his_appointments:
            if a.channel != "platform" and a.active and a.slot_id:
                others[a.slot_id] = others.get(a.slot_id, 0) + 1
        for slot_id, his_slot in his_slots.items():
            row = rows.get(slot_id)
            recorded = kept_back = ours = None
            if row is not None:
                ours, recorded = int(row["capacity"]), row["his_capacity"]
                kept_back = int(row["other_channel"]) if recorded is not None else 0
            kept_back = kept_back or 0
            his_capacity = int(recorded) if recorded is not None else (ours or 0) + kept_back
            kinds = flagged.get(slot_id, set())
            if CAPACITY_CHANGED in kinds:
                his_capacity = his_slot.capacity
            if OTHER_CHANNEL in kinds:
                kept_back = others.get(slot_id, 0)
            target = max(0, his_capacity - kept_back) if kinds else ours
            slots.append(
                {
                    "slot_id": slot_id,
                    "starts_at": his_slot.starts_at,
                    "ends_at": his_slot.ends_at,
                    "capacity": target if target is not None else his_slot.capacity,
                }
            )
            if kinds:
                records[slot_id] = (his_capacity, kept_back)
        sync_report = SyncReport(schedule.visit_date, schedule.visit_date)
        wanted = {s["slot_id"]: s["capacity"] for s in slots}
        try:
            written = await self.sync.write(values, slots, sync_report)
            if written:
                await self.sync.record_his_slots(records)
        except (InventoryError, asyncpg.PostgresError, redis.exceptions.RedisError) as error:
            for item in items:
                item.action, item.error = "fix_failed", _error(error)
            return
        refused = {r["slot_id"]: r for r in sync_report.capacity_refused}
        for item in items:
            if not written:
                item.action, item.error = "fix_failed", _why(sync_report)
            elif item.subject in refused:
                got = refused[item.subject]
                item.action = "fix_failed"
                item.error = f"capacity_below_taken: wanted {got['wanted']}, {got['taken']} taken"
            else:
                item.action = "fixed"
                item.detail["capacity_now"] = wanted[item.subject]

    async def _finish(self, report: ReconcileReport, status: str, error: str) -> None:
        with contextlib.suppress(InventoryError, asyncpg.PostgresError):
            async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
                if report.items and status == "completed":
                    await connection.execute(
                        QUERIES["add_reconciliation_items"],
                        report.run_id,
                        [i.kind for i in report.items],
                        [i.subject for i in report.items],
                        [i.detail for i in report.items],
                        [i.action for i in report.items],
                        [i.error for i in report.items],
                    )
                await connection.execute(
                    QUERIES["finish_reconciliation_run"],
                    report.run_id,
                    status,
                    {k: v for k, v in report.counts.items() if v},
                    {k: v for k, v in report.fixed.items() if v},
                    error[:1000],
                )


async def reconcile(
    his: HisClient,
    pool: asyncpg.Pool,
    store: SlotStore,
    sync: ScheduleSync,
    *,
    policy: ReconcilePolicy | None = None,
    fix: bool = True,
    first_day: date | None = None,
    last_day: date | None = None,
    config: ReconcileConfig | None = None,
) -> ReconcileReport:
    """One reconciliation run (see :class:`Reconciler`)."""
    reconciler = Reconciler(his, pool, store, sync, policy=policy, config=config)
    return await reconciler.reconcile(fix=fix, first_day=first_day, last_day=last_day)


async def run_reconciler(
    reconciler: Reconciler,
    *,
    stop: asyncio.Event,
    interval_s: float | None = None,
    stats: ReconcileStats | None = None,
) -> None:
    """Reconcile (with fixes as the policy allows) every ``interval_s`` until ``stop``;
    a failed run is logged, counted and tried again at the next interval."""
    stats = stats if stats is not None else ReconcileStats()
    interval = interval_s if interval_s is not None else reconciler.config.interval_s
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        started = time.monotonic()
        stats.runs += 1
        try:
            report = await reconciler.reconcile(fix=True)
        except TRANSIENT_ERRORS as error:
            stats.failures += 1
            stats.last_error = _error(error)
            log.warning(
                "his.reconcile_failed",
                connection=reconciler.sync.connection,
                error=stats.last_error,
            )
            continue
        stats.last_report = report
        stats.last_success_at = time.time()
        stats.last_duration_s = time.monotonic() - started
        log.info(
            "his.reconciled",
            connection=reconciler.sync.connection,
            run=report.run_id,
            seconds=round(stats.last_duration_s, 3),
            found={k: v for k, v in report.counts.items() if v},
            fixed={k: v for k, v in report.fixed.items() if v},
        )


def item_day(item: ReconcileItem) -> date:
    """The visit date a new-schedule item names."""
    return date.fromisoformat(item.detail["visit_date"])


def _why(report: SyncReport) -> str:
    return "; ".join(s["why"] for s in report.skipped) or "not written"


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "DEFAULT_FIX",
    "FIXABLE",
    "KINDS",
    "ReconcileConfig",
    "ReconcileItem",
    "ReconcilePolicy",
    "ReconcileReport",
    "ReconcileStats",
    "Reconciler",
    "reconcile",
    "run_reconciler",
]
