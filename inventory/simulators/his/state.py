"""The simulator's system of record: one SQLite file (stdlib ``sqlite3``), WAL, fsync on
commit, so what the simulator answered survives a restart (and what it committed before
dropping an answer is there too).

Rows, not FHIR documents: the HIS's logic (capacity, suspension, appointment numbers)
works on columns, and :mod:`inventory.simulators.his.render` draws the resources from them.
The server is one asyncio process and every method here is synchronous, so each method
is atomic with respect to the others; transactions make each one atomic on disk too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS organization (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, part_of TEXT, sort INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS location (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, organization_id TEXT NOT NULL,
    address TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS practitioner (
    id TEXT PRIMARY KEY, family TEXT NOT NULL, given TEXT NOT NULL, gender TEXT NOT NULL,
    title_code TEXT NOT NULL, specialty TEXT NOT NULL, department_id TEXT NOT NULL,
    location_id TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedule (
    id TEXT PRIMARY KEY, practitioner_id TEXT NOT NULL, location_id TEXT NOT NULL,
    visit_date TEXT NOT NULL, session TEXT NOT NULL, starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL, release_at TEXT NOT NULL, cancel_deadline TEXT NOT NULL,
    fee_fen INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 1, status_reason TEXT,
    next_number INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS schedule_by_date ON schedule (visit_date);
CREATE TABLE IF NOT EXISTS slot (
    id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL, starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL, capacity INTEGER NOT NULL, booked INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS slot_by_schedule ON slot (schedule_id);
CREATE TABLE IF NOT EXISTS appointment (
    id TEXT PRIMARY KEY, slot_id TEXT NOT NULL, schedule_id TEXT NOT NULL,
    status TEXT NOT NULL, number INTEGER NOT NULL, channel TEXT NOT NULL,
    identifier_system TEXT NOT NULL, identifier_value TEXT NOT NULL,
    patient_name TEXT, patient_system TEXT, patient_value TEXT,
    visit_start TEXT NOT NULL, visit_end TEXT NOT NULL, visit_date TEXT NOT NULL,
    created TEXT NOT NULL, cancel_reason TEXT,
    version INTEGER NOT NULL DEFAULT 1, updated TEXT NOT NULL,
    consultation_start TEXT, consultation_end TEXT,
    UNIQUE (identifier_system, identifier_value));
CREATE INDEX IF NOT EXISTS appointment_by_slot ON appointment (slot_id);
CREATE INDEX IF NOT EXISTS appointment_by_schedule ON appointment (schedule_id);
CREATE INDEX IF NOT EXISTS appointment_by_date ON appointment (visit_date);
"""

Row = dict[str, Any]


class SimRefusal(Exception):
    """The HIS says no. ``reason`` is a refusal code (docs/his.md); nothing changed."""

    def __init__(self, reason: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


class SimNotFound(Exception):
    """No such resource."""


def iso(moment: datetime) -> str:
    """How instants are stored and rendered: seconds, with the hospital's offset."""
    return moment.astimezone(CHINA).isoformat(timespec="seconds")


def now_china() -> datetime:
    """The simulator's clock (wall clock, Asia/Shanghai)."""
    return datetime.now(tz=CHINA)


@dataclass(frozen=True, slots=True)
class NewSlot:
    """A slot to create."""

    slot_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A schedule to create, with its slots."""

    schedule_id: str
    practitioner_id: str
    location_id: str
    visit_date: date
    session: str
    starts_at: datetime
    ends_at: datetime
    release_at: datetime
    cancel_deadline: datetime
    fee_fen: int
    slots: tuple[NewSlot, ...]


class SimState:
    """The simulator's tables and the HIS's rules over them."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(appointment)")}
        if "consultation_start" not in columns:  # a state file older than visits
            self._db.execute("ALTER TABLE appointment ADD COLUMN consultation_start TEXT")
            self._db.execute("ALTER TABLE appointment ADD COLUMN consultation_end TEXT")

    def close(self) -> None:
        """Close the database (everything is already committed)."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        row = self._db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _counter(self, db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        value = int(row["value"]) + 1 if row is not None else 1
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
        return value

    # ----------------------------------------------------------------------------------
    # catalogue
    # ----------------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when nothing was ever seeded."""
        return self._one("SELECT 1 AS x FROM organization LIMIT 1") is None

    def get_meta(self, key: str) -> str | None:
        """A value of the meta table (e.g. ``seeded``)."""
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row is not None else None

    def add_catalogue(
        self,
        organizations: Sequence[Row],
        locations: Sequence[Row],
        practitioners: Sequence[Row],
        *,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Insert (or replace) organizations, locations and practitioners in one step."""
        stamp = iso(now_china())
        with self._tx() as db:
            for o in organizations:
                db.execute(
                    "INSERT OR REPLACE INTO organization (id, name, part_of, sort, updated) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (o["id"], o["name"], o.get("part_of"), o.get("sort", 0), stamp),
                )
            for loc in locations:
                db.execute(
                    "INSERT OR REPLACE INTO location (id, name, organization_id, address, updated) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (loc["id"], loc["name"], loc["organization_id"], loc["address"], stamp),
                )
            for p in practitioners:
                db.execute(
                    "INSERT OR REPLACE INTO practitioner (id, family, given, gender, title_code,"
                    " specialty, department_id, location_id, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        p["id"],
                        p["family"],
                        p["given"],
                        p["gender"],
                        p["title_code"],
                        p["specialty"],
                        p["department_id"],
                        p["location_id"],
                        stamp,
                    ),
                )
            for key, value in (meta or {}).items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_schedules(self, schedules: Sequence[NewSchedule]) -> int:
        """Insert schedules with their slots (existing ids are left alone); how many new."""
        stamp = iso(now_china())
        added = 0
        with self._tx() as db:
            for s in schedules:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO schedule (id, practitioner_id, location_id, visit_date,"
                    " session, starts_at, ends_at, release_at, cancel_deadline, fee_fen, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.schedule_id,
                        s.practitioner_id,
                        s.location_id,
                        s.visit_date.isoformat(),
                        s.session,
                        iso(s.starts_at),
                        iso(s.ends_at),
                        iso(s.release_at),
                        iso(s.cancel_deadline),
                        s.fee_fen,
                        stamp,
                    ),
                )
                if cursor.rowcount == 0:
                    continue
                added += 1
                for slot in s.slots:
                    db.execute(
                        "INSERT INTO slot (id, schedule_id, starts_at, ends_at, capacity, updated)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            slot.slot_id,
                            s.schedule_id,
                            iso(slot.starts_at),
                            iso(slot.ends_at),
                            slot.capacity,
                            stamp,
                        ),
                    )
        return added

    def organizations(self, *, ids: Sequence[str] = ()) -> list[Row]:
        """The hospital and its departments (hospital first)."""
        where, args = _in("id", ids)
        return self._all(f"SELECT * FROM organization {where} ORDER BY sort, id", args)

    def locations(self, *, ids: Sequence[str] = (), organization: str | None = None) -> list[Row]:
        """Locations, optionally by id or managing department."""
        clauses, args = _clauses(("id", ids))
        if organization is not None:
            clauses.append("organization_id = ?")
            args.append(organization)
        return self._all(f"SELECT * FROM location {_where(clauses)} ORDER BY id", args)

    def practitioners(self, *, ids: Sequence[str] = (), department: str | None = None) -> list[Row]:
        """Doctors with their department's name."""
        clauses, args = _clauses(("p.id", ids))
        if department is not None:
            clauses.append("p.department_id = ?")
            args.append(department)
        return self._all(
            "SELECT p.*, o.name AS department_name, l.name AS location_name"
            " FROM practitioner p JOIN organization o ON o.id = p.department_id"
            f" JOIN location l ON l.id = p.location_id {_where(clauses)} ORDER BY p.id",
            args,
        )

    # ----------------------------------------------------------------------------------
    # schedules and slots
    # ----------------------------------------------------------------------------------

    _SCHEDULE_SELECT = (
        "SELECT s.*, p.family || p.given AS doctor_name, p.department_id,"
        " l.name AS location_name FROM schedule s"
        " JOIN practitioner p ON p.id = s.practitioner_id"
        " JOIN location l ON l.id = s.location_id"
    )

    def schedules(
        self,
        *,
        ids: Sequence[str] = (),
        date_bounds: Sequence[tuple[str, str]] = (),
        practitioners: Sequence[str] = (),
        locations: Sequence[str] = (),
        active: bool | None = None,
    ) -> list[Row]:
        """Schedules by id, visit-date comparisons (``(op, yyyy-mm-dd)``), actor, status."""
        clauses, args = _clauses(
            ("s.id", ids), ("s.practitioner_id", practitioners), ("s.location_id", locations)
        )
        for op, day in date_bounds:
            clauses.append(f"s.visit_date {op} ?")
            args.append(day)
        if active is not None:
            clauses.append("s.active = ?")
            args.append(1 if active else 0)
        return self._all(
            f"{self._SCHEDULE_SELECT} {_where(clauses)} ORDER BY s.starts_at, s.id", args
        )

    def schedule(self, schedule_id: str) -> Row:
        """One schedule, or SimNotFound."""
        rows = self.schedules(ids=[schedule_id])
        if not rows:
            raise SimNotFound(f"Schedule/{schedule_id}")
        return rows[0]

    _SLOT_SELECT = (
        "SELECT sl.*, s.active AS schedule_active FROM slot sl"
        " JOIN schedule s ON s.id = sl.schedule_id"
    )

    def slots(
        self,
        *,
        ids: Sequence[str] = (),
        schedules: Sequence[str] = (),
        date_bounds: Sequence[tuple[str, str]] = (),
    ) -> list[Row]:
        """Slots by id, schedule or the visit date of their schedule."""
        clauses, args = _clauses(("sl.id", ids), ("sl.schedule_id", schedules))
        for op, day in date_bounds:
            clauses.append(f"s.visit_date {op} ?")
            args.append(day)
        return self._all(
            f"{self._SLOT_SELECT} {_where(clauses)} ORDER BY sl.starts_at, sl.id", args
        )

    def slot(self, slot_id: str) -> Row:
        """One slot, or SimNotFound."""
        rows = self.slots(ids=[slot_id])
        if not rows:
            raise SimNotFound(f"Slot/{slot_id}")
        return rows[0]

    def set_schedule_active(
        self, schedule_id: str, active: bool, reason: str | None, *, cancel_appointments: bool
    ) -> list[str]:
        """Suspend (停诊) or resume a schedule; optionally cancel its appointments too.
        Returns the ids of the appointments cancelled."""
        stamp = iso(now_china())
        with self._tx() as db:
            row = db.execute("SELECT id FROM schedule WHERE id = ?", (schedule_id,)).fetchone()
            if row is None:
                raise SimNotFound(f"Schedule/{schedule_id}")
            db.execute(
                "UPDATE schedule SET active = ?, status_reason = ?, version = version + 1,"
                " updated = ? WHERE id = ?",
                (1 if active else 0, reason, stamp, schedule_id),
            )
            db.execute(
                "UPDATE slot SET version = version + 1, updated = ? WHERE schedule_id = ?",
                (stamp, schedule_id),
            )
            cancelled: list[str] = []
            if cancel_appointments and not active:
                for appointment in db.execute(
                    "SELECT id FROM appointment WHERE schedule_id = ? AND status = 'booked'",
                    (schedule_id,),
                ).fetchall():
                    self._cancel_in(db, appointment["id"], reason or "停诊", stamp)
                    cancelled.append(appointment["id"])
            return cancelled

    def change_capacity(
        self, slot_id: str, *, add: int | None = None, to: int | None = None
    ) -> Row:
        """加号 (``add`` > 0), a reduction (``add`` < 0) or a new capacity (``to``). A
        capacity below what is booked is allowed: the slot reads overbooked."""
        stamp = iso(now_china())
        with self._tx() as db:
            row = db.execute("SELECT capacity FROM slot WHERE id = ?", (slot_id,)).fetchone()
            if row is None:
                raise SimNotFound(f"Slot/{slot_id}")
            capacity = int(row["capacity"]) + (add or 0) if to is None else to
            if capacity < 0:
                raise SimRefusal("invalid", "capacity would be negative", status=422)
            db.execute(
                "UPDATE slot SET capacity = ?, version = version + 1, updated = ? WHERE id = ?",
                (capacity, stamp, slot_id),
            )
        return self.slot(slot_id)

    # ----------------------------------------------------------------------------------
    # appointments
    # ----------------------------------------------------------------------------------

    def create_appointment(
        self,
        *,
        system: str,
        value: str,
        slot_id: str,
        channel: str,
        patient_name: str | None = None,
        patient_system: str | None = None,
        patient_value: str | None = None,
        now: datetime | None = None,
    ) -> tuple[Row, bool]:
        """Book one unit of a slot; ``(appointment, created)``. An appointment that
        already carries ``system|value`` is returned as it is (``created`` False): this
        is what makes If-None-Exist creates idempotent."""
        moment = now or now_china()
        stamp = iso(moment)
        with self._tx() as db:
            existing = db.execute(
                "SELECT id FROM appointment WHERE identifier_system = ? AND identifier_value = ?",
                (system, value),
            ).fetchone()
            if existing is not None:
                return self.appointment(existing["id"]), False
            slot = db.execute(
                "SELECT sl.*, s.active, s.status_reason FROM slot sl"
                " JOIN schedule s ON s.id = sl.schedule_id WHERE sl.id = ?",
                (slot_id,),
            ).fetchone()
            if slot is None:
                raise SimRefusal("not-found", f"no Slot/{slot_id}", status=422)
            if not slot["active"]:
                reason = slot["status_reason"] or "停诊"
                raise SimRefusal("suspended", f"the doctor's session is suspended: {reason}")
            starts_at = datetime.fromisoformat(slot["starts_at"])
            ends_at = datetime.fromisoformat(slot["ends_at"])
            if starts_at <= moment:
                raise SimRefusal("past", "the slot has already started")
            capacity, booked = int(slot["capacity"]), int(slot["booked"])
            if booked >= capacity:
                raise SimRefusal("full", f"Slot/{slot_id} is full ({booked}/{capacity})")
            # Patients of a slot are seen one after another: the k-th booked is called
            # at start + k * (window / capacity).
            per_patient = (ends_at - starts_at) / max(capacity, 1)
            visit_start = starts_at + per_patient * booked
            number = db.execute(
                "UPDATE schedule SET next_number = next_number + 1 WHERE id = ?"
                " RETURNING next_number - 1 AS number",
                (slot["schedule_id"],),
            ).fetchone()["number"]
            appointment_id = f"appt-{self._counter(db, 'appointment_seq')}"
            db.execute(
                "INSERT INTO appointment (id, slot_id, schedule_id, status, number, channel,"
                " identifier_system, identifier_value, patient_name, patient_system,"
                " patient_value, visit_start, visit_end, visit_date, created, updated)"
                " VALUES (?, ?, ?, 'booked', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    appointment_id,
                    slot_id,
                    slot["schedule_id"],
                    number,
                    channel,
                    system,
                    value,
                    patient_name,
                    patient_system,
                    patient_value,
                    iso(visit_start),
                    iso(visit_start + per_patient),
                    visit_start.astimezone(CHINA).date().isoformat(),
                    stamp,
                    stamp,
                ),
            )
            db.execute(
                "UPDATE slot SET booked = booked + 1, version = version + 1, updated = ?"
                " WHERE id = ?",
                (stamp, slot_id),
            )
        return self.appointment(appointment_id), True

    def next_external_id(self, channel: str) -> str:
        """A fresh identifier value for another channel's booking (W000001, P000001)."""
        with self._tx() as db:
            return f"{channel[:1].upper()}{self._counter(db, f'{channel}_seq'):06d}"

    def cancel_appointment(
        self, appointment_id: str, reason: str, *, now: datetime | None = None, force: bool = False
    ) -> Row:
        """Cancel (idempotent). Refused once the visit has started, unless ``force``
        (the hospital itself cancelling)."""
        moment = now or now_china()
        with self._tx() as db:
            row = db.execute(
                "SELECT status, visit_start FROM appointment WHERE id = ?", (appointment_id,)
            ).fetchone()
            if row is None:
                raise SimNotFound(f"Appointment/{appointment_id}")
            if row["status"] != "cancelled":
                if not force and datetime.fromisoformat(row["visit_start"]) <= moment:
                    raise SimRefusal("past", "the visit has already started")
                self._cancel_in(db, appointment_id, reason, iso(moment))
        return self.appointment(appointment_id)

    def _cancel_in(
        self, db: sqlite3.Connection, appointment_id: str, reason: str, stamp: str
    ) -> None:
        slot_id = db.execute(
            "UPDATE appointment SET status = 'cancelled', cancel_reason = ?,"
            " version = version + 1, updated = ? WHERE id = ? AND status = 'booked'"
            " RETURNING slot_id",
            (reason, stamp, appointment_id),
        ).fetchone()
        if slot_id is not None:
            db.execute(
                "UPDATE slot SET booked = booked - 1, version = version + 1, updated = ?"
                " WHERE id = ?",
                (stamp, slot_id["slot_id"]),
            )

    #: Visit statuses the hospital sets (FHIR Appointment.status) and the ones each may
    #: follow: arrived at check-in (签到/取号), fulfilled after the consultation, noshow
    #: when the patient never came (the unit is free again).
    VISIT_STATUSES: ClassVar[dict[str, tuple[str, ...]]] = {
        "arrived": ("booked",),
        "fulfilled": ("booked", "arrived"),
        "noshow": ("booked",),
    }

    def mark_visit(
        self,
        appointment_id: str,
        status: str,
        *,
        consultation: tuple[str | None, str | None] = (None, None),
        now: datetime | None = None,
    ) -> Row:
        """The hospital records the visit: ``arrived``, ``fulfilled`` (with the
        consultation's start and end when given) or ``noshow``. Idempotent; refused
        from a status it cannot follow (a cancelled appointment, say)."""
        if status not in self.VISIT_STATUSES:
            raise ValueError(f"status must be one of {sorted(self.VISIT_STATUSES)}")
        stamp = iso(now or now_china())
        start, end = consultation
        with self._tx() as db:
            row = db.execute(
                "SELECT status, slot_id FROM appointment WHERE id = ?", (appointment_id,)
            ).fetchone()
            if row is None:
                raise SimNotFound(f"Appointment/{appointment_id}")
            if row["status"] != status and row["status"] not in self.VISIT_STATUSES[status]:
                raise SimRefusal("conflict", f"the appointment is {row['status']}")
            db.execute(
                "UPDATE appointment SET status = ?,"
                " consultation_start = COALESCE(?, consultation_start),"
                " consultation_end = COALESCE(?, consultation_end),"
                " version = version + 1, updated = ? WHERE id = ?",
                (status, start, end, stamp, appointment_id),
            )
            if status == "noshow" and row["status"] != "noshow":
                db.execute(
                    "UPDATE slot SET booked = booked - 1, version = version + 1, updated = ?"
                    " WHERE id = ?",
                    (stamp, row["slot_id"]),
                )
        return self.appointment(appointment_id)

    def delete_appointment(self, appointment_id: str) -> None:
        """Lose an appointment altogether (a divergence for the reconciler to find)."""
        stamp = iso(now_china())
        with self._tx() as db:
            row = db.execute(
                "DELETE FROM appointment WHERE id = ? RETURNING slot_id, status",
                (appointment_id,),
            ).fetchone()
            if row is None:
                raise SimNotFound(f"Appointment/{appointment_id}")
            if row["status"] == "booked":
                db.execute(
                    "UPDATE slot SET booked = booked - 1, version = version + 1, updated = ?"
                    " WHERE id = ?",
                    (stamp, row["slot_id"]),
                )

    _APPOINTMENT_SELECT = (
        "SELECT a.*, s.practitioner_id, s.location_id, p.family || p.given AS doctor_name,"
        " l.name AS location_name FROM appointment a"
        " JOIN schedule s ON s.id = a.schedule_id"
        " JOIN practitioner p ON p.id = s.practitioner_id"
        " JOIN location l ON l.id = s.location_id"
    )

    def appointments(
        self,
        *,
        ids: Sequence[str] = (),
        identifiers: Sequence[tuple[str | None, str]] = (),
        date_bounds: Sequence[tuple[str, str]] = (),
        slots: Sequence[str] = (),
        schedules: Sequence[str] = (),
        statuses: Sequence[str] = (),
    ) -> list[Row]:
        """Appointments by id, identifier (system may be None: any), visit date, slot,
        schedule, status. Identifiers match the booking identifier or the number."""
        clauses, args = _clauses(
            ("a.id", ids),
            ("a.slot_id", slots),
            ("a.schedule_id", schedules),
            ("a.status", statuses),
        )
        for op, day in date_bounds:
            clauses.append(f"a.visit_date {op} ?")
            args.append(day)
        if identifiers:
            ors = []
            for system, value in identifiers:
                if system is None:
                    ors.append("a.identifier_value = ?")
                    args.append(value)
                else:
                    ors.append("(a.identifier_system = ? AND a.identifier_value = ?)")
                    args.extend((system, value))
            clauses.append("(" + " OR ".join(ors) + ")")
        return self._all(
            f"{self._APPOINTMENT_SELECT} {_where(clauses)} ORDER BY a.visit_start, a.id", args
        )

    def appointment(self, appointment_id: str) -> Row:
        """One appointment, or SimNotFound."""
        rows = self.appointments(ids=[appointment_id])
        if not rows:
            raise SimNotFound(f"Appointment/{appointment_id}")
        return rows[0]

    # ----------------------------------------------------------------------------------
    # the admin's view
    # ----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts for tests and demos, and the one invariant: each slot's booked count
        equals its booked appointments."""
        one = self._one
        by_status = {
            f"{r['channel']}:{r['status']}": r["n"]
            for r in self._all(
                "SELECT channel, status, COUNT(*) AS n FROM appointment GROUP BY channel, status"
            )
        }
        drift = one(
            "SELECT COUNT(*) AS n FROM slot sl WHERE sl.booked != (SELECT COUNT(*) FROM"
            " appointment a WHERE a.slot_id = sl.id"
            " AND a.status IN ('booked', 'arrived', 'fulfilled'))"
        )
        days = one("SELECT MIN(visit_date) AS first, MAX(visit_date) AS last FROM schedule")
        totals = one(
            "SELECT COUNT(*) AS slots, COALESCE(SUM(capacity), 0) AS capacity,"
            " COALESCE(SUM(booked), 0) AS booked FROM slot"
        )
        return {
            "hospitals": _n(one("SELECT COUNT(*) AS n FROM organization WHERE part_of IS NULL")),
            "departments": _n(
                one("SELECT COUNT(*) AS n FROM organization WHERE part_of IS NOT NULL")
            ),
            "practitioners": _n(one("SELECT COUNT(*) AS n FROM practitioner")),
            "locations": _n(one("SELECT COUNT(*) AS n FROM location")),
            "schedules": _n(one("SELECT COUNT(*) AS n FROM schedule")),
            "schedules_suspended": _n(one("SELECT COUNT(*) AS n FROM schedule WHERE active = 0")),
            "first_day": days["first"] if days else None,
            "last_day": days["last"] if days else None,
            "slots": totals["slots"] if totals else 0,
            "capacity": totals["capacity"] if totals else 0,
            "booked": totals["booked"] if totals else 0,
            "appointments": _n(one("SELECT COUNT(*) AS n FROM appointment")),
            "appointments_by_channel_status": by_status,
            "slots_with_count_drift": _n(drift),
        }


def _n(row: Row | None) -> int:
    return int(row["n"]) if row is not None else 0


def _in(column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    clauses, args = _clauses((column, values))
    return _where(clauses), args


def _clauses(*pairs: tuple[str, Sequence[str]]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, values in pairs:
        if values:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            args.extend(values)
    return clauses, args


def _where(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def session_bounds(day: date, session: str) -> tuple[datetime, datetime]:
    """When a session runs (hospital time)."""
    start, hours = {
        "morning": ((8, 0), 4.0),
        "afternoon": ((13, 30), 4.0),
        "evening": ((18, 30), 3.0),
    }[session]
    starts_at = datetime(day.year, day.month, day.day, start[0], start[1], tzinfo=CHINA)
    return starts_at, starts_at + timedelta(hours=hours)
