"""The inventory's value types: pure data, no I/O.

Durations are seconds in Python (policy, config) and milliseconds only at the Lua
boundary; instants from the store are epoch milliseconds (``*_ms``) because that is
the clock the scripts judge deadlines by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol


class HoldState(StrEnum):
    """Where a hold is in its life. ``booked`` is a paid hold: a booking."""

    HELD = "held"  #: a unit taken for one patient while they pay
    BOOKED = "booked"  #: paid; goes on to the HIS
    RELEASED = "released"  #: given back before payment
    EXPIRED = "expired"  #: not paid before its deadline
    CANCELLED = "cancelled"  #: a booking given back


OPEN_STATES = frozenset({HoldState.HELD, HoldState.BOOKED})


class WaitlistState(StrEnum):
    """Where a waitlist entry is in its life (lua/includes/waitlist.lua)."""

    WAITING = "waiting"  #: in the schedule's queue
    OFFERED = "offered"  #: a freed unit is held for the patient until the offer's deadline
    TAKEN = "taken"  #: the offer was paid: a booking
    LAPSED = "lapsed"  #: the offer passed its deadline unpaid
    DECLINED = "declined"  #: the patient gave the offer back
    REFUSED = "refused"  #: a patient rule refused the offer (or the join's one-per-day)
    LEFT = "left"  #: the patient left the waitlist


#: Entries still in the running: they count against the patient's limit.
ACTIVE_WAITLIST_STATES = frozenset({WaitlistState.WAITING, WaitlistState.OFFERED})


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    """A patient's place on one schedule's waitlist, as the scripts keep it."""

    entry_id: str
    schedule_id: str
    account_id: str
    patient_id: str
    channel: str
    #: The tag's join order (lower joined earlier).
    seq: int
    state: WaitlistState
    created_ms: int
    #: The hold id of the entry's offer (fixed at join; the hold exists once offered).
    offer_hold_id: str
    #: The slot of the offered unit ("" until offered).
    slot_id: str = ""
    offered_ms: int = 0
    ended_ms: int = 0
    end_reason: str = ""
    #: A doctor's-day entry's doctor ("" for one schedule's entry).
    doctor_id: str = ""
    #: A doctor's-day entry's schedules (it waits on each; () for one schedule's).
    day_schedule_ids: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> WaitlistEntry:
        """Build from the JSON record the scripts keep (see lua/includes/waitlist.lua)."""
        return cls(
            entry_id=str(record["id"]),
            schedule_id=str(record["schedule"]),
            account_id=str(record["account"]),
            patient_id=str(record["patient"]),
            channel=str(record["channel"]),
            seq=int(record["seq"]),
            state=WaitlistState(record["state"]),
            created_ms=int(record["created"]),
            offer_hold_id=str(record["hold"]),
            slot_id=str(record.get("slot", "")),
            offered_ms=int(record.get("offered", 0)),
            ended_ms=int(record.get("ended", 0)),
            end_reason=str(record.get("reason", "")),
            doctor_id=str(record.get("doctor", "")),
            day_schedule_ids=tuple(str(record.get("day", "")).split()),
        )


@dataclass(frozen=True, slots=True)
class WaitlistOutcome:
    """What a waitlist step did: the entry after it, its position while it waits (1 =
    next to be offered; 0 otherwise) and whether it answered an earlier join."""

    entry: WaitlistEntry
    position: int = 0
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SlotCounts:
    """A slot's units. Invariant: remaining + held + booked + waiting == capacity."""

    capacity: int
    remaining: int
    held: int
    booked: int
    waiting: int

    @property
    def conserved(self) -> bool:
        """True when the conservation invariant holds and nothing is negative."""
        parts = (self.remaining, self.held, self.booked, self.waiting)
        return sum(parts) == self.capacity and min(parts) >= 0


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold or booking as the store records it (a booking keeps its hold's id)."""

    hold_id: str
    slot_id: str
    schedule_id: str
    account_id: str
    patient_id: str
    channel: str
    amount_fen: int
    state: HoldState
    created_ms: int
    deadline_ms: int
    extended: bool
    payment_ref: str
    confirmed_ms: int
    ended_ms: int
    end_reason: str
    #: A rescheduled booking (改约): the booking it replaced, and how many moves led to it.
    moved_from: str = ""
    moves: int = 0
    #: A booking ended by a reschedule: the booking that replaced it.
    moved_to: str = ""
    #: A booking being moved to another tag: the new booking's id and until when its
    #: step may still happen (ms); see lua/reschedule_mark.lua.
    moving_to: str = ""
    moving_until_ms: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Hold:
        """Build from the JSON record the scripts keep (see lua/reserve.lua)."""
        return cls(
            hold_id=str(record["id"]),
            slot_id=str(record["slot"]),
            schedule_id=str(record["schedule"]),
            account_id=str(record["account"]),
            patient_id=str(record["patient"]),
            channel=str(record["channel"]),
            amount_fen=int(record["amount"]),
            state=HoldState(record["state"]),
            created_ms=int(record["created"]),
            deadline_ms=int(record["deadline"]),
            extended=bool(record["extended"]),
            payment_ref=str(record["payment_ref"]),
            confirmed_ms=int(record.get("confirmed", 0)),
            ended_ms=int(record["ended"]),
            end_reason=str(record["reason"]),
            moved_from=str(record.get("from", "")),
            moves=int(record.get("moves", 0)),
            moved_to=str(record.get("to", "")),
            moving_to=str(record.get("moving", "")),
            moving_until_ms=int(record.get("moving_until", 0)),
        )

    def is_open(self, now_ms: int) -> bool:
        """Booked, or held and not yet past its deadline (logical expiry)."""
        return self.state is HoldState.BOOKED or (
            self.state is HoldState.HELD and self.deadline_ms > now_ms
        )


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What a hold step did: the hold after it, its slot's counts, and the event."""

    hold: Hold
    counts: SlotCounts
    #: Stream id of the event the step appended (its linearization witness);
    #: ``None`` when the step was a replay and changed nothing.
    event_id: str | None
    #: True when an idempotent retry returned the earlier result.
    replayed: bool


@dataclass(frozen=True, slots=True)
class HospitalPolicy:
    """A hospital's booking rules. Durations in seconds."""

    hold_ttl_s: int = 15 * 60
    #: Hard maximum lifetime of a hold, counted from reserve, extension included.
    max_hold_s: int = 30 * 60
    #: How far a hold's one extension (when payment starts) pushes its deadline.
    extend_s: int = 10 * 60
    #: One open hold or booking per patient per hospital, department and day.
    one_per_day: bool = True
    #: At most this many open holds plus bookings per patient overall; 0 = no limit.
    max_open_per_patient: int = 0
    #: At most this many open holds plus bookings per patient whose visit dates lie
    #: within any 7 consecutive days; 0 = no limit.
    max_in_7_days_per_patient: int = 0
    #: Check the hospital's blacklist (banned until a time) on every reserve.
    blacklist: bool = False
    #: Anti-scalping: freed units wait a random delay in this window (0, 0 = none).
    rerelease_min_s: int = 0
    rerelease_max_s: int = 0
    #: How long the two-step reservation's pending patient token lives.
    token_window_s: int = 10
    #: A queued release's waiting room takes joins from this long before its T0.
    room_window_s: int = 30 * 60
    #: Admit at most (units that can be taken) x this many tickets at once (>= 1).
    room_factor: float = 1.2
    #: How long an admitted ticket's admission token lives.
    room_token_s: int = 60
    #: A booking not checked in this long after its session ends is a no-show.
    no_show_grace_s: int = 30 * 60
    #: The no-show rule (爽约): this many no-shows within ``no_show_window_days`` ban
    #: the patient for ``no_show_ban_days`` (0 = no rule). Bans are checked on every
    #: reserve while the rule or ``blacklist`` is on.
    no_show_ban_count: int = 0
    no_show_window_days: int = 90
    no_show_ban_days: int = 90
    #: A booking may be moved (改约) this many times; 0 = rescheduling is off.
    max_reschedules: int = 1
    #: A move (改约, 替诊) to a dearer window charges the fee difference through a
    #: payment of its own (with payments on); off: it is refused (reschedule_fee_higher).
    charge_fee_difference: bool = True
    #: A waitlist offer's payment deadline (the hold made for a waiting patient).
    waitlist_offer_s: int = 30 * 60
    #: At most this many waitlist entries per patient at once (waiting or offered);
    #: 0 = no limit.
    waitlist_max_per_patient: int = 3

    def __post_init__(self) -> None:
        for name in (
            "hold_ttl_s",
            "max_hold_s",
            "token_window_s",
            "room_token_s",
            "waitlist_offer_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "extend_s",
            "max_open_per_patient",
            "max_in_7_days_per_patient",
            "max_reschedules",
            "rerelease_min_s",
            "rerelease_max_s",
            "no_show_grace_s",
            "no_show_ban_count",
            "waitlist_max_per_patient",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("no_show_window_days", "no_show_ban_days"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_hold_s < self.hold_ttl_s:
            raise ValueError("max_hold_s must be at least hold_ttl_s")
        if self.room_window_s < 0:
            raise ValueError("room_window_s must not be negative")
        if not 1.0 <= self.room_factor <= 10.0:
            raise ValueError("room_factor must be between 1 and 10")
        if self.rerelease_min_s > self.rerelease_max_s:
            raise ValueError("rerelease_min_s must not exceed rerelease_max_s")

    @property
    def spans_tags(self) -> bool:
        """Whether reserve needs the two-step reservation on the patient tag."""
        return (
            self.max_open_per_patient > 0 or self.max_in_7_days_per_patient > 0 or self.checks_bans
        )

    @property
    def checks_bans(self) -> bool:
        """Whether reserve refuses a banned patient: the blacklist or the no-show rule
        is on."""
        return self.blacklist or self.no_show_ban_count > 0


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """One time window of a schedule and how many patients it takes."""

    slot_id: str
    capacity: int


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule (排班) as the store needs it. Instants are timezone-aware."""

    schedule_id: str
    hospital_id: str
    department_id: str
    visit_date: date
    release_at: datetime
    starts_at: datetime
    ends_at: datetime
    cancel_deadline: datetime
    fee_fen: int
    slots: tuple[SlotSpec, ...] = field(default_factory=tuple)


class SlotLocation(NamedTuple):
    """Where a slot lives: enough to name its tag and its hospital's policy."""

    hospital_id: str
    department_id: str
    visit_date: date
    schedule_id: str


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """One patient's request for one unit of one slot."""

    hospital_id: str
    department_id: str
    visit_date: date
    slot_id: str
    account_id: str
    patient_id: str
    channel: str
    idempotency_key: str
    #: A queued release's admission token ("" = none): checked and used by the reserve.
    admission_token: str = ""


@dataclass(frozen=True, slots=True)
class WaitlistJoin:
    """One patient's request to join one schedule's waitlist, or (``doctor_id`` and
    ``day_schedule_ids`` set) any window of a doctor's day."""

    hospital_id: str
    department_id: str
    visit_date: date
    schedule_id: str
    account_id: str
    patient_id: str
    channel: str
    idempotency_key: str
    doctor_id: str = ""
    #: The doctor's schedules that day (``schedule_id`` among them).
    day_schedule_ids: tuple[str, ...] = ()


class Relation(StrEnum):
    """Who the patient is to the account holder (就诊人)."""

    SELF = "self"
    CHILD = "child"
    PARENT = "parent"
    SPOUSE = "spouse"
    OTHER = "other"


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"


class PatientDetails(Protocol):
    """A real-name patient as an account registers it, before any check: what the
    patient record (inventory/record/patients.py) validates, encrypts and links. The
    API's request body is one; the record never needs to know the API's types."""

    @property
    def name(self) -> str: ...
    @property
    def gender(self) -> Gender: ...
    @property
    def birth_date(self) -> date: ...
    @property
    def phone(self) -> str: ...
    @property
    def resident_id(self) -> str: ...
    @property
    def relation(self) -> Relation: ...
