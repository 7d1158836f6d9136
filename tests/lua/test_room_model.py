"""Model-based test of the waiting room bound to the inventory: a Hypothesis state
machine joins patients, moves time, steps the room, reserves with their own tokens,
others' tokens, forged ones and none, and gives holds back, against the real scripts;
after every step it checks what must always hold:

* never more holds and bookings than units, and the slot's counts conserved;
* no reserve succeeds on a queued release without a valid token of that account and
  patient, and a token serves at most one reserve;
* admission follows the drawn queue: the admitted tickets are exactly the first ones of
  the order the revealed seed gives (then the late joiners in arrival order), so no one
  is overtaken;
* outstanding tokens never exceed what could be taken within a token's life times the
  factor when they were given, and the room sells out only with nothing left to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Awaitable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from inventory import errors
from inventory.domain import HospitalPolicy, ReserveRequest, ScheduleSpec, SlotSpec
from inventory.release import draw
from inventory.release.rooms import RoomStore
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore

from .conftest import CHINA, ManualClock

T = TypeVar("T")

START = datetime(2027, 3, 1, 9, 0, tzinfo=CHINA)
START_MS = int(START.timestamp() * 1000)
T0_MS = START_MS + 10_000
VISIT = date(2027, 3, 8)
PATIENTS = 6
TOKEN_MS = 5_000
SLOT = "slot-a"

ROOM_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class RoomMachine(RuleBasedStateMachine):
    """One queued release of one slot per case, driven through RoomStore and SlotStore."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(redis_url, decode_responses=True)
        self.clock = ManualClock(START_MS)
        self.department = f"d-{uuid.uuid4().hex[:10]}"
        self.tag = keys.department_day_tag(self.department, VISIT)
        self.release_id = keys.release_id_for(self.department, VISIT, "r")
        self.tickets: dict[int, str] = {}
        self.holds: dict[int, str] = {}
        self.used_tokens: set[str] = set()
        self.joined_before_t0: list[str] = []
        self.joined_late: list[str] = []
        self.capacity = 0
        self.factor = 1.0

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    def teardown(self) -> None:
        try:
            names = [*keys.tag_keys(self.tag).as_list(), *keys.room_keys(self.tag).as_list()]
            self.run(self.client.delete(*names))
            self.run(self.client.srem(keys.RELEASE_REGISTRY_KEY, self.release_id))
            self.run(self.client.aclose())
        finally:
            self.loop.close()

    def account(self, i: int) -> str:
        return f"a{i}"

    def patient(self, i: int) -> str:
        return f"p{i}"

    @initialize(
        capacity=st.integers(1, 4),
        factor=st.sampled_from([1.0, 1.2, 2.0]),
        hold_ttl_s=st.sampled_from([3, 30]),
    )
    def open_room(self, capacity: int, factor: float, hold_ttl_s: int) -> None:
        policy = HospitalPolicy(hold_ttl_s=hold_ttl_s, max_hold_s=60, one_per_day=False)
        self.store = self.run(
            SlotStore.connect_scripts(
                self.client, clock=self.clock, policies=PolicyBook(default=policy)
            )
        )
        self.rooms = RoomStore(self.store)
        self.capacity, self.factor = capacity, factor
        start = datetime.combine(VISIT, datetime.min.time(), CHINA).replace(hour=8)
        spec = ScheduleSpec(
            schedule_id="s",
            hospital_id="h",
            department_id=self.department,
            visit_date=VISIT,
            release_at=datetime.fromtimestamp(T0_MS / 1000, CHINA),
            starts_at=start,
            ends_at=start + timedelta(hours=4),
            cancel_deadline=start - timedelta(hours=16),
            fee_fen=0,
            slots=(SlotSpec(SLOT, capacity),),
        )
        self.run(self.store.load_schedule(spec))
        self.run(
            self.rooms.open(
                self.release_id,
                ["s"],
                hospital_id="h",
                t0_ms=T0_MS,
                window_ms=60_000,
                factor=factor,
                token_ms=TOKEN_MS,
            )
        )

    # -- helpers ------------------------------------------------------------------------

    def snapshot(self) -> Any:
        snap = self.run(self.rooms.snapshot(self.release_id))
        assert snap is not None
        return snap

    def request(self, who: int, token: str) -> ReserveRequest:
        return ReserveRequest(
            hospital_id="h",
            department_id=self.department,
            visit_date=VISIT,
            slot_id=SLOT,
            account_id=self.account(who),
            patient_id=self.patient(who),
            channel="app",
            idempotency_key=uuid.uuid4().hex,
            admission_token=token,
        )

    def status(self, i: int) -> Any:
        return self.run(
            self.rooms.status(self.release_id, self.tickets[i], account_id=self.account(i))
        )

    # -- rules --------------------------------------------------------------------------

    @rule(i=st.integers(0, PATIENTS - 1))
    def join(self, i: int) -> None:
        state = self.snapshot().state
        try:
            ticket, created = self.run(
                self.rooms.join(
                    self.release_id, account_id=self.account(i), patient_id=self.patient(i)
                )
            )
        except errors.RoomSoldOutError:
            assert state == "sold_out"
            assert i not in self.tickets
            return
        if i in self.tickets:
            assert (ticket, created) == (self.tickets[i], False)
            return
        assert created
        self.tickets[i] = ticket
        if state == "open" and self.clock.now_ms < T0_MS:
            self.joined_before_t0.append(ticket)
        else:
            self.joined_late.append(ticket)

    @rule(ms=st.sampled_from([200, 1_000, 4_000, 6_000, 20_000]))
    def wait(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    @rule(limit=st.sampled_from([1, 2, 1_000]))
    def advance(self, limit: int) -> None:
        before = self.snapshot()
        step = self.run(self.rooms.advance(self.release_id, limit=limit))
        counts = self.run(self.store.slot_counts(self.tag, [SLOT]))[SLOT]
        if step.state == "sold_out" and before.state != "sold_out":
            # Sold out only with nothing free, waiting or lapsing within a token's life.
            assert counts.remaining == 0
            assert counts.waiting == 0
        if step.admitted:
            after = self.snapshot()
            assert after.outstanding <= int(step.takeable * self.factor + 1e-9)

    @rule(who=st.integers(0, PATIENTS - 1), whose=st.integers(0, PATIENTS - 1))
    def reserve_with_a_token(self, who: int, whose: int) -> None:
        if whose not in self.tickets:
            return
        status = self.status(whose)
        if not status.token:
            return
        governed = self.snapshot().state != "sold_out"
        try:
            outcome = self.run(self.store.reserve(self.request(who, status.token)))
        except errors.InventoryError as error:
            refused = error.code
        else:
            refused = ""
        if refused:
            if governed and status.token in self.used_tokens:
                assert refused in ("admission_token_used", "admission_token_not_yours")
            return
        if governed:
            # Only the token's own account and patient, once, while it is live.
            assert who == whose
            assert status.token not in self.used_tokens
            assert status.token_state == "a"
            assert self.clock.now_ms < status.token_expiry_ms
            self.used_tokens.add(status.token)
        self.holds[who] = outcome.hold.hold_id

    @rule(who=st.integers(0, PATIENTS - 1), forged=st.booleans())
    def reserve_without_a_valid_token(self, who: int, forged: bool) -> None:
        governed = self.snapshot().state != "sold_out"
        token = secrets.token_hex(20) if forged else ""
        try:
            outcome = self.run(self.store.reserve(self.request(who, token)))
        except errors.InventoryError as error:
            refused = error.code
        else:
            refused = ""
        if refused:
            if governed and self.clock.now_ms >= T0_MS:
                expected = "admission_token_invalid" if forged else "admission_required"
                assert refused == expected
            return
        # A reserve without a token only once the room is closed.
        assert not governed
        self.holds[who] = outcome.hold.hold_id

    @rule(who=st.integers(0, PATIENTS - 1))
    def give_back(self, who: int) -> None:
        hold_id = self.holds.pop(who, None)
        if hold_id is None:
            return
        with contextlib.suppress(errors.InventoryError):  # already expired
            self.run(self.store.release(hold_id, account_id=self.account(who), reason="test"))

    # -- what must always hold ----------------------------------------------------------

    @invariant()
    def never_more_holds_than_units(self) -> None:
        if not self.capacity:
            return
        counts = self.run(self.store.slot_counts(self.tag, [SLOT]))[SLOT]
        assert counts.held + counts.booked <= counts.capacity == self.capacity
        assert counts.remaining >= 0
        assert counts.conserved

    @invariant()
    def admission_follows_the_drawn_queue(self) -> None:
        if not self.capacity:
            return
        snap = self.snapshot()
        if snap.state == "open":
            assert snap.admitted == 0
            return
        order = draw.draw_order(snap.seed, self.joined_before_t0) + self.joined_late
        assert draw.seed_hash(snap.seed) == snap.seed_hash
        owner = {ticket: i for i, ticket in self.tickets.items()}
        admitted = {t for t in order if self.status(owner[t]).token}
        # Exactly the first `admitted` tickets of the queue hold (or held) a token.
        assert admitted == set(order[: snap.admitted])
        for position, ticket in enumerate(order, start=1):
            assert self.status(owner[ticket]).position == position


@pytest.mark.timeout(600)
def test_room_and_inventory_match_the_rules(redis_server: Any) -> None:
    """No oversell, no reserve without a valid token, a token used once, admission in
    the drawn order (run against the real scripts)."""
    run_state_machine_as_test(lambda: RoomMachine(redis_server.url), settings=ROOM_SETTINGS)
