"""The status fan-out (inventory/release/watch.py) on a real Redis: one watcher per
release wakes only the clients whose answer changed, and what a client learns from
the shared fields and its place is what its own ticket read from Redis says."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import inventory.release.watch as watch_module
from inventory.release.rooms import TicketStatus
from inventory.release.watch import RoomWatch, Waiter

from .conftest import Scenario
from .test_room import T0_MS, Room, queued


async def _crowd(room: Room, n: int, *, late: int = 0) -> dict[str, str]:
    """n tickets joined before T0 (and ``late`` after): ticket -> account."""
    room.scenario.clock.now_ms = T0_MS - 60_000
    owners = {}
    for i in range(n):
        ticket, _ = await room.join(f"a{i}", f"p{i}")
        owners[ticket] = f"a{i}"
    room.at_t0()
    for i in range(late):
        ticket, _ = await room.join(f"late{i}", f"q{i}")
        owners[ticket] = f"late{i}"
    return owners


async def _subscribe(
    room: Room, watch: RoomWatch, owners: dict[str, str]
) -> dict[str, tuple[Waiter, TicketStatus]]:
    found = {}
    for i, (ticket, account) in enumerate(owners.items()):
        status = await room.status(ticket, account)
        found[ticket] = (watch.subscribe(status, stream=i % 2 == 0), status)
    return found


async def _watched_at_t0(
    room: Room, n: int
) -> tuple[RoomWatch, dict[str, str], dict[str, tuple[Waiter, TicketStatus]]]:
    """n tickets joined and followed before T0, then T0: (watcher, owners, waiters);
    the watcher has not refreshed since T0."""
    owners = await _crowd(room, n)
    room.scenario.clock.now_ms = T0_MS - 1
    watch = RoomWatch(room.rooms, room.release_id)
    await watch.refresh()
    waiters = await _subscribe(room, watch, owners)
    room.at_t0()
    return watch, owners, waiters


async def _admitted_reserve(
    room: Room, owners: dict[str, str], waiters: dict[str, tuple[Waiter, TicketStatus]]
) -> None:
    """Every client woken for its turn reserves with its token (the room sells out)."""
    for ticket, (waiter, _) in waiters.items():
        if waiter.turn:
            account = owners[ticket]
            token = (await room.status(ticket, account)).token
            await room.reserve(account, "p" + account[1:], token=token)


def _woken(waiter: Waiter) -> bool:
    return waiter._event.is_set()


def _seen(status: TicketStatus, now: int) -> tuple[Any, ...]:
    """What a client is shown of a status (the view's moving parts)."""
    return (status.state, status.position, status.ahead(), status.outcome(now))


async def test_only_the_tickets_whose_turn_came_wake(scenario: Scenario) -> None:
    """40 clients (30 drawn, 10 late) on 4 units: the draw places every client from one
    read of the drawn order, each at the place Redis gives its ticket; admission wakes
    exactly the 4 admitted for a read, nobody else; the sell-out wakes every other
    client once, and each learns sold out from the shared fields."""
    room = await queued(scenario, capacity=4, factor=1.0)
    owners = await _crowd(room, 30, late=10)
    room.scenario.clock.now_ms = T0_MS - 1
    watch = RoomWatch(room.rooms, room.release_id)
    await watch.refresh()
    assert watch.snapshot is not None
    assert watch.snapshot.state == "open"
    waiters = await _subscribe(room, watch, owners)
    assert not any(_woken(w) for w, _ in waiters.values())

    room.at_t0()
    await watch.refresh()  # draws, admits 4
    snap = watch.snapshot
    assert snap is not None
    assert (snap.state, snap.admitted) == ("admitting", 4)
    assert watch.woken["turn"] == 4
    now = scenario.clock.now_ms
    turns = []
    for ticket, (waiter, status) in waiters.items():
        fresh = await room.status(ticket, owners[ticket])
        assert waiter.position == fresh.position > 0
        if waiter.turn:
            turns.append(fresh.position)
            assert waiter.follow(status, snap) is None  # its token is read from Redis
            assert fresh.outcome(now) == "admitted"
            watch.place(waiter, fresh)
        else:
            followed = waiter.follow(status, snap)
            assert followed is not None
            assert _seen(followed, now) == _seen(fresh, now)
        waiter._event.clear()
    assert sorted(turns) == [1, 2, 3, 4]

    # The draw's places wait for the admissions (none went out with the turns), then
    # go out within the rate: let them all go now.
    assert watch.woken["place"] == 0
    assert len(watch._places) == 40  # every drawn stream (one woken for its turn skips it)
    watch._places_from = 0.0
    watch._place_credit = float(watch_module.PLACE_RATE)
    watch._pump_places()
    assert not watch._places
    # Every stream still waiting is told its place (the 4 admitted, read and filed
    # again above, are still in the round: their streams would have ended).
    assert watch.woken["place"] == 40

    # Another step that changes nothing of theirs wakes nobody waiting.
    scenario.clock.now_ms += 500
    await room.join("late-x", "q-x")
    watch.woken.clear()
    await watch.refresh()
    # Only the admitted are read again (a token may lapse); places went out at the draw.
    assert watch.woken == {"token": 4}
    for waiter, _ in waiters.values():
        waiter._event.clear()

    # The admitted reserve; nothing is left: one sell-out wakes the other 36 once.
    for ticket, (waiter, _) in waiters.items():
        if waiter.position <= 4:
            account = owners[ticket]
            token = (await room.status(ticket, account)).token
            await room.reserve(account, "p" + account[1:], token=token)
    watch.woken.clear()
    await watch.refresh()
    snap = watch.snapshot
    assert snap is not None
    assert snap.state == "sold_out"
    assert watch.woken["sold_out"] == 36
    now = scenario.clock.now_ms
    for ticket, (waiter, status) in waiters.items():
        if waiter.position <= 4:
            continue
        assert _woken(waiter)
        followed = waiter.follow(status, snap)
        assert followed is not None
        fresh = await room.status(ticket, owners[ticket])
        assert followed.outcome(now) == fresh.outcome(now) == "sold_out"
        assert followed.position == fresh.position


async def test_clients_that_came_between_read_and_change_are_read_again(
    scenario: Scenario,
) -> None:
    """A client whose ticket was read before the draw or the sell-out but filed after the
    watcher saw it is woken to read again (never left waiting for a change gone by)."""
    room = await queued(scenario, capacity=1, factor=1.0)
    owners = await _crowd(room, 3)
    room.scenario.clock.now_ms = T0_MS - 1
    (ticket, account), *_ = owners.items()
    before = await room.status(ticket, account)
    watch = RoomWatch(room.rooms, room.release_id)
    room.at_t0()
    await watch.refresh()  # drawn and admitting
    waiter = watch.subscribe(before, stream=True)
    assert _woken(waiter)
    assert waiter.needs_read
    snap = watch.snapshot
    assert snap is not None
    assert waiter.follow(before, snap) is None
    watch.place(waiter, await room.status(ticket, account))
    assert not waiter.needs_read
    watch.unsubscribe(waiter)
    assert watch.clients == 0


async def test_place_updates_stay_within_the_rate(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams are told their new place at most PLACE_RATE a second: a crowd's place
    round is spread over several refreshes."""
    room = await queued(scenario, capacity=5, factor=1.0)
    watch, _, waiters = await _watched_at_t0(room, 60)
    monkeypatch.setattr(watch_module, "PLACE_RATE", 10)
    await watch.refresh()
    # The draw queued every client for its new place, sent after the draw's grace.
    assert watch.woken["place"] == 0
    assert len(watch._places) == 60
    watch._places_from = 0.0
    # Then the rate lets a few through each refresh (at most one interval's credit).
    watch._place_credit = 100.0
    watch._pump_places()
    assert watch.woken["place"] == 1  # 10 a second: one an active interval of 0.1 s
    assert 60 - 1 - watch.woken["turn"] <= len(watch._places) < 60
    for waiter, _ in waiters.values():
        assert waiter.position > 0


async def test_the_sell_out_answers_parked_streams_in_one_pass(scenario: Scenario) -> None:
    """At the sell-out, each client parked in its wait with an answering hook is sent
    its answer from the watcher's pass, in queue order, and woken only to end; a hook
    that cannot answer (False), or a client not parked, is woken to answer itself."""
    room = await queued(scenario, capacity=2, factor=1.0)
    watch, owners, waiters = await _watched_at_t0(room, 8)
    await watch.refresh()  # draws, admits 2
    answered: list[int] = []
    declines = set()

    def hook(waiter: Waiter) -> Any:
        def answer(snap: Any) -> bool:
            assert snap.state == "sold_out"
            if waiter.position in declines:
                return False
            answered.append(waiter.position)
            return True

        return answer

    parked = []
    for waiter, _ in waiters.values():
        waiter._event.clear()
        if waiter.turn:
            continue
        waiter.on_sold_out = hook(waiter)
        if waiter.position != 8:  # the last one is busy (not parked) at the sell-out
            parked.append(asyncio.create_task(waiter.wait(10)))
    declines.add(5)
    await asyncio.sleep(0)  # the parked clients are in their wait now
    await _admitted_reserve(room, owners, waiters)
    await watch.refresh()
    assert watch.snapshot is not None
    assert watch.snapshot.state == "sold_out"
    assert answered == [3, 4, 6, 7]  # queue order; 5 declined, 8 was not parked
    assert watch.woken["answered"] == 4
    assert await asyncio.gather(*parked) == [True] * 5
    by_place = {w.position: w for w, _ in waiters.values()}
    assert [p for p in range(3, 9) if by_place[p].answered] == [3, 4, 6, 7]
    assert all(_woken(by_place[p]) for p in (8,))


async def test_answered_handlers_end_in_paced_batches(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handlers of the streams the sell-out answered are woken END_BATCH at a time,
    one batch every END_PAUSE_S (the least urgent work: new connections come first);
    stopping the watcher wakes the rest at once."""
    monkeypatch.setattr(watch_module, "END_BATCH", 2)
    monkeypatch.setattr(watch_module, "END_PAUSE_S", 30.0)
    room = await queued(scenario, capacity=1, factor=1.0)
    watch, owners, waiters = await _watched_at_t0(room, 6)
    await watch.refresh()
    parked = []
    for waiter, _ in waiters.values():
        waiter._event.clear()
        if not waiter.turn:
            waiter.on_sold_out = lambda snap: True
            parked.append((waiter, asyncio.create_task(waiter.wait(60))))
    await asyncio.sleep(0)
    await _admitted_reserve(room, owners, waiters)
    await watch.refresh()
    await asyncio.sleep(0.05)
    assert watch.woken["answered"] == 5
    assert sum(task.done() for _, task in parked) == 2  # the first batch only
    await watch.stop()
    await asyncio.sleep(0)
    assert all(task.done() for _, task in parked)


async def test_a_ticket_read_before_is_answered_from_the_shared_fields(
    scenario: Scenario,
) -> None:
    """A ticket this process read (``remember``) is answered without Redis (``known``)
    when that follows from the shared fields, and then says what a read says. It is read
    again when its answer does not follow (it had no place at the draw, its turn came,
    it holds a token), for any other account, when it was read after the watcher's
    last read, and after the room changed under it (a rebuild)."""
    room = await queued(scenario, capacity=3, factor=1.0)
    owners = await _crowd(room, 12)
    room.scenario.clock.now_ms = T0_MS - 1
    watch = RoomWatch(room.rooms, room.release_id)
    await watch.refresh()

    async def read_all() -> dict[str, TicketStatus]:
        found = {}
        for ticket, account in owners.items():
            found[ticket] = await room.status(ticket, account)
            watch.remember(account, found[ticket])
        return found

    await read_all()
    now = scenario.clock.now_ms
    for ticket, account in owners.items():
        known = watch.known(ticket, account)
        assert known is not None
        assert _seen(known, now) == _seen(await room.status(ticket, account), now)
        assert watch.known(ticket, "a-stranger") is None

    room.at_t0()
    await watch.refresh()  # draws, admits 3
    assert all(watch.known(t, a) is None for t, a in owners.items())  # read before the draw
    await read_all()
    now = scenario.clock.now_ms
    waiting = []
    for ticket, account in owners.items():
        fresh = await room.status(ticket, account)
        known = watch.known(ticket, account)
        if fresh.outcome(now) == "admitted":
            assert known is None  # its token is its own
        else:
            assert known is not None
            assert _seen(known, now) == _seen(fresh, now)
            waiting.append(ticket)
    assert len(waiting) == 9

    for ticket, account in owners.items():
        status = await room.status(ticket, account)
        if status.token:
            await room.reserve(account, "p" + account[1:], token=status.token)
    await room.rooms.advance(room.release_id)  # another process's step: sold out
    read_after = await read_all()  # the watcher has not read the release since
    assert all(read_after[t].state == "sold_out" for t in waiting)
    assert all(watch.known(t, owners[t]) is None for t in waiting)
    await watch.refresh()
    snap = watch.snapshot
    assert snap is not None
    assert snap.state == "sold_out"
    now = scenario.clock.now_ms
    for ticket in waiting:
        known = watch.known(ticket, owners[ticket])
        assert known is not None
        assert known.outcome(now) == "sold_out"
        assert _seen(known, now) == _seen(await room.status(ticket, owners[ticket]), now)

    # A room that is not the one the process read before (here: another seed, as a
    # rebuild of an undrawn room gives) forgets every ticket.
    watch.snapshot = dataclasses.replace(snap, seed_hash="0" * 64)
    await watch.refresh()
    assert all(watch.known(t, owners[t]) is None for t in waiting)


async def test_remembered_tickets_are_bounded(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher remembers at most KNOWN_TICKETS tickets; the oldest read goes first."""
    monkeypatch.setattr(watch_module, "KNOWN_TICKETS", 3)
    room = await queued(scenario, capacity=1, factor=1.0)
    owners = await _crowd(room, 5)
    room.scenario.clock.now_ms = T0_MS - 1
    watch = RoomWatch(room.rooms, room.release_id)
    await watch.refresh()
    for ticket, account in owners.items():
        watch.remember(account, await room.status(ticket, account))
    known = [t for t, a in owners.items() if watch.known(t, a) is not None]
    assert known == list(owners)[2:]
