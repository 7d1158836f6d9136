"""Model-based test: a Hypothesis state machine drives every step of the Lua inventory
through the real SlotStore against a pure-Python model that predicts each outcome, and
after every step compares all of the tag's Redis state with the model.

The machine is reused by tests/lua/test_mutants.py, which runs it against seeded Lua
mutants (``lua_root``) to show that it can fail.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from inventory.domain import (
    Hold,
    HoldOutcome,
    HoldState,
    HospitalPolicy,
    ReserveRequest,
    ScheduleSpec,
    SlotCounts,
    SlotSpec,
)
from inventory.errors import InventoryError
from inventory.store import keys
from inventory.store.scripts import Scripts, server_supports_shebang
from inventory.store.slot_store import TOKEN_CLOCK_MARGIN_MS, PolicyBook, SlotStore

from .conftest import CHINA, ManualClock, Scenario, fresh_id, make_store

T = TypeVar("T")

#: Every case starts at T0; schedules are placed minutes around it (drawn per case).
T0 = datetime(2027, 3, 8, 7, 0, tzinfo=CHINA)
T0_MS = int(T0.timestamp() * 1000)
VISIT_DATE = date(2027, 3, 8)
SCHEDULES: dict[str, tuple[str, ...]] = {
    "sched-a": ("slot-a1", "slot-a2"),
    "sched-b": ("slot-b1", "slot-b2"),
}
FEES = {"sched-a": 5000, "sched-b": 1200}
#: A slot id no schedule ever loads: steps on it are refused with slot_not_found.
GHOST_SLOT = "slot-x"
LOADED_SLOTS = tuple(s for slots in SCHEDULES.values() for s in slots)
ALL_SLOTS = (*LOADED_SLOTS, GHOST_SLOT)
ACCOUNTS = ("acct-0", "acct-1", "acct-2")
PATIENT_COUNT = 4
IDEMPOTENCY_KEYS = ("k0", "k1", "k2", "k3")
CHANNELS = ("wechat", "app")
PAY_REFS = ("pay-1", "pay-2")
TOKEN_WINDOW_MS = HospitalPolicy().token_window_s * 1000
INF = math.inf
#: Draws of "which one of the known holds / requests"; PICK_MAX picks an unknown hold.
PICK_MAX = 100
#: When a step happens: now (None), or 1 ms before, at or 1 ms after a deadline.
BOUNDARY_OFFSET = st.sampled_from([None, None, None, -1, 0, 1])
#: The ghost slot is drawn now and then, loaded slots mostly.
SLOT_CHOICE = st.sampled_from([*LOADED_SLOTS, *LOADED_SLOTS, GHOST_SLOT])

#: Settings of the model test against the real scripts (about 30-45 s on standalone).
MODEL_SETTINGS = settings(
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

EVENT_FOR_END = {
    "expired": "hold_expired",
    "released": "hold_released",
    "cancelled": "booking_cancelled",
}

#: An outbox event as compared: (type, hold / slot / schedule id, at ms, the slot's counts
#: after the step or None, the hold's record after the step or None).
Event = tuple[str, str, int, "tuple[int, ...] | None", "Hold | None"]


# -- the pure-Python model ---------------------------------------------------------------


@dataclass
class ModelHold:
    """A hold or booking as the model knows it (mirrors the scripts' JSON record)."""

    id: str
    slot: str
    schedule: str
    account: str
    patient: str
    channel: str
    amount: int
    created: int
    deadline: int
    extended: bool = False
    state: str = "held"
    payment_ref: str = ""
    confirmed: int = 0
    ended: int = 0
    reason: str = ""
    #: Rescheduling (改约): the booking replaced, moves so far, the replacing booking,
    #: and the mark of a move across tags under way (new id, until when).
    from_: str = ""
    moves: int = 0
    to: str = ""
    moving: str = ""
    moving_until: int = 0

    def is_open(self, now: int) -> bool:
        return self.state == "booked" or (self.state == "held" and self.deadline > now)

    def as_hold(self) -> Hold:
        return Hold(
            hold_id=self.id,
            slot_id=self.slot,
            schedule_id=self.schedule,
            account_id=self.account,
            patient_id=self.patient,
            channel=self.channel,
            amount_fen=self.amount,
            state=HoldState(self.state),
            created_ms=self.created,
            deadline_ms=self.deadline,
            extended=self.extended,
            payment_ref=self.payment_ref,
            confirmed_ms=self.confirmed,
            ended_ms=self.ended,
            end_reason=self.reason,
            moved_from=self.from_,
            moves=self.moves,
            moved_to=self.to,
            moving_to=self.moving,
            moving_until_ms=self.moving_until,
        )


@dataclass
class ModelSlot:
    schedule: str
    cap: int
    rem: int
    held: int = 0
    booked: int = 0
    wait: int = 0

    def counts(self) -> SlotCounts:
        return SlotCounts(self.cap, self.rem, self.held, self.booked, self.wait)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.rem, self.held, self.booked, self.wait, self.cap)


@dataclass
class ModelSchedule:
    release_ms: int
    start_ms: int
    cancel_ms: int
    fee: int
    status: str = "open"


@dataclass(frozen=True)
class Expect:
    """A predicted outcome: "ok", "replay" or an error code, and what goes with it."""

    code: str
    hold_id: str | None = None
    #: Entries the error's context must have (e.g. the broken rule).
    context: dict[str, Any] = field(default_factory=dict)


OK = Expect("ok")
REPLAY = Expect("replay")


class Model:
    """The inventory of one department-day tag and its patients' tokens and bans, as
    the scripts' headers and DESIGN.md define it. No I/O; ``now`` is passed in."""

    def __init__(
        self,
        policy: HospitalPolicy,
        hospital: str,
        reclaim_limit: int,
        schedules: dict[str, ModelSchedule],
    ) -> None:
        self.hospital = hospital
        self.ttl_ms = policy.hold_ttl_s * 1000
        self.max_hold_ms = policy.max_hold_s * 1000
        self.extend_ms = policy.extend_s * 1000
        self.one_per_day = policy.one_per_day
        self.rerelease_min_ms = policy.rerelease_min_s * 1000
        self.rerelease_max_ms = policy.rerelease_max_s * 1000
        self.max_open = policy.max_open_per_patient
        self.max_7_days = policy.max_in_7_days_per_patient
        self.blacklist = policy.blacklist
        self.spans_tags = policy.spans_tags
        self.reclaim_limit = reclaim_limit
        self.schedules: dict[str, ModelSchedule] = {}
        self.slots: dict[str, ModelSlot] = {}
        self.holds: dict[str, ModelHold] = {}
        #: Units waiting out the anti-scalping delay: (slot, hold id) -> due ms. The
        #: delay is random (seeded per call by the store); the machine reads each due
        #: time back from Redis right after the step that freed the unit (None until
        #: then) and checks it lies inside the policy's window.
        self.waiting: dict[tuple[str, str], int | None] = {}
        #: Freed units whose due time the machine has to read back: (slot, id, freed at).
        self.unread: list[tuple[str, str, int]] = []
        self.tokens: dict[str, dict[str, float]] = {}
        self.bans: dict[str, dict[str, int]] = {}
        #: Events expected in the outbox since the machine last looked.
        self.events: list[Event] = []
        self.event_total = 0
        #: The case's schedules, known to the tag once loaded.
        self.pending_schedules = schedules

    # -- helpers --------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        key: str,
        now: int,
        slot: str | None = None,
        record: ModelHold | None = None,
    ) -> None:
        counts = self.slots[slot].as_tuple() if slot is not None else None
        snapshot = record.as_hold() if record is not None else None
        self.events.append((event_type, key, now, counts, snapshot))
        self.event_total += 1

    def timers(self) -> dict[str, tuple[int, str, str, str]]:
        """The expirer's index as it must be: member -> (due, slot, kind, id).

        Units freed in the current step (due time not yet read back) are left out:
        they are never due within the step that freed them.
        """
        result: dict[str, tuple[int, str, str, str]] = {}
        for h in self.holds.values():
            if h.state == "held":
                result[f"{h.slot}|h|{h.id}"] = (h.deadline, h.slot, "h", h.id)
        for (slot, hold_id), due in self.waiting.items():
            if due is not None:
                result[f"{slot}|w|{hold_id}"] = (due, slot, "w", hold_id)
        return result

    def slot_timer_members(self) -> set[str]:
        return {
            f"{slot}|{due:015d}|{kind}|{hold_id}"
            for due, slot, kind, hold_id in self.timers().values()
        }

    def patient_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for h in self.holds.values():
            if h.state in ("held", "booked"):
                index.setdefault(h.patient, []).append(h.id)
        return {p: sorted(ids) for p, ids in index.items()}

    def free_unit(self, slot_id: str, hold_id: str, now: int) -> None:
        slot = self.slots[slot_id]
        if self.rerelease_max_ms <= 0:
            slot.rem += 1
            return
        slot.wait += 1
        self.waiting[(slot_id, hold_id)] = None
        self.unread.append((slot_id, hold_id, now))

    def end_hold(self, h: ModelHold, new_state: str, now: int, reason: str) -> None:
        slot = self.slots[h.slot]
        if h.state == "held":
            slot.held -= 1
        else:
            slot.booked -= 1
        h.state, h.ended, h.reason = new_state, now, reason
        self.free_unit(h.slot, h.id, now)
        self.emit(EVENT_FOR_END[new_state], h.id, now, h.slot, h)

    def run_timer(self, slot_id: str, kind: str, hold_id: str, now: int) -> None:
        if kind == "w":
            del self.waiting[(slot_id, hold_id)]
            slot = self.slots[slot_id]
            slot.wait -= 1
            slot.rem += 1
            self.emit("unit_returned", hold_id, now, slot_id)
            return
        h = self.holds[hold_id]
        assert h.state == "held", "model: a timer of an ended hold"
        assert h.deadline <= now, "model: a timer ran early"
        self.end_hold(h, "expired", now, "deadline")

    def reclaim(self, slot_id: str, now: int) -> None:
        due = sorted(
            (d, kind, hold_id)
            for d, slot, kind, hold_id in self.timers().values()
            if slot == slot_id and d <= now
        )
        for _, kind, hold_id in due[: self.reclaim_limit]:
            self.run_timer(slot_id, kind, hold_id, now)

    def counts(self, slot_id: str) -> SlotCounts:
        return self.slots[slot_id].counts()

    # -- set-up steps ---------------------------------------------------------------

    def load(self, schedule_id: str, caps: dict[str, int], now: int) -> Expect:
        for slot_id, cap in caps.items():
            slot = self.slots.get(slot_id)
            if slot is not None and slot.schedule != schedule_id:
                return Expect("slot_schedule_mismatch")
            if slot is not None and cap < slot.held + slot.booked + slot.wait:
                return Expect("capacity_below_taken")
        if schedule_id not in self.schedules:
            self.schedules[schedule_id] = self.pending_schedules[schedule_id]
        for slot_id, cap in caps.items():
            slot = self.slots.get(slot_id)
            if slot is None:
                self.slots[slot_id] = ModelSlot(schedule_id, cap, cap)
            else:
                slot.rem += cap - slot.cap
                slot.cap = cap
        self.emit("schedule_loaded", schedule_id, now)
        return OK

    def adjust(self, slot_id: str, delta: int, now: int) -> Expect:
        slot = self.slots.get(slot_id)
        if slot is None:
            return Expect("slot_not_found")
        if slot.rem + delta < 0:
            return Expect("capacity_below_taken")
        slot.cap += delta
        slot.rem += delta
        self.emit("capacity_adjusted", slot_id, now, slot_id)
        return OK

    def set_status(self, schedule_id: str, status: str, event_type: str, now: int) -> Expect:
        sched = self.schedules[schedule_id]
        if sched.status == status:
            return REPLAY
        sched.status = status
        self.emit(event_type, schedule_id, now)
        return OK

    # -- the patient tag ------------------------------------------------------------

    def ban(self, patient: str, hospital: str, until_ms: int) -> None:
        bans = self.bans.setdefault(patient, {})
        if until_ms == 0:
            bans.pop(hospital, None)
        else:
            bans[hospital] = until_ms

    def reap(self, patient: str, hold_ids: list[str], now: int) -> int:
        """The store's reap: verdicts from the holds, then the script's re-check."""
        tokens = self.tokens.setdefault(patient, {})
        visit_over = datetime.fromtimestamp(now / 1000).date() > VISIT_DATE
        dropped = 0
        for hold_id in hold_ids:
            score = tokens.get(hold_id)
            if score is None:
                continue
            h = self.holds.get(hold_id)
            if h is None:
                verdict = "missing"
            elif h.state == "booked":
                verdict = "ended" if visit_over else "open"
            else:
                verdict = "open" if h.is_open(now) else "ended"
            if verdict == "ended" or (
                verdict == "missing" and score != INF and score + TOKEN_CLOCK_MARGIN_MS < now
            ):
                del tokens[hold_id]
                dropped += 1
            elif verdict == "open" and score != INF:
                tokens[hold_id] = INF
        return dropped

    def near_tokens(self, patient: str, hold_id: str, now: int) -> dict[str, int]:
        """The patient's tokens that a 7-day window around ``hold_id``'s visit date can
        hold: hold id -> days after that date (today or later, at most 6 days apart)."""
        day = visit_date_of(hold_id)
        today = datetime.fromtimestamp(now / 1000, CHINA).date()
        near = {}
        for other in self.tokens.get(patient, {}):
            other_day = visit_date_of(other)
            if other_day >= today and abs((other_day - day).days) <= 6:
                near[other] = (other_day - day).days
        return near

    def over_7_days(self, patient: str, hold_id: str, now: int) -> bool:
        """Whether some 7 consecutive days around ``hold_id``'s visit date already hold
        ``max_7_days`` of the patient's tokens."""
        offsets = self.near_tokens(patient, hold_id, now).values()
        return any(
            sum(first <= d <= first + 6 for d in offsets) >= self.max_7_days
            for first in range(-6, 1)
        )

    def acquire(self, hold_id: str, patient: str, now: int) -> Expect | bool:
        """Step one of the two-step reserve: a refusal, or whether a new token was taken."""
        bans = self.bans.get(patient, {})
        tokens = self.tokens.setdefault(patient, {})
        for attempt in range(2):
            # A retry whose token exists is a replay, answered before the rules.
            if hold_id in tokens:
                return False
            until = max(bans.get(self.hospital, 0), bans.get("*", 0))
            if self.blacklist and until > now:
                return Expect(
                    "patient_rule", context={"rule": "blacklisted", "banned_until_ms": until}
                )
            if self.max_open > 0 and len(tokens) >= self.max_open:
                if attempt == 1:
                    return Expect("patient_rule", context={"rule": "max_open"})
                self.reap(patient, list(tokens), now)
                continue
            if self.max_7_days > 0 and self.over_7_days(patient, hold_id, now):
                if attempt == 1:
                    return Expect(
                        "patient_weekly_limit",
                        context={"rule": "max_in_7_days", "limit": self.max_7_days},
                    )
                self.reap(patient, list(self.near_tokens(patient, hold_id, now)), now)
                continue
            tokens[hold_id] = now + TOKEN_WINDOW_MS
            return True
        raise AssertionError("unreachable")

    # -- the patient's steps --------------------------------------------------------

    def reserve(self, request: ReserveRequest, hold_id: str, now: int) -> Expect:
        fresh = False
        if self.spans_tags:
            acquired = self.acquire(hold_id, request.patient_id, now)
            if isinstance(acquired, Expect):
                return acquired
            fresh = acquired
        expect = self.reserve_script(request, hold_id, now)
        if expect.code not in ("ok", "replay"):
            if fresh:
                del self.tokens[request.patient_id][hold_id]
        elif self.spans_tags:
            if self.holds[hold_id].state in ("held", "booked"):
                self.tokens[request.patient_id][hold_id] = INF
            elif fresh:
                # A replay of a hold that has ended: its fresh token is given back.
                del self.tokens[request.patient_id][hold_id]
        return expect

    def reserve_script(self, request: ReserveRequest, hold_id: str, now: int) -> Expect:
        existing = self.holds.get(hold_id)
        if existing is not None:
            same = (existing.slot, existing.patient, existing.channel) == (
                request.slot_id,
                request.patient_id,
                request.channel,
            )
            if same and existing.account == request.account_id:
                return Expect("replay", hold_id)
            return Expect("idempotency_key_reused")
        slot = self.slots.get(request.slot_id)
        if slot is None:
            return Expect("slot_not_found")
        sched = self.schedules[slot.schedule]
        if sched.status != "open":
            return Expect("schedule_suspended")
        if now < sched.release_ms:
            return Expect("not_released", context={"release_ms": sched.release_ms})
        if now >= sched.start_ms:
            return Expect("schedule_past")
        if self.one_per_day and any(
            h.patient == request.patient_id and h.is_open(now) for h in self.holds.values()
        ):
            return Expect("patient_rule", context={"rule": "one_per_day"})
        if slot.rem <= 0:
            self.reclaim(request.slot_id, now)
            if slot.rem <= 0:
                return Expect("sold_out")
        self.holds[hold_id] = ModelHold(
            id=hold_id,
            slot=request.slot_id,
            schedule=slot.schedule,
            account=request.account_id,
            patient=request.patient_id,
            channel=request.channel,
            amount=sched.fee,
            created=now,
            deadline=now + self.ttl_ms,
        )
        slot.rem -= 1
        slot.held += 1
        self.emit("hold_created", hold_id, now, request.slot_id, self.holds[hold_id])
        return Expect("ok", hold_id)

    def _owned_hold(self, hold_id: str, account: str) -> ModelHold | Expect:
        h = self.holds.get(hold_id)
        if h is None:
            return Expect("hold_not_found")
        if account and h.account != account:
            return Expect("not_owner")
        return h

    def confirm(self, hold_id: str, account: str, payment_ref: str, now: int) -> Expect:
        h = self._owned_hold(hold_id, account)
        if isinstance(h, Expect):
            return h
        if h.state == "booked":
            if h.payment_ref == payment_ref:
                return Expect("replay", hold_id)
            return Expect("already_confirmed")
        if h.state == "expired":
            return Expect("hold_expired")
        if h.state != "held":
            return Expect("hold_not_active", context={"state": h.state})
        if h.deadline <= now:
            self.end_hold(h, "expired", now, "deadline")
            return Expect("hold_expired")
        if self.schedules[h.schedule].status != "open":
            return Expect("schedule_suspended")
        slot = self.slots[h.slot]
        slot.held -= 1
        slot.booked += 1
        h.state, h.payment_ref, h.confirmed = "booked", payment_ref, now
        self.emit("booking_confirmed", hold_id, now, h.slot, h)
        return Expect("ok", hold_id)

    def release(self, hold_id: str, account: str, reason: str, force: bool, now: int) -> Expect:
        h = self._owned_hold(hold_id, account)
        if isinstance(h, Expect):
            return h
        if h.state not in ("held", "booked"):
            return Expect("replay", hold_id)
        if h.state == "held":
            if h.deadline <= now:
                self.end_hold(h, "expired", now, "deadline")
                return Expect("hold_expired")
            self.end_hold(h, "released", now, reason)
        else:
            if not force and h.moving:
                return Expect("reschedule_in_progress")
            sched = self.schedules[h.schedule]
            deadline = min(sched.cancel_ms, sched.start_ms)
            if not force and now > deadline:
                return Expect("cancel_deadline_passed", context={"deadline_ms": deadline})
            self.end_hold(h, "cancelled", now, reason)
        # The store drops the patient's token once the step really ended something.
        self.tokens.get(h.patient, {}).pop(hold_id, None)
        return Expect("ok", hold_id)

    # -- rescheduling (改约) ----------------------------------------------------------

    def move_refusal(
        self, old_id: str, account: str, max_moves: int, force: bool, now: int
    ) -> ModelHold | Expect:
        """The checks of the booking to move (includes/rebook.lua, move_refusal)."""
        h = self._owned_hold(old_id, account)
        if isinstance(h, Expect):
            return h
        if h.state != "booked":
            return Expect("hold_not_active", context={"state": h.state})
        if h.moving:
            return Expect("reschedule_in_progress")
        if not force:
            sched = self.schedules[h.schedule]
            deadline = min(sched.cancel_ms, sched.start_ms)
            if now > deadline:
                return Expect("cancel_deadline_passed", context={"deadline_ms": deadline})
            if h.moves >= max_moves:
                return Expect("reschedule_limit", context={"limit": max_moves})
        return h

    def rebook_refusal(
        self, slot_id: str, patient: str, replaced: str, max_amount: int, now: int
    ) -> Expect | None:
        """The checks of the target slot (includes/rebook.lua, rebook_refusal)."""
        slot = self.slots.get(slot_id)
        if slot is None:
            return Expect("slot_not_found")
        sched = self.schedules[slot.schedule]
        if sched.status != "open":
            return Expect("schedule_suspended")
        if now < sched.release_ms:
            return Expect("not_released", context={"release_ms": sched.release_ms})
        if now >= sched.start_ms:
            return Expect("schedule_past")
        if 0 <= max_amount < sched.fee:
            return Expect("reschedule_fee_higher", context={"fee_fen": sched.fee})
        if self.one_per_day and any(
            h.patient == patient and h.id != replaced and h.is_open(now)
            for h in self.holds.values()
        ):
            return Expect("patient_rule", context={"rule": "one_per_day"})
        return None

    def unit_free(self, slot_id: str, now: int) -> bool:
        slot = self.slots[slot_id]
        if slot.rem <= 0:
            self.reclaim(slot_id, now)
        return slot.rem > 0

    def book_unit(self, new_id: str, old: ModelHold, slot_id: str, now: int) -> None:
        slot = self.slots[slot_id]
        fee = self.schedules[slot.schedule].fee
        self.holds[new_id] = ModelHold(
            id=new_id,
            slot=slot_id,
            schedule=slot.schedule,
            account=old.account,
            patient=old.patient,
            channel=old.channel,
            amount=fee,
            created=now,
            deadline=now,
            state="booked",
            payment_ref=old.payment_ref,
            confirmed=now,
            from_=old.id,
            moves=old.moves + 1,
        )
        slot.rem -= 1
        slot.booked += 1
        self.emit("booking_rescheduled", new_id, now, slot_id, self.holds[new_id])

    def reschedule(
        self,
        old_id: str,
        new_id: str,
        account: str,
        slot_id: str,
        max_moves: int,
        max_amount: int,
        force: bool,
        now: int,
    ) -> Expect:
        """lua/reschedule.lua: cancel the old booking and book the target in one step."""
        if new_id == old_id:
            return Expect("invalid_argument")
        existing = self.holds.get(new_id)
        if existing is not None:
            if existing.from_ == old_id and account in ("", existing.account):
                return Expect("replay", new_id)
            return Expect("idempotency_key_reused")
        old = self.move_refusal(old_id, account, max_moves, force, now)
        if isinstance(old, Expect):
            return old
        if old.slot == slot_id:
            return Expect("invalid_argument")
        refused = self.rebook_refusal(slot_id, old.patient, old_id, max_amount, now)
        if refused is not None:
            return refused
        if not self.unit_free(slot_id, now):
            return Expect("sold_out")
        old.to = new_id
        self.end_hold(old, "cancelled", now, "rescheduled")
        self.book_unit(new_id, old, slot_id, now)
        return Expect("ok", new_id)

    def mark(
        self,
        mode: str,
        old_id: str,
        new_id: str,
        account: str,
        until_ms: int,
        max_moves: int,
        force: bool,
        now: int,
    ) -> Expect:
        """lua/reschedule_mark.lua: begin, finish or abort a move across tags."""
        h = self.holds.get(old_id)
        if mode == "begin":
            if (
                h is not None
                and h.moving == new_id
                and h.state == "booked"
                and account in ("", h.account)
            ):
                return Expect("replay", old_id)
            old = self.move_refusal(old_id, account, max_moves, force, now)
            if isinstance(old, Expect):
                return old
            old.moving, old.moving_until = new_id, until_ms
            return Expect("ok", old_id)
        owned = self._owned_hold(old_id, account)
        if isinstance(owned, Expect):
            return owned
        if mode == "finish":
            if owned.state == "cancelled" and owned.to == new_id:
                return Expect("replay", old_id)
            if owned.state != "booked" or owned.moving != new_id:
                return Expect("hold_not_active", context={"state": owned.state})
            owned.moving, owned.moving_until, owned.to = "", 0, new_id
            self.end_hold(owned, "cancelled", now, "rescheduled")
            return Expect("ok", old_id)
        if owned.state != "booked" or owned.moving != new_id:
            return Expect("replay", old_id)
        if until_ms >= 0 and now <= owned.moving_until + until_ms:
            return Expect("reschedule_in_progress")
        owned.moving, owned.moving_until = "", 0
        return Expect("ok", old_id)

    def take(
        self,
        new_id: str,
        old: ModelHold,
        slot_id: str,
        until_ms: int,
        now: int,
        hold_until: int = 0,
    ) -> Expect:
        """lua/reschedule_take.lua: step two of a move across tags (here into the same
        tag: the script does not know where the old booking lives). ``hold_until`` > 0:
        a charged move, whose unit is held until then (and whose old booking does not
        count against it for one-per-day)."""
        existing = self.holds.get(new_id)
        if existing is not None:
            if existing.from_ == old.id and existing.account == old.account:
                return Expect("replay", new_id)
            return Expect("idempotency_key_reused")
        if now > until_ms:
            return Expect("patient_token_expired")
        if 0 < hold_until <= now:
            return Expect("invalid_argument")
        refused = self.rebook_refusal(slot_id, old.patient, old.id if hold_until else "", -1, now)
        if refused is not None:
            return refused
        if not self.unit_free(slot_id, now):
            return Expect("sold_out")
        if hold_until:
            self.hold_unit(new_id, old, slot_id, now, hold_until)
        else:
            self.book_unit(new_id, old, slot_id, now)
        return Expect("ok", new_id)

    def hold_unit(self, new_id: str, old: ModelHold, slot_id: str, now: int, deadline: int) -> None:
        """A charged move's unit: held until ``deadline`` for the difference's payment."""
        slot = self.slots[slot_id]
        self.holds[new_id] = ModelHold(
            id=new_id,
            slot=slot_id,
            schedule=slot.schedule,
            account=old.account,
            patient=old.patient,
            channel=old.channel,
            amount=self.schedules[slot.schedule].fee,
            created=now,
            deadline=deadline,
            extended=True,
            from_=old.id,
            moves=old.moves + 1,
        )
        slot.rem -= 1
        slot.held += 1
        self.emit("hold_created", new_id, now, slot_id, self.holds[new_id])

    def extend(self, hold_id: str, account: str, now: int) -> Expect:
        h = self._owned_hold(hold_id, account)
        if isinstance(h, Expect):
            return h
        if h.state == "booked":
            return Expect("already_confirmed")
        if h.state == "expired":
            return Expect("hold_expired")
        if h.state != "held":
            return Expect("hold_not_active", context={"state": h.state})
        if h.deadline <= now:
            self.end_hold(h, "expired", now, "deadline")
            return Expect("hold_expired")
        if h.extended:
            return Expect("already_extended")
        new_deadline = min(h.deadline + self.extend_ms, h.created + self.max_hold_ms)
        if new_deadline <= h.deadline:
            return Expect("extension_limit")
        h.deadline, h.extended = new_deadline, True
        self.emit("hold_extended", hold_id, now, h.slot, h)
        return Expect("ok", hold_id)

    def expire(self, batch: int, max_calls: int, now: int) -> tuple[int, int]:
        """The store's expire_tag: bounded batches in (due, member) order."""
        changed = still_due = 0
        for _ in range(max_calls):
            due = sorted((d, member) for member, (d, *_) in self.timers().items() if d <= now)
            for _, member in due[:batch]:
                slot_id, kind, hold_id = member.split("|", 2)
                self.run_timer(slot_id, kind, hold_id, now)
                changed += 1
            still_due = sum(1 for d, *_ in self.timers().values() if d <= now)
            if still_due == 0:
                break
        return changed, still_due


def visit_date_of(hold_id: str) -> date:
    """The visit date a hold id names (its tag's)."""
    return keys.visit_date_of_tag(keys.tag_of_hold(hold_id))


# -- the state machine ---------------------------------------------------------------


def _hold_snapshot(raw: dict[str, str]) -> dict[str, Hold]:
    return {hold_id: Hold.from_record(orjson.loads(record)) for hold_id, record in raw.items()}


class InventoryMachine(RuleBasedStateMachine):
    """Drives a SlotStore (real scripts, or mutants from ``lua_root``) and the Model in
    step, in one department-day tag with two schedules of two slots each.

    Async store calls run on an event loop this machine owns (one per test case, with
    its own Redis client), never on the pytest-asyncio session loop: Hypothesis calls
    rules synchronously.
    """

    def __init__(
        self,
        redis_url: str,
        lua_root: Path | None,
        run_id: str,
        cluster_nodes: list[tuple[str, int]] | None = None,
    ) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client: Any
        if cluster_nodes:
            nodes = [ClusterNode(host, port) for host, port in cluster_nodes]
            self.client = RedisCluster(startup_nodes=nodes, decode_responses=True)
            self.run(self.client.initialize())
        else:
            self.client = Redis.from_url(redis_url, decode_responses=True)
        info = self.run(self.client.info("server"))
        if "redis_version" not in info:  # a cluster answers per node
            info = next(iter(info.values()))
        version = str(info["redis_version"])
        self.scripts = Scripts.register(
            self.client, shebang=server_supports_shebang(version), root=lua_root
        )
        self.clock = ManualClock(T0_MS)
        # One tag per test run, emptied at the start and end of every case, rather than a
        # new tag per case: hold ids derive from the tag and order ties in the timer
        # indexes, so a new tag per case would let Hypothesis's replay of a failing
        # example (and its shrinking) take a different path than the original run.
        self.hospital = f"h-{run_id}"
        self.department = f"d-{run_id}"
        self.tag = keys.department_day_tag(self.department, VISIT_DATE)
        self.tk = keys.tag_keys(self.tag)
        self.patients = [f"p{i}-{run_id}" for i in range(PATIENT_COUNT)]
        self.policy = HospitalPolicy()  # drawn in load_schedules
        self.phantom_hold = keys.hold_id_for(ACCOUNTS[0], "never-used", self.tag)
        self.requests: list[ReserveRequest] = []
        #: Moves across tags begun: (old booking, new booking, target slot, until ms).
        self.moves: list[tuple[str, str, str, int]] = []
        self.fresh_keys = 0
        self.last_event_id = "0-0"
        self.last_seq = 0
        self.run(self._delete_keys())
        self.store: SlotStore
        self.model: Model

    # -- plumbing -------------------------------------------------------------------

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine on this machine's own event loop."""
        return self.loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    async def _delete_keys(self) -> None:
        names = self.tk.as_list()
        for patient in self.patients:
            names += keys.patient_keys(patient).as_list()
        for name in names:  # one by one: on a cluster they live in different slots
            await self.client.delete(name)
        await self.client.srem(keys.TAG_REGISTRY_KEY, self.tag)

    def teardown(self) -> None:
        try:
            self.run(self._delete_keys())
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    @property
    def now(self) -> int:
        return self.clock.now_ms

    def attempt(self, step: Awaitable[T]) -> T | InventoryError:
        """Run a store step; a refusal is returned, not raised."""
        try:
            return self.run(step)
        except InventoryError as error:
            return error
        finally:
            self.read_back_waits()

    def check(self, expected: Expect, step: Awaitable[HoldOutcome]) -> None:
        """Run a hold step and compare its outcome with the model's prediction."""
        outcome = self.attempt(step)
        if isinstance(outcome, InventoryError):
            assert outcome.code == expected.code, (
                f"model expected {expected.code}, store refused: {outcome.code} {outcome.context}"
            )
            for name, value in expected.context.items():
                assert outcome.context.get(name) == value, (name, outcome.context)
            return
        assert expected.code in ("ok", "replay"), (
            f"model expected {expected.code}, store answered {outcome}"
        )
        assert expected.hold_id is not None
        assert outcome.replayed == (expected.code == "replay")
        assert (outcome.event_id is None) == outcome.replayed
        h = self.model.holds[expected.hold_id]
        assert outcome.hold == h.as_hold()
        assert outcome.counts == self.model.counts(h.slot)

    def check_plain(self, expected: Expect, step: Awaitable[Any]) -> Any:
        """Run a set-up step; compare refusal codes; return the result on success."""
        result = self.attempt(step)
        if isinstance(result, InventoryError):
            assert result.code == expected.code, (expected.code, result.code)
            return None
        assert expected.code in ("ok", "replay"), (
            f"model expected {expected.code}, store answered {result}"
        )
        return result

    def read_back_waits(self) -> None:
        """Record the due time the scripts drew for each unit freed into the wait."""
        for slot_id, hold_id, freed_at in self.model.unread:
            score = self.run(self.client.zscore(self.tk.timers, f"{slot_id}|w|{hold_id}"))
            assert score is not None, f"freed unit of {hold_id} has no waiting timer"
            due = int(score)
            assert (
                freed_at + self.model.rerelease_min_ms
                <= due
                <= freed_at + self.model.rerelease_max_ms
            ), (freed_at, due)
            self.model.waiting[(slot_id, hold_id)] = due
        self.model.unread.clear()

    def spec(self, schedule_id: str, caps: dict[str, int]) -> ScheduleSpec:
        """The ScheduleSpec of a schedule of this case with the given capacities."""
        sched = self.model.pending_schedules[schedule_id]

        def at(ms: int) -> datetime:
            return T0 + timedelta(milliseconds=ms - T0_MS)

        return ScheduleSpec(
            schedule_id=schedule_id,
            hospital_id=self.hospital,
            department_id=self.department,
            visit_date=VISIT_DATE,
            release_at=at(sched.release_ms),
            starts_at=at(sched.start_ms),
            ends_at=at(sched.start_ms) + timedelta(hours=4),
            cancel_deadline=at(sched.cancel_ms),
            fee_fen=sched.fee,
            slots=tuple(SlotSpec(slot_id, cap) for slot_id, cap in caps.items()),
        )

    def pick_hold(self, pick: int, prefer: str) -> str:
        """A known hold, one in state ``prefer`` for half the picks when there is one;
        PICK_MAX stands for an id no reserve ever made."""
        ids = list(self.model.holds)  # creation order: independent of the ids' hashes
        if pick == PICK_MAX or not ids:
            return self.phantom_hold
        preferred = [i for i in ids if self.model.holds[i].state == prefer]
        if pick % 2 == 0 and preferred:
            return preferred[pick // 2 % len(preferred)]
        return ids[pick % len(ids)]

    def account_for(self, hold_id: str, who: str) -> str:
        """The caller's account: the hold's owner, another account, or a trusted caller."""
        h = self.model.holds.get(hold_id)
        owner = h.account if h is not None else ACCOUNTS[0]
        if who == "owner":
            return owner
        if who == "other":
            return ACCOUNTS[(ACCOUNTS.index(owner) + 1) % len(ACCOUNTS)]
        return ""  # a trusted system or operator caller

    # -- set-up ---------------------------------------------------------------------

    @initialize(
        # The first slot of each schedule has a unit at least, so that few cases have
        # nothing to sell at all.
        caps=st.tuples(st.integers(1, 3), st.integers(0, 3), st.integers(1, 3), st.integers(0, 3)),
        # (release, cancellation deadline, session start after the deadline), in s from
        # T0. sched-a is released up to 20 s after T0 and may close within minutes: the
        # machine visits its release and start on purpose. sched-b is released by T0,
        # its cancellation deadline comes after 15 or 30 minutes and its session starts
        # 10 or 30 minutes later, so reserves keep working for most of a case.
        offsets=st.tuples(
            st.tuples(
                st.integers(-60, 20),
                st.sampled_from([120, 300, 600]),
                st.sampled_from([-60, 0, 120, 600]),
            ),
            st.tuples(
                st.integers(-60, 0),
                st.sampled_from([900, 1800]),
                st.sampled_from([600, 1800]),
            ),
        ),
        ttl_s=st.sampled_from([30, 60]),
        max_extra_s=st.sampled_from([0, 15, 60]),
        extend_s=st.sampled_from([0, 10, 60, 60]),
        one_per_day=st.booleans(),
        # Minimum delay >= 1 s: a unit freed in a step is never due within that step,
        # so reading its due time back after the step is always in time.
        rerelease=st.sampled_from([(0, 0), (1, 5), (2, 2)]),
        max_open=st.sampled_from([0, 0, 1, 2]),
        max_7_days=st.sampled_from([0, 0, 1, 2]),
        max_moves=st.sampled_from([0, 1, 1, 2]),
        blacklist=st.booleans(),
        reclaim_limit=st.sampled_from([1, 64]),
        # An opening rush of reserves, some paid at once, so that every case has holds
        # and bookings to work on even when Hypothesis disables the rules making them.
        rush=st.lists(
            st.tuples(
                st.sampled_from(ACCOUNTS),
                st.sampled_from(LOADED_SLOTS),
                st.integers(0, PATIENT_COUNT - 1),
                st.booleans(),
            ),
            max_size=4,
        ),
    )
    def load_schedules(
        self,
        caps: tuple[int, ...],
        offsets: tuple[tuple[int, int, int], ...],
        ttl_s: int,
        max_extra_s: int,
        extend_s: int,
        one_per_day: bool,
        rerelease: tuple[int, int],
        max_open: int,
        max_7_days: int,
        max_moves: int,
        blacklist: bool,
        reclaim_limit: int,
        rush: list[tuple[str, str, int, bool]],
    ) -> None:
        """The tag's policy and both schedules, then an opening rush of reserves."""
        policy = HospitalPolicy(
            hold_ttl_s=ttl_s,
            max_hold_s=ttl_s + max_extra_s,
            extend_s=extend_s,
            one_per_day=one_per_day,
            max_open_per_patient=max_open,
            max_in_7_days_per_patient=max_7_days,
            max_reschedules=max_moves,
            blacklist=blacklist,
            rerelease_min_s=rerelease[0],
            rerelease_max_s=rerelease[1],
        )
        self.policy = policy
        schedules = {}
        for schedule_id, (release_s, cancel_s, start_after_s) in zip(
            SCHEDULES, offsets, strict=True
        ):
            start_s = max(cancel_s + start_after_s, release_s + 30)
            schedules[schedule_id] = ModelSchedule(
                release_ms=T0_MS + release_s * 1000,
                start_ms=T0_MS + start_s * 1000,
                cancel_ms=T0_MS + cancel_s * 1000,
                fee=FEES[schedule_id],
            )
        capacities = dict(zip(LOADED_SLOTS, caps, strict=True))
        self.model = Model(policy, self.hospital, reclaim_limit, schedules)
        # A fixed seed: the anti-scalping delays are then the same when Hypothesis
        # replays an example.
        self.store = SlotStore(
            self.client,
            self.scripts,
            clock=self.clock,
            policies=PolicyBook(default=policy),
            rng=random.Random(0),
            reclaim_limit=reclaim_limit,
        )
        for schedule_id, slots in SCHEDULES.items():
            slot_caps = {s: capacities[s] for s in slots}
            expected = self.model.load(schedule_id, slot_caps, self.now)
            self.check_plain(expected, self.store.load_schedule(self.spec(schedule_id, slot_caps)))
        for account, slot, patient, paid in rush:
            self.tick()
            request = self.new_request(account, slot, self.patients[patient])
            self.do_reserve(request)
            hold_id = keys.hold_id_for(account, request.idempotency_key, self.tag)
            if paid and hold_id in self.model.holds:
                expected = self.model.confirm(hold_id, "", PAY_REFS[0], self.now)
                self.check(
                    expected, self.store.confirm(hold_id, account_id="", payment_ref=PAY_REFS[0])
                )

    @rule(
        schedule=st.sampled_from(list(SCHEDULES)),
        caps=st.lists(st.integers(0, 3), min_size=2, max_size=2),
        foreign_slot=st.sampled_from([False] * 5 + [True]),
    )
    def reload_schedule(self, schedule: str, caps: list[int], foreign_slot: bool) -> None:
        """New capacities (HIS sync); sometimes listing a slot of the other schedule."""
        slot_caps = dict(zip(SCHEDULES[schedule], caps, strict=True))
        if foreign_slot:
            other = next(s for s in SCHEDULES if s != schedule)
            slot_caps[SCHEDULES[other][0]] = caps[0]
        expected = self.model.load(schedule, slot_caps, self.now)
        self.check_plain(expected, self.store.load_schedule(self.spec(schedule, slot_caps)))

    @rule(slot=SLOT_CHOICE, delta=st.integers(-2, 2))
    def adjust_capacity(self, slot: str, delta: int) -> None:
        """Add units (加号) or take free units away."""
        expected = self.model.adjust(slot, delta, self.now)
        counts = self.check_plain(expected, self.store.adjust_capacity(self.tag, slot, delta))
        if counts is not None:
            assert counts == self.model.counts(slot)

    @rule(
        schedule=st.sampled_from(list(SCHEDULES)),
        go=st.sampled_from([False, False, True]),
        twice=st.booleans(),
    )
    def suspend_or_reopen(self, schedule: str, go: bool, twice: bool) -> None:
        """Suspend an open schedule (停诊, only if ``go``) or reopen a suspended one;
        ``twice`` repeats the step, which is then a no-op. One rule for both, so that a
        case in which Hypothesis disables one of two rules is not left suspended for
        good; and suspensions stay short, so that reserves mostly find open schedules."""
        suspend = self.model.schedules[schedule].status == "open"
        if suspend and not go:
            return
        for _ in range(2 if twice else 1):
            if suspend:
                expected = self.model.set_status(
                    schedule, "suspended", "schedule_suspended", self.now
                )
                step = self.store.suspend(self.tag, schedule, "doctor_unavailable")
            else:
                expected = self.model.set_status(schedule, "open", "schedule_reopened", self.now)
                step = self.store.reopen(self.tag, schedule, "doctor_back")
            assert self.check_plain(expected, step) == (expected.code == "ok")

    # -- time -----------------------------------------------------------------------

    @rule(
        ms=st.one_of(
            st.integers(1, 5_000),
            st.integers(5, 60).map(lambda s: s * 1000),
            st.integers(5, 60).map(lambda s: s * 1000),
            st.integers(60, 300).map(lambda s: s * 1000),
        )
    )
    def advance(self, ms: int) -> None:
        """Time moves on, by milliseconds to minutes."""
        self.clock.now_ms += ms

    def wait_until(self, instant_ms: int, offset_ms: int | None) -> None:
        """Move the clock to ``instant_ms + offset_ms`` if that is ahead (None: stay)."""
        if offset_ms is not None:
            self.clock.now_ms = max(self.now, instant_ms + offset_ms)

    def future_instants(self, *, schedules: bool) -> list[int]:
        """Instants ahead: the schedules' (release, cancellation, start), or else the
        holds' deadlines and the waiting units' due times."""
        if schedules:
            instants = set()
            for sched in self.model.schedules.values():
                instants |= {sched.release_ms, sched.cancel_ms, sched.start_ms}
        else:
            instants = {h.deadline for h in self.model.holds.values() if h.state == "held"}
            instants |= {due for due in self.model.waiting.values() if due is not None}
        return sorted(t for t in instants if t > self.now)

    @precondition(
        lambda self: (
            bool(self.future_instants(schedules=False))
            or bool(self.future_instants(schedules=True))
        )
    )
    @rule(pick=st.integers(0, 5), offset_ms=st.sampled_from([-1, 0, 0, 1]))
    def advance_to_instant(self, pick: int, offset_ms: int) -> None:
        """Land exactly on (or 1 ms around) one of the next hold deadlines or due
        times, or (pick 5) the next release, cancellation deadline or session start."""
        instants = self.future_instants(schedules=pick == 5)
        if instants:
            target = instants[min(pick, len(instants) - 1)] + offset_ms
            self.clock.now_ms = max(self.now, target)

    # -- the patient's steps --------------------------------------------------------

    def new_request(self, account: str, slot: str, patient_id: str) -> ReserveRequest:
        """A request with an idempotency key never used before."""
        self.fresh_keys += 1
        return ReserveRequest(
            hospital_id=self.hospital,
            department_id=self.department,
            visit_date=VISIT_DATE,
            slot_id=slot,
            account_id=account,
            patient_id=patient_id,
            channel=CHANNELS[0],
            idempotency_key=f"fresh-{self.fresh_keys}",
        )

    def tick(self) -> None:
        """Every reserve takes a millisecond. Holds then never share a deadline, and
        ties in the timer indexes (broken by hold id, a hash of the tag) stay rare, so
        an example behaves the same in every run, whatever the run's tag."""
        self.clock.now_ms += 1

    def do_reserve(self, request: ReserveRequest) -> None:
        """Reserve through the store and compare with the model's prediction."""
        self.requests.append(request)
        hold_id = keys.hold_id_for(request.account_id, request.idempotency_key, self.tag)
        expected = self.model.reserve(request, hold_id, self.now)
        self.check(expected, self.store.reserve(request))

    @rule(
        account=st.sampled_from(ACCOUNTS),
        key=st.sampled_from(IDEMPOTENCY_KEYS),
        slot=SLOT_CHOICE,
        patient=st.integers(0, PATIENT_COUNT - 1),
        channel=st.sampled_from(CHANNELS),
    )
    def reserve(self, account: str, key: str, slot: str, patient: int, channel: str) -> None:
        """A reserve with one of a few keys: new, a retry or a key reused."""
        self.tick()
        self.do_reserve(
            ReserveRequest(
                hospital_id=self.hospital,
                department_id=self.department,
                visit_date=VISIT_DATE,
                slot_id=slot,
                account_id=account,
                patient_id=self.patients[patient],
                channel=channel,
                idempotency_key=key,
            )
        )

    @rule(
        account=st.sampled_from(ACCOUNTS),
        slot=SLOT_CHOICE,
        patient=st.integers(0, PATIENT_COUNT - 1),
        lapsed=st.sampled_from([None, "patient", "slot"]),
        at=st.sampled_from([None, None, None, ("release", 0), ("start", -1), ("start", 0)]),
    )
    def reserve_new_key(
        self,
        account: str,
        slot: str,
        patient: int,
        lapsed: str | None,
        at: tuple[str, int] | None,
    ) -> None:
        """A reserve with an idempotency key never used before: now, or right at
        sched-a's release (放号) or session start; with ``lapsed``, by the patient or for
        the slot of a hold past its deadline but not yet swept, if there is one."""
        self.tick()
        if at is not None:
            sched = self.model.schedules["sched-a"]
            instant, offset_ms = at
            self.wait_until(sched.release_ms if instant == "release" else sched.start_ms, offset_ms)
        patient_id = self.patients[patient]
        lapsed_holds = [
            h for h in self.model.holds.values() if h.state == "held" and h.deadline <= self.now
        ]
        if lapsed == "patient" and lapsed_holds:
            patient_id = lapsed_holds[patient % len(lapsed_holds)].patient
        elif lapsed == "slot" and lapsed_holds:
            # Preferably a sold-out slot: DESIGN.md's "a hold past its deadline is free
            # at once for the next reserve" is exactly this case.
            full = [h for h in lapsed_holds if self.model.slots[h.slot].rem <= 0]
            candidates = full or lapsed_holds
            slot = candidates[patient % len(candidates)].slot
            # Someone free to book, so that the step reaches the slot's counts.
            busy = {h.patient for h in self.model.holds.values() if h.is_open(self.now)}
            free = [p for p in self.patients if p not in busy]
            if free:
                patient_id = free[patient % len(free)]
        self.do_reserve(self.new_request(account, slot, patient_id))

    @precondition(lambda self: bool(self.requests))
    @rule(pick=st.integers(0, PICK_MAX))
    def retry_reserve(self, pick: int) -> None:
        """The same request with the same key again (a client retry)."""
        self.tick()
        self.do_reserve(self.requests[pick % len(self.requests)])

    @precondition(lambda self: bool(self.requests))
    @rule(
        pick=st.integers(0, PICK_MAX),
        change=st.sampled_from(["slot", "patient", "channel"]),
        value=st.integers(0, 10),
    )
    def reuse_key(self, pick: int, change: str, value: int) -> None:
        """An earlier key, sent again with a (possibly) different request."""
        self.tick()
        request = self.requests[pick % len(self.requests)]
        if change == "slot":
            request = replace(request, slot_id=ALL_SLOTS[value % len(ALL_SLOTS)])
        elif change == "patient":
            request = replace(request, patient_id=self.patients[value % PATIENT_COUNT])
        else:
            request = replace(request, channel=CHANNELS[value % len(CHANNELS)])
        self.do_reserve(request)

    @precondition(lambda self: bool(self.model.holds))
    @rule(
        pick=st.integers(0, PICK_MAX),
        who=st.sampled_from(["owner", "owner", "other", "system"]),
        payment_ref=st.sampled_from(PAY_REFS),
    )
    def confirm(self, pick: int, who: str, payment_ref: str) -> None:
        """Confirm a hold (or booking, or an unknown id) as its owner, another
        account or the payment system."""
        hold_id = self.pick_hold(pick, prefer="held")
        account = self.account_for(hold_id, who)
        expected = self.model.confirm(hold_id, account, payment_ref, self.now)
        self.check(
            expected, self.store.confirm(hold_id, account_id=account, payment_ref=payment_ref)
        )

    @precondition(lambda self: bool(self.model.holds))
    @rule(
        pick=st.integers(0, PICK_MAX),
        who=st.sampled_from(["owner", "owner", "other", "system"]),
        reason=st.sampled_from(["patient_cancelled", "his_rejected"]),
        force=st.booleans(),
    )
    def release(self, pick: int, who: str, reason: str, force: bool) -> None:
        """Release a hold or cancel a booking (or an unknown id), by anyone, maybe forced."""
        hold_id = self.pick_hold(pick, prefer="held")
        account = self.account_for(hold_id, who)
        expected = self.model.release(hold_id, account, reason, force, self.now)
        self.check(
            expected,
            self.store.release(hold_id, account_id=account, reason=reason, force=force),
        )

    @precondition(lambda self: bool(self.model.holds))
    @rule(pick=st.integers(0, PICK_MAX), who=st.sampled_from(["owner", "owner", "other", "system"]))
    def extend(self, pick: int, who: str) -> None:
        """Extend a hold (or anything else) as its owner, another account or a trusted caller."""
        hold_id = self.pick_hold(pick, prefer="held")
        account = self.account_for(hold_id, who)
        expected = self.model.extend(hold_id, account, self.now)
        self.check(expected, self.store.extend(hold_id, account_id=account))

    def ids_in_state(self, state: str) -> list[str]:
        """Ids of the model's holds in ``state``, in creation order."""
        return [i for i, h in self.model.holds.items() if h.state == state]

    @precondition(lambda self: bool(self.ids_in_state("held")))
    @rule(
        pick=st.integers(0, PICK_MAX),
        extensions=st.sampled_from([0, 1, 2]),
        payment_ref=st.sampled_from(PAY_REFS),
        paid_at=BOUNDARY_OFFSET,
        duplicate_ref=st.sampled_from([None, None, *PAY_REFS]),
    )
    def pay(
        self,
        pick: int,
        extensions: int,
        payment_ref: str,
        paid_at: int | None,
        duplicate_ref: str | None,
    ) -> None:
        """The patient's path: the owner starts paying for a held unit (which extends
        it, maybe more than once) and the payment confirms it, now or right at its
        deadline; the payment provider may notify twice, even with another reference."""
        held = self.ids_in_state("held")
        hold_id = held[pick % len(held)]
        account = self.model.holds[hold_id].account
        for _ in range(extensions):
            expected = self.model.extend(hold_id, account, self.now)
            self.check(expected, self.store.extend(hold_id, account_id=account))
        self.wait_until(self.model.holds[hold_id].deadline, paid_at)
        for ref in (payment_ref, duplicate_ref):
            if ref is not None:
                expected = self.model.confirm(hold_id, "", ref, self.now)
                self.check(expected, self.store.confirm(hold_id, account_id="", payment_ref=ref))

    @precondition(lambda self: bool(self.ids_in_state("booked")))
    @rule(
        pick=st.integers(0, PICK_MAX),
        force=st.sampled_from([False, False, False, True]),
        # 1 ms past the deadline twice as often: that refusal leaves the booking for
        # later steps, while a cancellation at or before the deadline ends it.
        cancelled_at=st.sampled_from([None, -1, 0, 1, 1]),
    )
    def cancel_booking(self, pick: int, force: bool, cancelled_at: int | None) -> None:
        """The owner cancels a booking (until the cancellation deadline), or the HIS
        flow does, forced, at any time; now, or right at the cancellation deadline."""
        booked = self.ids_in_state("booked")
        hold_id = booked[pick % len(booked)]
        sched = self.model.schedules[self.model.holds[hold_id].schedule]
        self.wait_until(min(sched.cancel_ms, sched.start_ms), cancelled_at)
        account = "" if force else self.model.holds[hold_id].account
        reason = "his_rejected" if force else "patient_cancelled"
        expected = self.model.release(hold_id, account, reason, force, self.now)
        self.check(
            expected,
            self.store.release(hold_id, account_id=account, reason=reason, force=force),
        )

    # -- rescheduling (改约) ----------------------------------------------------------

    def check_step(self, expected: Expect, step: Awaitable[HoldOutcome]) -> None:
        """Like :meth:`check`, for steps that may change a record without an event
        (a move's mark): the outcome's hold and counts, whatever its event id."""
        outcome = self.attempt(step)
        if isinstance(outcome, InventoryError):
            assert outcome.code == expected.code, (
                f"model expected {expected.code}, store refused: {outcome.code} {outcome.context}"
            )
            for name, value in expected.context.items():
                assert outcome.context.get(name) == value, (name, outcome.context)
            return
        assert expected.code in ("ok", "replay"), (
            f"model expected {expected.code}, store answered {outcome}"
        )
        assert expected.hold_id is not None
        assert outcome.replayed == (expected.code == "replay")
        h = self.model.holds[expected.hold_id]
        assert outcome.hold == h.as_hold()
        assert outcome.counts == self.model.counts(h.slot)

    def move_key(self, account: str, reuse: int | None) -> str:
        """A new booking's id: fresh, or (``reuse``) one a move made before."""
        made = [h.id for h in self.model.holds.values() if h.from_]
        if reuse is not None and made:
            return made[reuse % len(made)]
        self.fresh_keys += 1
        return keys.hold_id_for(account, f"move-{self.fresh_keys}", self.tag)

    @precondition(lambda self: bool(self.ids_in_state("booked")))
    @rule(
        pick=st.integers(0, PICK_MAX),
        slot=SLOT_CHOICE,
        who=st.sampled_from(["owner", "owner", "other", "system"]),
        force=st.sampled_from([False, False, True]),
        reuse=st.sampled_from([None, None, None, 0, 1]),
        fee_cap=st.sampled_from([-1, -1, 1200, 0]),
        at=st.sampled_from([None, None, -1, 0, 1]),
    )
    def reschedule(
        self,
        pick: int,
        slot: str,
        who: str,
        force: bool,
        reuse: int | None,
        fee_cap: int,
        at: int | None,
    ) -> None:
        """Move a booking to another slot of the tag in one step (改约): by its owner
        before the cancellation deadline, or an operator's forced move; now or right at
        the deadline; with a fresh new id or one a move made before (a retry)."""
        self.tick()
        booked = self.ids_in_state("booked")
        old_id = booked[pick % len(booked)]
        sched = self.model.schedules[self.model.holds[old_id].schedule]
        self.wait_until(min(sched.cancel_ms, sched.start_ms), at)
        account = self.account_for(old_id, who)
        new_id = self.move_key(account or ACCOUNTS[0], reuse)
        max_moves = self.policy.max_reschedules
        expected = self.model.reschedule(
            old_id, new_id, account, slot, max_moves, fee_cap, force, self.now
        )
        self.check(
            expected,
            self.store.reschedule_in_tag(
                old_id,
                new_id,
                account_id=account,
                slot_id=slot,
                max_moves=max_moves,
                max_amount=fee_cap,
                force=force,
            ),
        )

    @precondition(lambda self: bool(self.ids_in_state("booked")))
    @rule(
        pick=st.integers(0, PICK_MAX),
        slot=SLOT_CHOICE,
        who=st.sampled_from(["owner", "owner", "other", "system"]),
        force=st.booleans(),
        window_ms=st.sampled_from([1, 1_000, 10_000]),
    )
    def begin_move(self, pick: int, slot: str, who: str, force: bool, window_ms: int) -> None:
        """Step one of a move across tags: mark a booking as moving to a new id."""
        self.tick()
        booked = self.ids_in_state("booked")
        old_id = booked[pick % len(booked)]
        account = self.account_for(old_id, who)
        new_id = self.move_key(account or ACCOUNTS[0], None)
        until = self.now + window_ms
        max_moves = self.policy.max_reschedules
        expected = self.model.mark(
            "begin", old_id, new_id, account, until, max_moves, force, self.now
        )
        self.check_step(
            expected,
            self.store.mark_move(
                "begin",
                old_id,
                new_id,
                account_id=account,
                until_ms=until,
                max_moves=max_moves,
                force=force,
            ),
        )
        if expected.code == "ok":
            self.moves.append((old_id, new_id, slot, until))

    @precondition(lambda self: bool(self.moves))
    @rule(pick=st.integers(0, PICK_MAX), at=st.sampled_from([None, None, 0, 1]))
    def take_move(self, pick: int, at: int | None) -> None:
        """Step two: the new booking takes its unit (or a retry of it), now or right at
        the end of the mark."""
        self._take(pick, at, charged=False)

    @precondition(lambda self: bool(self.moves))
    @rule(pick=st.integers(0, PICK_MAX), at=st.sampled_from([None, None, 0, 1]))
    def take_charged_move(self, pick: int, at: int | None) -> None:
        """Step two of a charged move (a dearer target): the unit is held until the
        mark's end (the difference's deadline), then confirmed when paid, or expired."""
        self._take(pick, at, charged=True)

    @precondition(lambda self: bool(self.ids_in_state("booked")))
    @rule(
        pick=st.integers(0, PICK_MAX),
        slot=SLOT_CHOICE,
        window_ms=st.sampled_from([1_000, 60_000]),
    )
    def charged_move(self, pick: int, slot: str, window_ms: int) -> None:
        """A charged move's first two steps as the service runs them: the booking marked
        until the difference's deadline, then the target's unit held until then (paid,
        expired or aborted by the other rules)."""
        self.tick()
        booked = self.ids_in_state("booked")
        old_id = booked[pick % len(booked)]
        account = self.model.holds[old_id].account
        new_id = self.move_key(account, None)
        until = self.now + window_ms
        max_moves = self.policy.max_reschedules
        expected = self.model.mark(
            "begin", old_id, new_id, account, until, max_moves, False, self.now
        )
        self.check_step(
            expected,
            self.store.mark_move(
                "begin", old_id, new_id, account_id=account, until_ms=until, max_moves=max_moves
            ),
        )
        if expected.code != "ok":
            return
        self.moves.append((old_id, new_id, slot, until))
        old = self.model.holds[old_id]
        expected = self.model.take(new_id, old, slot, until, self.now, until)
        self.check(
            expected,
            self.store.take_move(
                new_id, old.as_hold(), slot_id=slot, until_ms=until, hold_until_ms=until
            ),
        )

    def _take(self, pick: int, at: int | None, *, charged: bool) -> None:
        self.tick()
        old_id, new_id, slot, until = self.moves[pick % len(self.moves)]
        self.wait_until(until, at)
        old = self.model.holds[old_id]
        hold_until = until if charged else 0
        expected = self.model.take(new_id, old, slot, until, self.now, hold_until)
        self.check(
            expected,
            self.store.take_move(
                new_id, old.as_hold(), slot_id=slot, until_ms=until, hold_until_ms=hold_until
            ),
        )

    @precondition(lambda self: bool(self.moves))
    @rule(
        pick=st.integers(0, PICK_MAX),
        mode=st.sampled_from(["finish", "finish", "abort"]),
        margin_ms=st.sampled_from([-1, 0, 2_000]),
        who=st.sampled_from(["system", "system", "owner", "other"]),
        at=BOUNDARY_OFFSET,
    )
    def end_move(self, pick: int, mode: str, margin_ms: int, who: str, at: int | None) -> None:
        """Step three (finish: cancel the old booking), or the compensation (abort: drop
        the mark, at once or once its time and a margin are over); now, or 1 ms before,
        at or after the instant the compensation may drop the mark (its end plus the
        margin), where an abort's verdict turns."""
        self.tick()
        old_id, new_id, _, until = self.moves[pick % len(self.moves)]
        self.wait_until(until + max(margin_ms, 0), at)
        account = self.account_for(old_id, who)
        expected = self.model.mark(mode, old_id, new_id, account, margin_ms, 0, False, self.now)
        self.check_step(
            expected,
            self.store.mark_move(mode, old_id, new_id, account_id=account, until_ms=margin_ms),
        )

    @rule(batch=st.sampled_from([1, 2, 200]), max_calls=st.sampled_from([1, 10]))
    def expire_sweep(self, batch: int, max_calls: int) -> None:
        """The expirer sweeps the tag in bounded batches."""
        expected = self.model.expire(batch, max_calls, self.now)
        self.store.expire_batch = batch
        assert self.attempt(self.store.expire_tag(self.tag, max_calls=max_calls)) == expected

    # -- rules that span tags -------------------------------------------------------

    @rule(
        patient=st.integers(0, PATIENT_COUNT - 1),
        where=st.sampled_from(["own", "own", "*", "other"]),
        seconds=st.sampled_from([0, 60, 600, 600]),
    )
    def ban(self, patient: int, where: str, seconds: int) -> None:
        """Ban a patient at this hospital, at every hospital or elsewhere; 0 s lifts it."""
        hospital = {"own": self.hospital, "*": "*", "other": "h-elsewhere"}[where]
        until_ms = self.now + seconds * 1000 if seconds else 0
        patient_id = self.patients[patient]
        self.model.ban(patient_id, hospital, until_ms)
        self.run(
            self.store.ban_patient(
                patient_id, hospital_id=hospital, until_ms=until_ms, reason="no_show"
            )
        )

    @precondition(lambda self: self.policy.spans_tags)
    @rule(
        patient=st.integers(0, PATIENT_COUNT - 1),
        # Visit days from yesterday to 8 days ahead of the tag's (which is today): the
        # 7-day windows' edges on both sides, and a day already over.
        days=st.sampled_from([-1, 1, 2, 5, 6, 7, 8]),
        settle=st.booleans(),
    )
    def other_day_token(self, patient: int, days: int, settle: bool) -> None:
        """Step one of a reserve on another visit day of the same hospital: settled, a
        booking there (its tag is not this machine's); pending, a process that died
        between the steps. Either counts for the patient's rules like this tag's."""
        self.take_other_day_token(self.patients[patient], days, settle)

    @precondition(lambda self: self.policy.spans_tags)
    @rule(
        patient=st.integers(0, PATIENT_COUNT - 1),
        middle=st.sampled_from([2, 5, 6, 7]),
        settle=st.booleans(),
    )
    def week_edges_then_middle(self, patient: int, middle: int, settle: bool) -> None:
        """Tokens 1 and 8 days ahead (seven days apart: no 7-day window holds both),
        then one between them: the windows' far edges, which random days reach too
        rarely for a model run to notice a window one day too wide."""
        for days in (1, 8, middle):
            self.take_other_day_token(self.patients[patient], days, settle)

    def take_other_day_token(self, patient_id: str, days: int, settle: bool) -> None:
        """Take (and maybe settle) a token ``days`` after the tag's visit date, checked
        against the model."""
        self.tick()
        self.fresh_keys += 1
        tag = keys.department_day_tag(self.department, VISIT_DATE + timedelta(days=days))
        hold_id = keys.hold_id_for(ACCOUNTS[0], f"other-{self.fresh_keys}", tag)
        expected = self.model.acquire(hold_id, patient_id, self.now)
        taken = self.attempt(
            self.store.acquire_patient_token(patient_id, hold_id, hospital_id=self.hospital)
        )
        if isinstance(expected, Expect):
            assert isinstance(taken, InventoryError), (expected, taken)
            assert taken.code == expected.code, (expected, taken.code)
            for name, value in expected.context.items():
                assert taken.context.get(name) == value, (name, taken.context)
            return
        assert not isinstance(taken, InventoryError), (expected, taken)
        assert taken == (self.now + TOKEN_WINDOW_MS, True)
        if settle:
            self.model.tokens[patient_id][hold_id] = INF
            self.run(self.store.settle_patient_token(patient_id, hold_id))

    @precondition(lambda self: self.policy.spans_tags)
    @rule(patient=st.integers(0, PATIENT_COUNT - 1))
    def reap(self, patient: int) -> None:
        """The compensation sweep over all of a patient's tokens."""
        patient_id = self.patients[patient]
        hold_ids = sorted(self.model.tokens.get(patient_id, {}))
        expected = self.model.reap(patient_id, hold_ids, self.now)
        assert self.run(self.store.reap_patient_tokens(patient_id, hold_ids)) == expected

    # -- invariants -----------------------------------------------------------------

    async def counts_and_snapshot(self) -> tuple[dict[str, SlotCounts], list[Any]]:
        """The slots' counts (through the store) and the rest of the tag, concurrently."""
        return await asyncio.gather(self.store.slot_counts(self.tag, ALL_SLOTS), self.snapshot())

    async def snapshot(self) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.tk.holds)
        pipe.zrange(self.tk.timers, 0, -1, withscores=True)
        pipe.zrange(self.tk.slot_timers, 0, -1)
        pipe.hgetall(self.tk.patients)
        pipe.xrange(self.tk.outbox, min=f"({self.last_event_id}")
        pipe.hget(self.tk.meta, "seq")
        for patient in self.patients:
            pipe.zrange(keys.patient_keys(patient).tokens, 0, -1, withscores=True)
        return list(await pipe.execute())

    @invariant()
    def redis_matches_model(self) -> None:
        """Counts, holds, timer indexes, patient index, outbox and tokens equal the
        model; every slot conserves its units; one_per_day holds."""
        model = self.model
        assert not model.unread
        counts, snapshot = self.run(self.counts_and_snapshot())
        for slot_id, c in counts.items():
            assert c.conserved, (slot_id, c)
        assert counts == {s: slot.counts() for s, slot in model.slots.items()}

        raw_holds, timers, slot_timers, patients, events, seq, *tokens = snapshot
        # Every hold the model knows, read as get_hold reads it, and nothing more.
        holds = _hold_snapshot(raw_holds)
        assert holds == {i: h.as_hold() for i, h in model.holds.items()}
        if model.one_per_day:
            self.check_one_open_per_patient(holds)
        assert {m: int(score) for m, score in timers} == {
            m: due for m, (due, *_) in model.timers().items()
        }
        assert set(slot_timers) == model.slot_timer_members()
        assert {p: sorted(ids.split()) for p, ids in patients.items()} == model.patient_index()
        self.check_outbox(events)
        assert int(seq or 0) == model.event_total
        for patient, pairs in zip(self.patients, tokens, strict=True):
            assert {m: float(score) for m, score in pairs} == model.tokens.get(patient, {})

    def check_one_open_per_patient(self, holds: dict[str, Hold]) -> None:
        """No patient has two open holds or bookings in the tag (read from Redis alone),
        but for a charged move's unit beside the booking it replaces: one move until the
        move is decided (a plain take into the booking's own tag is refused under
        one-per-day, so only a charged take makes such a pair)."""
        open_by_patient: dict[str, int] = {}
        for h in holds.values():
            replaced = holds.get(h.moved_from) if h.moved_from else None
            if replaced is not None and replaced.is_open(self.now):
                continue  # the pair is one move until it is decided
            if h.is_open(self.now):
                open_by_patient[h.patient_id] = open_by_patient.get(h.patient_id, 0) + 1
        assert max(open_by_patient.values(), default=0) <= 1, open_by_patient

    def check_outbox(self, events: list[tuple[str, dict[str, str]]]) -> None:
        """The events appended since the last look are the model's, in order, with
        consecutive sequence numbers, and the slot's counts and hold record right
        after the change."""
        seen: list[Event] = []
        for event_id, fields in events:
            self.last_seq += 1
            assert int(fields["seq"]) == self.last_seq, fields
            assert fields["tag"] == self.tag
            key = fields.get("hold") or fields.get("slot") or fields["schedule"]
            event_counts = None
            if "rem" in fields:
                event_counts = tuple(
                    int(fields[f]) for f in ("rem", "held", "booked", "wait", "cap")
                )
            record = None
            if "record" in fields:
                record = Hold.from_record(orjson.loads(fields["record"]))
            seen.append((fields["type"], key, int(fields["at"]), event_counts, record))
            self.last_event_id = event_id
        assert seen == self.model.events
        self.model.events.clear()


def machine_factory(
    redis_url: str,
    lua_root: Path | None = None,
    cluster_nodes: list[tuple[str, int]] | None = None,
) -> Callable[[], Any]:
    """A factory of InventoryMachine on ``redis_url`` (or a cluster), scripts from
    ``lua_root``."""
    run_id = uuid.uuid4().hex[:10]

    def factory() -> InventoryMachine:
        return InventoryMachine(redis_url, lua_root, run_id, cluster_nodes)

    return factory


@pytest.mark.slow
# 400 examples of up to 60 steps each: ~9 min measured on a 2-core machine at load 10.
@pytest.mark.timeout(1500)
def test_scripts_match_model(redis_server: Any) -> None:
    """Every step's outcome and all of Redis after it match the pure-Python model."""
    run_state_machine_as_test(machine_factory(redis_server.url), settings=MODEL_SETTINGS)


@pytest.mark.cluster
@pytest.mark.timeout(600)  # ~2 min measured on a 2-core machine at load 10
def test_scripts_match_model_on_cluster(redis_cluster: Any) -> None:
    """The same model holds on a 3-master Redis Cluster (fewer examples: slower steps)."""
    run_state_machine_as_test(
        machine_factory(redis_cluster.url, cluster_nodes=redis_cluster.startup_nodes),
        settings=settings(MODEL_SETTINGS, max_examples=80),
    )


async def test_blacklist_off_ignores_bans(redis_client: Any, clock: ManualClock) -> None:
    """With the policy's blacklist off, a ban does not refuse a reserve (max_open on)."""
    policy = HospitalPolicy(max_open_per_patient=2, blacklist=False)
    scenario = Scenario(await make_store(redis_client, clock, policy), clock, redis_client)
    await scenario.store.load_schedule(scenario.schedule({"slot-a": 1}))
    patient = fresh_id("p")
    await scenario.store.ban_patient(
        patient,
        hospital_id=scenario.hospital_id,
        until_ms=clock.now_ms + 3_600_000,
        reason="no_show",
    )
    outcome = await scenario.store.reserve(scenario.request("slot-a", patient_id=patient))
    assert outcome.hold.state is HoldState.HELD
