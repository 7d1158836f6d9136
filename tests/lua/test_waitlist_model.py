"""Model-based test of the 候补 waitlist: a Hypothesis state machine joins, leaves,
reserves, releases, pays, adds capacity and lets time pass against the real scripts,
predicts who each freed unit is offered to, and after every step checks the tag in
Redis against what the waitlist promises:

* never more holds than units (every slot conserves its units; open holds = held + booked);
* the waitlist is offered in order: the first waiting patient gets the freed unit (a
  patient with an open hold in the department that day is passed over, refused), and no
  entry waits while an earlier one of the same schedule was offered after it joined;
* an offer never goes to a patient who left;
* an offer that lapses passes to the next waiting patient in the same step: no unit is
  free while a patient waits;
* each entry's state agrees with its offer's hold (offered: held, taken: booked,
  lapsed: expired, declined: released).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
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

from inventory.domain import (
    Hold,
    HoldState,
    HospitalPolicy,
    ReserveRequest,
    ScheduleSpec,
    SlotSpec,
    WaitlistEntry,
    WaitlistJoin,
    WaitlistState,
)
from inventory.errors import InventoryError
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore
from inventory.store.waitlist import WaitlistStore

from .conftest import CHINA, ManualClock

T = TypeVar("T")

VISIT_DATE = date(2027, 3, 8)
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=CHINA)
SCHEDULES = {"wa": ("wa-1", "wa-2"), "wb": ("wb-1",)}
SLOT_SCHEDULE = {slot: schedule for schedule, slots in SCHEDULES.items() for slot in slots}
PATIENTS = 6
OFFER_S = 600
HOLD_S = 300
PICK = st.integers(0, 100)

WAITLIST_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Tracked:
    """An entry as the machine knows it."""

    entry_id: str
    schedule: str
    patient: str
    account: str
    offer_hold: str
    seq: int
    #: The entry left while it was still waiting: it must never be offered a unit.
    left_waiting: bool = False


class WaitlistMachine(RuleBasedStateMachine):
    """The store and the waitlist on one tag with two schedules (two slots, one slot)."""

    def __init__(self, redis_url: str, run_id: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(redis_url, decode_responses=True)
        self.clock = ManualClock(int(T0.timestamp() * 1000))
        # One tag per test run, emptied before and after every case, and idempotency
        # keys counted per case: ids (and so every ordering) repeat when Hypothesis
        # replays a case.
        self.hospital = f"h-{run_id}"
        self.department = f"d-{run_id}"
        self.tag = keys.department_day_tag(self.department, VISIT_DATE)
        self.tk = keys.tag_keys(self.tag)
        self.patients = [f"p{i}-{run_id}" for i in range(PATIENTS)]
        policy = HospitalPolicy(hold_ttl_s=HOLD_S, waitlist_offer_s=OFFER_S)
        self.store: SlotStore = self.run(
            SlotStore.connect_scripts(
                self.client, clock=self.clock, policies=PolicyBook(default=policy)
            )
        )
        self.waitlist = WaitlistStore(self.store)
        self.entries: dict[str, Tracked] = {}
        self.keys_used = 0
        self.run(self.clean())

    # -- plumbing -------------------------------------------------------------------

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    def attempt(self, awaitable: Awaitable[T]) -> T | InventoryError:
        try:
            return self.run(awaitable)
        except InventoryError as error:
            return error

    async def clean(self) -> None:
        for name in self.tk.as_list():
            await self.client.delete(name)
        for patient in self.patients:
            for name in (
                *keys.patient_keys(patient).as_list(),
                keys.patient_waitlist_keys(patient).tokens,
            ):
                await self.client.delete(name)
        await self.client.srem(keys.TAG_REGISTRY_KEY, self.tag)

    def next_key(self) -> str:
        self.keys_used += 1
        return f"k{self.keys_used}"

    def teardown(self) -> None:
        try:
            self.run(self.clean())
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    def account(self, patient: str) -> str:
        return f"acct-{patient}"

    async def read(self) -> tuple[dict[str, Hold], dict[str, WaitlistEntry], dict[str, Any]]:
        holds = {
            i: Hold.from_record(orjson.loads(raw))
            for i, raw in (await self.client.hgetall(self.tk.holds)).items()
        }
        entries = {
            i: WaitlistEntry.from_record(orjson.loads(raw))
            for i, raw in (await self.client.hgetall(self.tk.waitlist)).items()
            if not i.startswith("a|")
        }
        slots = await self.store.slot_counts(self.tag, SLOT_SCHEDULE)
        return holds, entries, slots

    def state(self) -> tuple[dict[str, Hold], dict[str, WaitlistEntry], dict[str, Any]]:
        return self.run(self.read())

    def open_patients(self) -> set[str]:
        """Patients with an open hold or booking in the tag (the one-per-day rule)."""
        holds, _, _ = self.state()
        return {h.patient_id for h in holds.values() if h.is_open(self.clock.now_ms)}

    def waiting(self, schedule: str) -> list[WaitlistEntry]:
        _, entries, _ = self.state()
        return sorted(
            (
                e
                for e in entries.values()
                if e.schedule_id == schedule and e.state is WaitlistState.WAITING
            ),
            key=lambda e: e.seq,
        )

    def expected_recipient(self, schedule: str) -> tuple[str | None, list[str]]:
        """Who the next freed unit of ``schedule`` goes to, and who is passed over."""
        busy = self.open_patients()
        passed = []
        for entry in self.waiting(schedule):
            if entry.patient_id in busy:
                passed.append(entry.entry_id)
                continue
            return entry.entry_id, passed
        return None, passed

    # -- rules ----------------------------------------------------------------------

    @initialize()
    def load(self) -> None:
        """Two released schedules: "wa" with two slots of 1, "wb" with one of 1."""
        start = datetime.combine(VISIT_DATE, datetime.min.time(), CHINA).replace(hour=8)
        for schedule, slots in SCHEDULES.items():
            self.run(
                self.store.load_schedule(
                    ScheduleSpec(
                        schedule_id=schedule,
                        hospital_id=self.hospital,
                        department_id=self.department,
                        visit_date=VISIT_DATE,
                        release_at=T0 - timedelta(hours=1),
                        starts_at=start,
                        ends_at=start + timedelta(hours=4),
                        cancel_deadline=start - timedelta(hours=1),
                        fee_fen=100,
                        slots=tuple(SlotSpec(slot, 1) for slot in slots),
                    )
                )
            )

    @rule(patient=st.integers(0, PATIENTS - 1), slot=st.sampled_from(sorted(SLOT_SCHEDULE)))
    def reserve(self, patient: int, slot: str) -> None:
        """A patient reserves a unit directly."""
        patient_id = self.patients[patient]
        self.attempt(
            self.store.reserve(
                ReserveRequest(
                    hospital_id=self.hospital,
                    department_id=self.department,
                    visit_date=VISIT_DATE,
                    slot_id=slot,
                    account_id=self.account(patient_id),
                    patient_id=patient_id,
                    channel="app",
                    idempotency_key=self.next_key(),
                )
            )
        )

    @rule(patient=st.integers(0, PATIENTS - 1), schedule=st.sampled_from(sorted(SCHEDULES)))
    def join(self, patient: int, schedule: str) -> None:
        """A patient joins a schedule's waitlist: refused while a unit is free."""
        patient_id = self.patients[patient]
        _, _, slots = self.state()
        free = any(slots[s].remaining > 0 for s in SCHEDULES[schedule])
        outcome = self.attempt(
            self.waitlist.join(
                WaitlistJoin(
                    hospital_id=self.hospital,
                    department_id=self.department,
                    visit_date=VISIT_DATE,
                    schedule_id=schedule,
                    account_id=self.account(patient_id),
                    patient_id=patient_id,
                    channel="app",
                    idempotency_key=self.next_key(),
                )
            )
        )
        if isinstance(outcome, InventoryError):
            assert outcome.code in ("waitlist_units_free", "patient_rule", "waitlist_limit"), (
                outcome.code
            )
            if outcome.code == "waitlist_units_free":
                assert free
            return
        entry = outcome.entry
        if outcome.replayed:
            # The patient's entry on this schedule, still active (one per patient and
            # schedule): answered whatever is free now, as a retry would be.
            assert entry.entry_id in self.entries
            assert entry.state in (WaitlistState.WAITING, WaitlistState.OFFERED), entry
            return
        assert not free, "joined a waitlist while a unit was free"
        assert entry.state is WaitlistState.WAITING
        assert outcome.position == len(self.waiting(schedule))
        self.entries[entry.entry_id] = Tracked(
            entry.entry_id,
            schedule,
            patient_id,
            entry.account_id,
            entry.offer_hold_id,
            entry.seq,
        )

    @precondition(lambda self: bool(self.entries))
    @rule(pick=PICK)
    def leave(self, pick: int) -> None:
        """A patient leaves (waiting: out of line; offered: the unit passes on)."""
        tracked = list(self.entries.values())[pick % len(self.entries)]
        _, entries, _ = self.state()
        before = entries[tracked.entry_id].state
        expected = None
        if before is WaitlistState.OFFERED:
            holds, _, _ = self.state()
            offer = holds[tracked.offer_hold]
            if offer.state is HoldState.HELD and offer.deadline_ms > self.clock.now_ms:
                expected = self.expected_recipient(SLOT_SCHEDULE[offer.slot_id])
        outcome = self.run(self.waitlist.leave(tracked.entry_id, account_id=tracked.account))
        if before is WaitlistState.WAITING:
            assert outcome.entry.state is WaitlistState.LEFT
            tracked.left_waiting = True
        if expected is not None:
            self.check_offered(*expected)

    def check_offered(self, recipient: str | None, passed: list[str]) -> None:
        _, entries, _ = self.state()
        if recipient is not None:
            assert entries[recipient].state is WaitlistState.OFFERED, (
                "the first waiting patient was not offered the freed unit"
            )
        for entry_id in passed:
            assert entries[entry_id].state is WaitlistState.REFUSED

    @precondition(lambda self: bool(self.open_holds()))
    @rule(pick=PICK)
    def release(self, pick: int) -> None:
        """An open hold is given back (a booking cancelled, forced): the unit goes to
        the first waiting patient of its schedule, in the same step."""
        hold = self.open_holds()[pick % len(self.open_holds())]
        schedule = SLOT_SCHEDULE[hold.slot_id]
        # The releasing patient's own hold no longer blocks them once it ends.
        busy_before = self.open_patients() - {hold.patient_id}
        recipient = None
        passed = []
        for entry in self.waiting(schedule):
            if entry.patient_id in busy_before:
                passed.append(entry.entry_id)
                continue
            recipient = entry.entry_id
            break
        if hold.deadline_ms <= self.clock.now_ms and hold.state is HoldState.HELD:
            recipient, passed = None, []  # lapses instead: checked by the invariants
        self.attempt(
            self.store.release(hold.hold_id, account_id="", reason="patient_released", force=True)
        )
        if recipient is not None:
            self.check_offered(recipient, passed)

    def open_holds(self) -> list[Hold]:
        holds, _, _ = self.state()
        return sorted(
            (h for h in holds.values() if h.state in (HoldState.HELD, HoldState.BOOKED)),
            key=lambda h: h.hold_id,
        )

    @precondition(lambda self: bool(self.open_holds()))
    @rule(pick=PICK)
    def pay(self, pick: int) -> None:
        """A held unit (an offer, often) is paid before its deadline."""
        held = [h for h in self.open_holds() if h.state is HoldState.HELD]
        if not held:
            return
        hold = held[pick % len(held)]
        outcome = self.attempt(
            self.store.confirm(hold.hold_id, account_id=hold.account_id, payment_ref="pay")
        )
        if hold.deadline_ms > self.clock.now_ms:
            assert not isinstance(outcome, InventoryError), outcome

    @rule(minutes=st.sampled_from([1, 5, 10, 11]), sweep=st.booleans())
    def time_passes(self, minutes: int, sweep: bool) -> None:
        """Time passes; the expirer sweeps (or not yet: holds past their deadline stay
        until a sweep or a reserve on their slot reclaims them)."""
        self.clock.advance(minutes * 60)
        if sweep:
            self.run(self.store.expire_tag(self.tag))

    @rule(slot=st.sampled_from(sorted(SLOT_SCHEDULE)), delta=st.sampled_from([1, 2]))
    def add_capacity(self, slot: str, delta: int) -> None:
        """加号: added units go to the waitlist first."""
        recipient, passed = self.expected_recipient(SLOT_SCHEDULE[slot])
        self.run(self.store.adjust_capacity(self.tag, slot, delta))
        self.check_offered(recipient, passed)

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def waitlist_promises(self) -> None:
        """The promises of the module docstring, read from Redis alone."""
        holds, entries, slots = self.state()
        for slot_id, counts in slots.items():
            assert counts.conserved, (slot_id, counts)
            open_ = [
                h for h in holds.values() if h.slot_id == slot_id and h.state in ("held", "booked")
            ]
            assert len(open_) == counts.held + counts.booked <= counts.capacity
        for schedule, slot_ids in SCHEDULES.items():
            mine = [e for e in entries.values() if e.schedule_id == schedule]
            waiting = [e for e in mine if e.state is WaitlistState.WAITING]
            if waiting:
                # No unit free while a patient waits: every freed unit went to the line.
                assert all(slots[s].remaining == 0 for s in slot_ids), (schedule, slots)
                first_waiting = min(e.seq for e in waiting)
                for e in mine:
                    if e.offered_ms:
                        assert e.seq < first_waiting, "an entry was offered out of order"
        for tracked in self.entries.values():
            entry = entries[tracked.entry_id]
            offer = holds.get(tracked.offer_hold)
            if tracked.left_waiting:
                assert offer is None, "a unit was offered to a patient who had left"
                assert entry.state is WaitlistState.LEFT
            expected_hold = {
                WaitlistState.OFFERED: HoldState.HELD,
                WaitlistState.TAKEN: HoldState.BOOKED,
                WaitlistState.LAPSED: HoldState.EXPIRED,
                WaitlistState.DECLINED: HoldState.RELEASED,
            }.get(entry.state)
            if expected_hold is not None:
                assert offer is not None
                assert offer.patient_id == entry.patient_id
                if entry.state is WaitlistState.TAKEN:
                    assert offer.state in (HoldState.BOOKED, HoldState.CANCELLED)
                else:
                    assert offer.state is expected_hold, (entry.state, offer.state)
            if entry.state is WaitlistState.WAITING:
                assert offer is None


@pytest.mark.timeout(900)
def test_waitlist_matches_its_promises(redis_server: Any) -> None:
    """Joins, leaves, reserves, releases, payments, 加号 and time keep every promise."""
    run_id = uuid.uuid4().hex[:8]
    run_state_machine_as_test(
        lambda: WaitlistMachine(redis_server.url, run_id), settings=WAITLIST_SETTINGS
    )
