"""The waiting-room scripts (lua/room_*.lua) and reserve's admission check, on a real
Redis (standalone and Cluster): every return code, the draw, admission within what can
be taken, lapsed and used tokens, the sold-out step, and the events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from inventory import errors
from inventory.release import draw, ticker
from inventory.release import rooms as rooms_module
from inventory.release.rooms import RoomStore
from inventory.store import keys

from .conftest import START, Scenario

T0 = START + timedelta(minutes=10)
T0_MS = int(T0.timestamp() * 1000)
WINDOW_MS = 30 * 60 * 1000
TOKEN_MS = 60_000


@dataclasses.dataclass
class Room:
    """A queued release of one schedule of the scenario's tag."""

    scenario: Scenario
    rooms: RoomStore
    release_id: str
    schedule_id: str

    async def join(self, account: str, patient: str) -> tuple[str, bool]:
        return await self.rooms.join(self.release_id, account_id=account, patient_id=patient)

    async def advance(self) -> Any:
        return await self.rooms.advance(self.release_id)

    async def status(self, ticket: str, account: str) -> Any:
        return await self.rooms.status(self.release_id, ticket, account_id=account)

    async def reserve(
        self, account: str, patient: str, token: str = "", slot: str = "slot-a"
    ) -> Any:
        request = dataclasses.replace(
            self.scenario.request(slot, account_id=account, patient_id=patient),
            admission_token=token,
        )
        return await self.scenario.store.reserve(request)

    def at_t0(self, seconds: float = 0) -> None:
        self.scenario.clock.now_ms = T0_MS + int(seconds * 1000)


async def queued(scenario: Scenario, capacity: int = 2, factor: float = 1.0) -> Room:
    spec = scenario.schedule({"slot-a": capacity, "slot-b": 0}, release_at=T0)
    await scenario.store.load_schedule(spec)
    rooms = RoomStore(scenario.store)
    release_id = keys.release_id_for(scenario.department_id, scenario.visit_date, "r1")
    seed_hash, created = await rooms.open(
        release_id,
        [spec.schedule_id],
        hospital_id=scenario.hospital_id,
        t0_ms=T0_MS,
        window_ms=WINDOW_MS,
        factor=factor,
        token_ms=TOKEN_MS,
    )
    assert created
    assert len(seed_hash) == 64
    return Room(scenario, rooms, release_id, spec.schedule_id)


async def events(scenario: Scenario, prefix: str = "room_") -> list[dict[str, str]]:
    entries = await scenario.client.xrange(scenario.tag_keys.outbox)
    return [f for _, f in entries if f["type"].startswith(prefix)]


async def test_open_is_idempotent_and_refuses_conflicts(scenario: Scenario) -> None:
    """Opening the same release again replays its seed hash; another T0, a schedule of
    another release time, an unknown schedule or an opening after T0 are refused."""
    room = await queued(scenario)
    again, created = await room.rooms.open(
        room.release_id,
        [room.schedule_id],
        hospital_id="h",
        t0_ms=T0_MS,
        window_ms=1,
        factor=1.2,
        token_ms=1,
    )
    assert not created
    (opened,) = await events(scenario)
    assert opened["type"] == "room_opened"
    assert opened["seed_hash"] == again
    with pytest.raises(errors.RoomConflictError) as exists:
        await room.rooms.open(
            room.release_id,
            [room.schedule_id],
            hospital_id="h",
            t0_ms=T0_MS + 1,
            window_ms=1,
            factor=1,
            token_ms=1,
        )
    assert exists.value.context["reason"] == "exists"
    other = keys.release_id_for(scenario.department_id, scenario.visit_date, "r2")
    with pytest.raises(errors.RoomConflictError) as governed:
        await room.rooms.open(
            other,
            [room.schedule_id],
            hospital_id="h",
            t0_ms=T0_MS,
            window_ms=1,
            factor=1,
            token_ms=1,
        )
    assert governed.value.context["reason"] == "governed"
    late = scenario.schedule({"slot-c": 1})
    await scenario.store.load_schedule(late)
    with pytest.raises(errors.RoomConflictError) as release_time:
        await room.rooms.open(
            other,
            [late.schedule_id],
            hospital_id="h",
            t0_ms=T0_MS,
            window_ms=1,
            factor=1,
            token_ms=1,
        )
    assert release_time.value.context["reason"] == "release_time"
    with pytest.raises(errors.ScheduleNotFoundError):
        await room.rooms.open(
            other, ["nope"], hospital_id="h", t0_ms=T0_MS, window_ms=1, factor=1, token_ms=1
        )
    room.at_t0()
    third = keys.release_id_for(scenario.department_id, scenario.visit_date, "r3")
    with pytest.raises(errors.RoomConflictError) as passed:
        await room.rooms.open(
            third,
            [late.schedule_id],
            hospital_id="h",
            t0_ms=T0_MS,
            window_ms=1,
            factor=1,
            token_ms=1,
        )
    assert passed.value.context["reason"] == "t0_passed"


async def test_join_is_idempotent_and_checks_the_window(scenario: Scenario) -> None:
    """A second join of the same account and patient answers the same ticket; a join
    before the window is room_not_open with its opening; an unknown release is
    room_not_found."""
    room = await queued(scenario)
    scenario.clock.now_ms = T0_MS - WINDOW_MS - 1
    with pytest.raises(errors.RoomNotOpenError) as early:
        await room.join("a1", "p1")
    assert early.value.context["opens_ms"] == T0_MS - WINDOW_MS
    scenario.clock.now_ms = T0_MS - WINDOW_MS
    ticket, created = await room.join("a1", "p1")
    assert created
    assert len(ticket) == 24
    assert await room.join("a1", "p1") == (ticket, False)
    assert (await room.join("a1", "p2"))[0] != ticket
    unknown = keys.release_id_for(scenario.department_id, scenario.visit_date, "zz")
    with pytest.raises(errors.RoomNotFoundError):
        await room.rooms.join(unknown, account_id="a1", patient_id="p1")
    joined = [e for e in await events(scenario) if e["type"] == "room_joined"]
    assert next((e["ticket"], e["late"]) for e in joined) == (ticket, "0")


async def test_reserve_on_a_queued_release_needs_a_token(scenario: Scenario) -> None:
    """Before admission a reserve of a governed slot is admission_required (naming the
    release); a forged token is admission_token_invalid."""
    room = await queued(scenario)
    room.at_t0(1)
    with pytest.raises(errors.AdmissionRequiredError) as required:
        await room.reserve("a1", "p1")
    assert required.value.context["release_id"] == room.release_id
    with pytest.raises(errors.AdmissionTokenInvalidError):
        await room.reserve("a1", "p1", token="f" * 40)


async def test_draw_admit_reserve_and_sell_out(scenario: Scenario) -> None:
    """At T0 the joiners are drawn in the published seed's order, admitted in that order
    as far as units can be taken, each token serves one reserve once, other accounts'
    and patients' tokens are refused, and when nothing is left the room sells out in
    one step that every waiting ticket reads."""
    room = await queued(scenario, capacity=2)
    scenario.clock.now_ms = T0_MS - 60_000
    tickets = {}
    for i in range(5):
        tickets[f"p{i}"], _ = await room.join(f"a{i}", f"p{i}")
    before = await room.status(tickets["p0"], "a0")
    assert (before.state, before.position, before.outcome(T0_MS - 1)) == ("open", 0, "waiting")
    # Not T0 yet: nothing moves.
    assert (await room.advance()).drawn == 0
    room.at_t0()
    step = await room.advance()
    assert (step.state, step.drawn, step.admitted, step.takeable) == ("admitting", 5, 2, 2)
    (drawn_event,) = [e for e in await events(scenario) if e["type"] == "room_drawn"]
    seed = drawn_event["seed"]
    assert draw.seed_hash(seed) == drawn_event["seed_hash"]
    order = draw.draw_order(seed, tickets.values())
    statuses = {t: await room.status(t, f"a{p[1:]}") for p, t in tickets.items()}
    assert sorted(statuses, key=lambda t: statuses[t].position) == order
    first, second, third = order[0], order[1], order[2]
    owner = {t: p for p, t in tickets.items()}
    s1 = statuses[first]
    assert s1.outcome(T0_MS) == "admitted"
    assert s1.token_expiry_ms == T0_MS + TOKEN_MS
    assert statuses[third].outcome(T0_MS) == "waiting"
    assert statuses[third].ahead() == 0
    # Another account's token, another patient's token: refused, nothing used.
    p1 = owner[first]
    with pytest.raises(errors.AdmissionTokenNotYoursError):
        await room.reserve("a-other", p1, token=s1.token)
    with pytest.raises(errors.AdmissionTokenNotYoursError):
        await room.reserve(f"a{p1[1:]}", "p-other", token=s1.token)
    held = await room.reserve(f"a{p1[1:]}", p1, token=s1.token)
    assert held.hold.slot_id == "slot-a"
    with pytest.raises(errors.AdmissionTokenUsedError):
        await room.reserve(f"a{p1[1:]}", p1, token=s1.token)
    used = await room.status(first, f"a{p1[1:]}")
    assert used.outcome(T0_MS) == "reserved"
    # The full slot refuses the second admitted patient without using the token.
    p2 = owner[second]
    s2 = statuses[second]
    with pytest.raises(errors.SoldOutError):
        await room.reserve(f"a{p2[1:]}", p2, token=s2.token, slot="slot-b")
    await room.reserve(f"a{p2[1:]}", p2, token=s2.token)
    step = await room.advance()
    assert step.state == "sold_out"
    for ticket in order[2:]:
        late = await room.status(ticket, f"a{owner[ticket][1:]}")
        assert late.outcome(T0_MS) == "sold_out"
    (sold,) = [e for e in await events(scenario) if e["type"] == "room_sold_out"]
    assert (sold["admitted"], sold["waiting"]) == ("2", "3")
    used_events = [e for e in await events(scenario) if e["type"] == "room_admission_used"]
    assert {e["ticket"] for e in used_events} == {first, second}
    # A closed room: joining answers sold out with its schedules; reserves need no token.
    with pytest.raises(errors.RoomSoldOutError) as closed:
        await room.join("a-late", "p-late")
    assert closed.value.context["waitlist"]["schedule_ids"] == [room.schedule_id]
    assert (
        await scenario.client.hget(scenario.tag_keys.schedules, f"{room.schedule_id}:room") is None
    )


async def test_tokens_lapse_and_the_next_ticket_is_admitted(scenario: Scenario) -> None:
    """An admitted patient who does not reserve within the token's life loses it
    (admission_token_expired, the outcome "expired") and the next ticket is admitted."""
    room = await queued(scenario, capacity=1)
    scenario.clock.now_ms = T0_MS - 1
    a, _ = await room.join("a1", "p1")
    b, _ = await room.join("a2", "p2")
    room.at_t0()
    assert (await room.advance()).admitted == 1
    first = a if (await room.status(a, "a1")).token else b
    account, patient = ("a1", "p1") if first == a else ("a2", "p2")
    token = (await room.status(first, account)).token
    room.at_t0(TOKEN_MS / 1000)
    with pytest.raises(errors.AdmissionTokenExpiredError):
        await room.reserve(account, patient, token=token)
    step = await room.advance()
    assert (step.lapsed, step.admitted) == (1, 1)
    assert (await room.status(first, account)).outcome(scenario.clock.now_ms) == "expired"
    with pytest.raises(errors.AdmissionTokenExpiredError):
        await room.reserve(account, patient, token=token)
    lapsed = [e for e in await events(scenario) if e["type"] == "room_admission_lapsed"]
    assert [e["ticket"] for e in lapsed] == [first]


async def test_over_admission_and_late_joiners(scenario: Scenario) -> None:
    """Admission stays within floor(takeable x factor) outstanding tokens; joiners after
    T0 queue behind every drawn ticket in arrival order."""
    room = await queued(scenario, capacity=5, factor=1.2)
    scenario.clock.now_ms = T0_MS - 1
    early = [(await room.join(f"a{i}", f"p{i}"))[0] for i in range(3)]
    room.at_t0()
    late = [(await room.join(f"b{i}", f"q{i}"))[0] for i in range(5)]
    step = await room.advance()
    assert (step.drawn, step.admitted, step.takeable) == (3, 6, 5)
    positions = [(await room.status(t, f"b{i}")).position for i, t in enumerate(late)]
    assert positions == [4, 5, 6, 7, 8]
    drawn = [(await room.status(t, f"a{i}")).position for i, t in enumerate(early)]
    assert sorted(drawn) == [1, 2, 3]
    # Nothing more while six tokens are outstanding for five units.
    assert (await room.advance()).admitted == 0


async def test_status_of_unknown_and_foreign_tickets(scenario: Scenario) -> None:
    """room_status answers ticket_not_found for another account's ticket or an unknown
    one, and room_not_found for an unknown release."""
    room = await queued(scenario)
    scenario.clock.now_ms = T0_MS - 1
    ticket, _ = await room.join("a1", "p1")
    with pytest.raises(errors.TicketNotFoundError):
        await room.status(ticket, "a2")
    with pytest.raises(errors.TicketNotFoundError):
        await room.status("a" * 24, "a1")
    unknown = keys.release_id_for(scenario.department_id, scenario.visit_date, "zz")
    with pytest.raises(errors.RoomNotFoundError):
        await room.rooms.status(unknown, ticket, account_id="a1")
    with pytest.raises(errors.RoomNotFoundError):
        await room.rooms.advance(unknown)


async def test_joiners_are_filed_in_drawn_order_before_t0(scenario: Scenario) -> None:
    """A ticket joined before T0 is filed under its draw key as it joins, so T0's step
    only reveals the seed: one step draws every ticket whatever their number (no
    batches), and the order is the seed's. Before T0 no status shows a place."""
    room = await queued(scenario, capacity=3)
    scenario.clock.now_ms = T0_MS - 1
    tickets = [(await room.join(f"a{i}", f"p{i}"))[0] for i in range(25)]
    assert {(await room.status(t, f"a{i}")).position for i, t in enumerate(tickets)} == {0}
    room.at_t0()
    step = await room.rooms.advance(room.release_id, limit=10)
    assert (step.state, step.drawn, step.admitted) == ("admitting", 25, 3)
    snapshot = await room.rooms.snapshot(room.release_id)
    assert snapshot is not None
    order = draw.draw_order(snapshot.seed, tickets)
    positions = {t: (await room.status(t, f"a{i}")).position for i, t in enumerate(tickets)}
    assert sorted(tickets, key=positions.__getitem__) == order


async def test_an_earlier_versions_undrawn_tickets_are_drawn_in_bounded_batches(
    scenario: Scenario,
) -> None:
    """Tickets joined under an earlier version (which filed them undrawn and drew at
    T0) are still drawn: in steps of at most the limit, admission starting with the
    step that files the last one, the order the seed's."""
    room = await queued(scenario, capacity=3)
    scenario.clock.now_ms = T0_MS - 1
    tickets = [(await room.join(f"a{i}", f"p{i}"))[0] for i in range(25)]
    queue = keys.room_keys(scenario.tag).queue
    filed = await scenario.client.zrangebylex(
        queue, f"[{room.release_id}|d|", f"({room.release_id}|e"
    )
    assert len(filed) == 25
    await scenario.client.zrem(queue, *filed)
    await scenario.client.zadd(queue, {f"{room.release_id}|p|{t}": 0 for t in tickets})
    room.at_t0()
    first = await room.rooms.advance(room.release_id, limit=10)
    assert (first.state, first.drawn, first.admitted) == ("open", 10, 0)
    second = await room.rooms.advance(room.release_id, limit=10)
    assert (second.state, second.drawn) == ("open", 10)
    third = await room.rooms.advance(room.release_id, limit=10)
    assert (third.state, third.drawn, third.admitted) == ("admitting", 25, 3)
    snapshot = await room.rooms.snapshot(room.release_id)
    assert snapshot is not None
    assert snapshot.drawn == 25
    order = draw.draw_order(snapshot.seed, tickets)
    positions = {t: (await room.status(t, f"a{i}")).position for i, t in enumerate(tickets)}
    assert sorted(tickets, key=positions.__getitem__) == order


async def test_the_worker_ticker_moves_registered_rooms(scenario: Scenario) -> None:
    """The worker's tick draws and admits every registered room, and a sold-out room
    leaves the registry."""
    admitted_before = REGISTRY.get_sample_value("inventory_room_admitted_total") or 0.0
    room = await queued(scenario, capacity=1)
    assert room.release_id in await room.rooms.active()
    scenario.clock.now_ms = T0_MS - 1
    ticket, _ = await room.join("a1", "p1")
    room.at_t0()
    await ticker.tick(room.rooms)
    status = await room.status(ticket, "a1")
    assert status.outcome(T0_MS) == "admitted"
    await room.reserve("a1", "p1", token=status.token)
    await ticker.tick(room.rooms)
    snapshot = await room.rooms.snapshot(room.release_id)
    assert snapshot is not None
    assert snapshot.state == "sold_out"
    assert room.release_id not in await room.rooms.active()
    # Counted by the process whose step admitted (here, this one's tick).
    admitted_after = REGISTRY.get_sample_value("inventory_room_admitted_total") or 0.0
    assert admitted_after - admitted_before >= 1
    assert (REGISTRY.get_sample_value("inventory_room_sold_out_seconds_count") or 0) >= 1


async def test_room_keys_expire_after_the_visit_day(scenario: Scenario) -> None:
    """Opening a room sets the department-day's room keys to expire two days after the
    visit date began (UTC): a release's room state is gone once its day is over (the
    record is Postgres's), and a ticket joined later keeps that expiry."""
    room = await queued(scenario)
    scenario.clock.now_ms = T0_MS - 1
    await room.join("a1", "p1")
    expected = rooms_module.room_keys_expire_ms(room.release_id)
    day = scenario.visit_date
    assert expected == int(
        datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000 + 2 * 86_400_000
    )
    for key in keys.room_keys(scenario.tag).as_list():
        assert await scenario.client.pexpiretime(key) == expected


async def test_admissions_per_window_are_bounded(scenario: Scenario) -> None:
    """At most admit_limit tickets are admitted in a window of ADMIT_WINDOW_MS, however
    many steps (processes) step the room in it: the admitted reserve at once, and
    their reserves must fit an API process's bound on requests in flight. The next
    windows admit the rest in queue order."""
    room = await queued(scenario, capacity=5, factor=1.0)
    scenario.clock.now_ms = T0_MS - 1
    for i in range(6):
        await room.join(f"a{i}", f"p{i}")
    room.at_t0()
    window_s = rooms_module.ADMIT_WINDOW_MS / 1000
    admitted = []
    for window in range(4):
        room.at_t0(window * window_s)
        first = await room.rooms.advance(room.release_id, admit_limit=2)
        # A second driver in the same window admits nothing more.
        room.at_t0(window * window_s + window_s / 2)
        second = await room.rooms.advance(room.release_id, admit_limit=2)
        admitted.append((first.admitted, second.admitted))
    assert admitted == [(2, 0), (2, 0), (1, 0), (0, 0)]
    assert rooms_module.ADMIT_LIMIT <= 256
