"""Redis behind Postgres: the fence notices, refuses, and a rebuild restores the state
Postgres recorded, with no unit sold twice; `inventory check` finds drift."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio import Redis

from inventory import errors
from inventory.devtools.servers import RedisServer
from inventory.domain import ReserveRequest, WaitlistJoin
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import create_pool
from inventory.record.projection import OutboxEntry, TagEvent, parse_entry, write_batch
from inventory.record.queries import QUERIES
from inventory.recovery.check import check
from inventory.recovery.fence import StoreUnverifiedError, StoreVerification, verify_store
from inventory.recovery.rebuild import rebuild
from inventory.release import draw
from inventory.release.restore import restore_rooms, room_state
from inventory.release.rooms import RoomStore
from inventory.store import keys
from inventory.store.connection import connect_redis
from inventory.store.slot_store import SlotStore
from inventory.store.waitlist import WaitlistStore
from tests.lua.conftest import ManualClock


@pytest.fixture
async def world(private_redis: RedisServer, database: str) -> AsyncIterator[dict[str, Any]]:
    """A store on a Redis of this test's own (it gets flushed, restarted and rolled back),
    a database of its own, and one schedule of 3 x 3 units."""
    database_url = database
    pool = await create_pool(database_url, min_size=1, max_size=4)
    client = Redis.from_url(private_redis.url, decode_responses=True)
    store = await SlotStore.connect_scripts(client)
    catalogue = PgCatalogue(pool, store)
    hospital, department, doctor = (f"{p}-{uuid.uuid4().hex[:8]}" for p in "hdx")
    async with pool.acquire() as conn:
        await conn.execute(QUERIES["upsert_hospital"], hospital, "H", "Asia/Shanghai", {})
        await conn.execute(QUERIES["upsert_department"], department, hospital, None, "D", 0)
        await conn.execute(QUERIES["upsert_doctor"], doctor, hospital, department, "Dr", "", "")
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    start = datetime(day.year, day.month, day.day, 1, tzinfo=UTC)
    slots = [
        {
            "slot_id": f"sl{i}-{department}",
            "starts_at": start + timedelta(minutes=30 * i),
            "ends_at": start + timedelta(minutes=30 * (i + 1)),
            "capacity": 3,
        }
        for i in range(3)
    ]
    await catalogue.put_schedule(
        {
            "schedule_id": f"s-{department}",
            "hospital_id": hospital,
            "department_id": department,
            "doctor_id": doctor,
            "visit_date": day,
            "session": "morning",
            "starts_at": start,
            "ends_at": start + timedelta(hours=4),
            "release_at": start - timedelta(days=7),
            "cancel_deadline": start - timedelta(hours=12),
            "fee_fen": 5000,
            "location": "",
        },
        slots,
    )
    yield {
        "store": store,
        "pool": pool,
        "client": client,
        "hospital": hospital,
        "department": department,
        "day": day,
        "slots": [s["slot_id"] for s in slots],
        "tag": keys.department_day_tag(department, day),
        "bookings": PgBookings(pool),
        "port": private_redis.port,
        "redis_url": private_redis.url,
        "database_url": database_url,
        "catalogue": catalogue,
        "doctor": doctor,
        "start": start,
    }
    await pool.close()
    await client.aclose()


async def persist_stream(world: dict[str, Any]) -> int:
    """Copy the tag's outbox into the event log, as the persister does (not its job
    to test here); returns the highest seq recorded."""
    entries = await world["client"].xrange(keys.tag_keys(world["tag"]).outbox)
    async with world["pool"].acquire() as conn:
        await conn.fetch(
            QUERIES["record_events"],
            [f["tag"] for _, f in entries],
            [int(f["seq"]) for _, f in entries],
            [f["type"] for _, f in entries],
            [datetime.fromtimestamp(int(f["at"]) / 1000, tz=UTC) for _, f in entries],
            [dict(f) for _, f in entries],
            [entry_id for entry_id, _ in entries],
        )
        return int(
            await conn.fetchval(QUERIES["get_tag_sequence"], world["tag"])
            and (await conn.fetchrow(QUERIES["get_tag_sequence"], world["tag"]))["last_seq"]
        )


async def book(world: dict[str, Any], slot: str) -> str:
    """Reserve and confirm one unit for a new patient; the booking is in Postgres."""
    patient = f"p{uuid.uuid4().hex[:12]}"
    async with world["pool"].acquire() as conn:
        await conn.execute(
            "INSERT INTO patients (id, account_id, blind_index, key_id, name_enc, phone_enc,"
            " resident_id_enc, gender, birth_date) VALUES ($1, 'a', $2, 'k', '\\x00', '\\x00',"
            " '\\x00', 'male', '1990-01-01')",
            patient,
            uuid.uuid4().bytes + uuid.uuid4().bytes,
        )
    request = ReserveRequest(
        world["hospital"],
        world["department"],
        world["day"],
        slot,
        "acct",
        patient,
        "wechat",
        uuid.uuid4().hex,
    )
    held = await world["store"].reserve(request)
    booked = await world["store"].confirm(held.hold.hold_id, account_id="", payment_ref="pay")
    await world["bookings"].record(booked.hold)
    return held.hold.hold_id


async def sell_out(store: SlotStore, world: dict[str, Any], slot: str) -> int:
    """Reserve until sold out; how many units were still free."""
    sold = 0
    while True:
        request = ReserveRequest(
            world["hospital"],
            world["department"],
            world["day"],
            slot,
            "acct2",
            f"q{uuid.uuid4().hex[:10]}",
            "web",
            uuid.uuid4().hex,
        )
        try:
            await store.reserve(request)
        except errors.SoldOutError:
            return sold
        sold += 1


async def test_empty_store_is_fenced_then_rebuilt(world: dict[str, Any]) -> None:
    """After Redis loses everything, the tag is fenced; the rebuild restores every
    booking, and only the units no booking holds can be sold again."""
    booked = [await book(world, world["slots"][0]) for _ in range(2)]
    await persist_stream(world)
    await world["client"].flushall()
    report = await verify_store(world["store"], world["pool"])
    assert report.fenced == [world["tag"]]
    with pytest.raises(errors.StoreFencedError):
        await sell_out(world["store"], world, world["slots"][0])
    result = await rebuild(world["store"], world["pool"])
    assert result.tags == [world["tag"]]
    for hold_id in booked:
        hold = await world["store"].get_hold(hold_id)
        assert hold is not None
        assert hold.state.value == "booked"
    assert await sell_out(world["store"], world, world["slots"][0]) == 1
    assert (await verify_store(world["store"], world["pool"])).fenced == []


async def test_rollback_to_older_copy_is_fenced(world: dict[str, Any]) -> None:
    """Redis restored from an older copy while Postgres is ahead: fenced, then the
    rebuild brings back the bookings made after the copy: 0 oversold."""
    tk = keys.tag_keys(world["tag"])
    await book(world, world["slots"][1])
    raw = Redis.from_url(f"redis://127.0.0.1:{world['port']}")
    try:
        snapshot = {key: await raw.dump(key) for key in tk.as_list()}
    finally:
        await raw.aclose()
    later = [await book(world, world["slots"][1]) for _ in range(2)]
    await persist_stream(world)
    # Restoring the older copy of the tag's keys stands for a failover or file restore.
    raw = Redis.from_url(f"redis://127.0.0.1:{world['port']}")
    try:
        for key, value in snapshot.items():
            await raw.delete(key)
            if value is not None:
                await raw.restore(key, 0, value)
    finally:
        await raw.aclose()
    assert (await verify_store(world["store"], world["pool"])).fenced == [world["tag"]]
    await rebuild(world["store"], world["pool"], only_fenced=True)
    for hold_id in later:
        hold = await world["store"].get_hold(hold_id)
        assert hold is not None
        assert hold.state.value == "booked"
    assert await sell_out(world["store"], world, world["slots"][1]) == 0


async def test_a_booking_lost_with_all_its_events_is_fenced(world: dict[str, Any]) -> None:
    """A confirm answered 200 (the booking is in Postgres) whose reserve and confirm
    events Redis lost before the persister took them (a failover's replica never got
    them): Redis's sequence equals Postgres's, yet the tag is fenced, and the rebuild
    brings the booking back: the unit is not sold again."""
    tk = keys.tag_keys(world["tag"])
    await persist_stream(world)
    raw = Redis.from_url(f"redis://127.0.0.1:{world['port']}")
    try:
        snapshot = {key: await raw.dump(key) for key in tk.as_list()}
    finally:
        await raw.aclose()
    lost = await book(world, world["slots"][2])
    raw = Redis.from_url(f"redis://127.0.0.1:{world['port']}")
    try:
        for key, value in snapshot.items():
            await raw.delete(key)
            if value is not None:
                await raw.restore(key, 0, value)
    finally:
        await raw.aclose()
    assert await world["store"].get_hold(lost) is None
    report = await verify_store(world["store"], world["pool"])
    assert report.fenced == [world["tag"]]
    with pytest.raises(errors.StoreFencedError):
        await sell_out(world["store"], world, world["slots"][2])
    await rebuild(world["store"], world["pool"], only_fenced=True)
    hold = await world["store"].get_hold(lost)
    assert hold is not None
    assert hold.state.value == "booked"
    assert await sell_out(world["store"], world, world["slots"][2]) == 2
    # Once Redis has the booking again, the next comparison leaves the tag alone.
    assert (await verify_store(world["store"], world["pool"])).fenced == []


async def test_check_finds_drift_and_violations(world: dict[str, Any]) -> None:
    """A consistent store checks clean; a tampered count is reported."""
    await book(world, world["slots"][2])
    await persist_stream(world)
    report = await check(world["store"], world["pool"])
    assert report.ok, json.dumps(report.as_dict(), default=str)
    await world["client"].hincrby(keys.tag_keys(world["tag"]).slots, f"{world['slots'][2]}:rem", -1)
    report = await check(world["store"], world["pool"])
    assert not report.ok
    assert [v.kind for v in report.violations] == ["conservation"]


async def another_tag(world: dict[str, Any]) -> dict[str, Any]:
    """The world with a second department-day tag of its own (3 slots of 3 units), whose
    department sorts after the first's."""
    department = f"zz-{uuid.uuid4().hex[:8]}"
    async with world["pool"].acquire() as conn:
        await conn.execute(
            QUERIES["upsert_department"], department, world["hospital"], None, "D2", 0
        )
    start = world["start"]
    slots = [
        {
            "slot_id": f"sl{i}-{department}",
            "starts_at": start + timedelta(minutes=30 * i),
            "ends_at": start + timedelta(minutes=30 * (i + 1)),
            "capacity": 3,
        }
        for i in range(3)
    ]
    await world["catalogue"].put_schedule(
        {
            "schedule_id": f"s-{department}",
            "hospital_id": world["hospital"],
            "department_id": department,
            "doctor_id": world["doctor"],
            "visit_date": world["day"],
            "session": "afternoon",
            "starts_at": start,
            "ends_at": start + timedelta(hours=4),
            "release_at": start - timedelta(days=7),
            "cancel_deadline": start - timedelta(hours=12),
            "fee_fen": 5000,
            "location": "",
        },
        slots,
    )
    return {
        **world,
        "department": department,
        "slots": [s["slot_id"] for s in slots],
        "tag": keys.department_day_tag(department, world["day"]),
    }


async def oversell_in_postgres(world: dict[str, Any], slot: str, capacity: int) -> None:
    """Postgres's record of an oversold slot (what a node restarted without its data
    and a reload of the schedule made possible): its capacity below its bookings."""
    async with world["pool"].acquire() as conn:
        await conn.execute("UPDATE slots SET capacity = $2 WHERE id = $1", slot, capacity)


async def test_check_reports_an_oversold_slot_and_fenced_tags(world: dict[str, Any]) -> None:
    """Postgres holding more bookings for a slot than its capacity is an `oversold`
    violation even while the tag is fenced (not compared with Redis), and the fenced
    tags are listed and fail the check."""
    other = await another_tag(world)
    await book(world, world["slots"][0])
    await book(world, world["slots"][0])
    await book(other, other["slots"][0])
    await persist_stream(world)
    await persist_stream(other)
    assert (await check(world["store"], world["pool"])).ok
    await oversell_in_postgres(world, world["slots"][0], 1)
    await world["client"].flushall()
    assert (await verify_store(world["store"], world["pool"])).fenced == [
        world["tag"],
        other["tag"],
    ]
    report = await check(world["store"], world["pool"])
    assert not report.ok
    assert report.fenced == [world["tag"], other["tag"]]
    assert [(v.tag, v.slot, v.kind, v.postgres) for v in report.violations] == [
        (world["tag"], world["slots"][0], "oversold", {"capacity": 1, "held": 0, "booked": 2})
    ]


async def test_rebuild_goes_on_past_an_oversold_tag_and_raises_it_when_asked(
    world: dict[str, Any],
) -> None:
    """`rebuild --fenced` reports the oversold tag with its slot and rebuilds the next
    tag all the same, exit 1; `--raise-oversold` then raises the slot's capacity to the
    units sold (reported), in Postgres and Redis: the tag serves again, sells nothing
    more on that slot, and the check passes."""
    other = await another_tag(world)
    booked = [await book(world, world["slots"][0]) for _ in range(2)]
    other_booking = await book(other, other["slots"][0])
    await persist_stream(world)
    await persist_stream(other)
    await oversell_in_postgres(world, world["slots"][0], 1)
    await world["client"].flushall()
    await verify_store(world["store"], world["pool"])
    env = {
        **os.environ,
        "INVENTORY_REDIS_URL": world["redis_url"],
        "INVENTORY_DATABASE_URL": world["database_url"],
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inventory", "rebuild", "--fenced"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "rebuilt 1 tags" in done.stdout
    assert "1 failed" in done.stdout
    failure = done.stderr.rstrip().splitlines()
    assert len(failure) == 1, done.stderr
    assert failure[0].startswith(f"  {world['tag']}: not rebuilt: "), failure
    assert f"slot {world['slots'][0]}: 2 open holds and bookings for capacity 1" in failure[0]
    assert "--raise-oversold" in failure[0]
    restored = await world["store"].get_hold(other_booking)
    assert restored is not None
    assert restored.state.value == "booked"
    with pytest.raises(errors.StoreFencedError):
        await sell_out(world["store"], world, world["slots"][1])

    result = await rebuild(world["store"], world["pool"], tags=[world["tag"]], raise_oversold=True)
    assert result.ok
    assert [(r.slot, r.capacity, r.raised_to) for r in result.raised] == [(world["slots"][0], 1, 2)]
    for hold_id in booked:
        hold = await world["store"].get_hold(hold_id)
        assert hold is not None
        assert hold.state.value == "booked"
    assert await sell_out(world["store"], world, world["slots"][0]) == 0
    assert await sell_out(world["store"], world, world["slots"][1]) == 3
    await persist_stream(world)
    async with world["pool"].acquire() as conn:
        capacity = await conn.fetchval(
            "SELECT capacity FROM slots WHERE id = $1", world["slots"][0]
        )
    assert capacity == 2


async def wait_verified(verification: StoreVerification) -> None:
    for _ in range(50):
        if verification.verified:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the gate did not open")


async def test_gate_closes_after_a_restart(
    private_redis: RedisServer, world: dict[str, Any]
) -> None:
    """A restarted Redis is refused for state changes until the fence verified it."""
    verification = StoreVerification(required=True)
    client = await connect_redis(private_redis.url, on_connect=verification.on_connect)
    verification.attach(client)
    store = await SlotStore.connect_scripts(client, write_gate=verification.check)
    try:
        await verify_store(world["store"], world["pool"])
        await wait_verified(verification)
        private_redis.restart()
        # Pooled connections died with the server; the next ones are new.
        for each in (client, world["client"]):
            with contextlib.suppress(redis.exceptions.ConnectionError):
                await each.ping()
        await client.ping()
        assert not verification.verified
        request = ReserveRequest(
            world["hospital"],
            world["department"],
            world["day"],
            world["slots"][0],
            "a",
            "p1",
            "web",
            "k1",
        )
        with pytest.raises(StoreUnverifiedError):
            await store.reserve(request)
        await verify_store(world["store"], world["pool"])
        await wait_verified(verification)
        await store.reserve(request)
    finally:
        await verification.close()
        await client.aclose()


async def test_schedule_load_on_a_lost_tag_is_fenced(world: dict[str, Any]) -> None:
    """A schedule loaded again (operator PUT, HIS sync) into a tag whose Redis history is
    behind Postgres is refused and the tag fenced: no counts started from zero, 0 oversold."""
    slot = world["slots"][0]
    for _ in range(3):
        await book(world, slot)
    await persist_stream(world)
    await world["client"].flushall()  # the tag's history is lost, Postgres keeps it
    schedule_id = f"s-{world['department']}"
    catalogue = PgCatalogue(world["pool"], world["store"])
    with pytest.raises(errors.StoreFencedError):
        await catalogue.load_schedule_into_store(schedule_id)
    with pytest.raises(errors.StoreFencedError):
        await sell_out(world["store"], world, slot)
    assert await world["client"].hget(keys.tag_keys(world["tag"]).meta, "fenced") == "1"
    await rebuild(world["store"], world["pool"], only_fenced=True)
    assert await catalogue.load_schedule_into_store(schedule_id)
    assert await sell_out(world["store"], world, slot) == 0


async def test_first_change_after_a_restart_is_refused(
    private_redis: RedisServer, world: dict[str, Any]
) -> None:
    """The state change whose own connection first meets a restarted Redis is refused
    (store_unverified), not let through because it passed the gate before the restart
    was seen."""
    verification = StoreVerification(required=True)
    client = await connect_redis(private_redis.url, on_connect=verification.on_connect)
    verification.attach(client)
    store = await SlotStore.connect_scripts(client, write_gate=verification.check)
    try:
        await verify_store(world["store"], world["pool"])
        await wait_verified(verification)
        private_redis.restart()
        assert verification.verified  # not seen yet: no command since the restart
        request = ReserveRequest(
            world["hospital"],
            world["department"],
            world["day"],
            world["slots"][0],
            "a",
            "p1",
            "web",
            "k1",
        )
        codes = []
        for _ in range(3):  # the first may meet the dead pooled connection
            with pytest.raises((StoreUnverifiedError, errors.StoreUnavailableError)) as refused:
                await store.reserve(request)
            codes.append(refused.value.code)
        assert "store_unverified" in codes, codes
        tk = keys.tag_keys(world["tag"])
        assert await client.hget(tk.slots, f"{world['slots'][0]}:held") == "0"
    finally:
        await verification.close()
        await client.aclose()


async def _patient_row(world: dict[str, Any]) -> str:
    patient = f"p{uuid.uuid4().hex[:12]}"
    async with world["pool"].acquire() as conn:
        await conn.execute(
            "INSERT INTO patients (id, account_id, blind_index, key_id, name_enc, phone_enc,"
            " resident_id_enc, gender, birth_date) VALUES ($1, 'a', $2, 'k', '\\x00', '\\x00',"
            " '\\x00', 'male', '1990-01-01')",
            patient,
            uuid.uuid4().bytes + uuid.uuid4().bytes,
        )
    return patient


async def project_stream(world: dict[str, Any]) -> None:
    """Record and project the tag's outbox into Postgres, as the persister does."""
    stream = keys.tag_keys(world["tag"]).outbox
    entries = await world["client"].xrange(stream)
    events = [parse_entry(OutboxEntry(stream, entry_id, f)) for entry_id, f in entries]
    async with world["pool"].acquire() as conn, conn.transaction():
        await write_batch(conn, [e for e in events if isinstance(e, TagEvent)])


async def test_rebuild_restores_the_live_waitlist(world: dict[str, Any]) -> None:
    """A sold-out slot with a waitlist (an entry offered a freed unit, one waiting, a
    doctor's-day entry waiting) is recorded in Postgres; Redis is wiped and rebuilt:
    the offer is still its entry's (given back, it passes on to the next in order),
    the waiting entries keep their places, ended entries stay out, and a new join
    numbers after the old ones."""
    store, tag = world["store"], world["tag"]
    waitlist = WaitlistStore(store)
    schedule = f"s-{world['department']}"
    holds = []
    for slot in world["slots"]:
        for _ in range(3):
            request = ReserveRequest(
                world["hospital"],
                world["department"],
                world["day"],
                slot,
                "acct",
                await _patient_row(world),
                "web",
                uuid.uuid4().hex,
            )
            holds.append((await store.reserve(request)).hold.hold_id)

    def join(patient: str, *, day: bool = False) -> WaitlistJoin:
        return WaitlistJoin(
            hospital_id=world["hospital"],
            department_id=world["department"],
            visit_date=world["day"],
            schedule_id=schedule,
            account_id="acct-w",
            patient_id=patient,
            channel="app",
            idempotency_key=uuid.uuid4().hex,
            doctor_id=world["doctor"] if day else "",
            day_schedule_ids=(schedule,) if day else (),
        )

    first = await waitlist.join(join(await _patient_row(world)))
    leaver = await waitlist.join(join(await _patient_row(world)))
    second = await waitlist.join(join(await _patient_row(world)))
    third = await waitlist.join(join(await _patient_row(world), day=True))
    await waitlist.leave(leaver.entry.entry_id, account_id="acct-w")
    await store.release(holds[0], account_id="", reason="patient_released")
    offered = await waitlist.entry(first.entry.entry_id)
    assert offered is not None
    assert offered.state.value == "offered"
    await project_stream(world)

    await world["client"].flushall()
    result = await rebuild(store, world["pool"], tags=[tag])
    assert result.ok, result.failed
    restored = await waitlist.entry(first.entry.entry_id)
    assert restored == offered
    assert await waitlist.entry(leaver.entry.entry_id) is None  # ended: not live
    assert await waitlist.position(second.entry) == 1
    day_entry = await waitlist.entry(third.entry.entry_id)
    assert day_entry is not None
    assert day_entry.doctor_id == world["doctor"]
    assert await waitlist.position(day_entry) == 2
    # The patient tags count the live entries again (at most N entries per patient).
    assert set(await waitlist.patient_entries(second.entry.patient_id)) == {second.entry.entry_id}
    newer = await waitlist.join(join(await _patient_row(world)))
    assert newer.entry.seq > third.entry.seq
    assert newer.position == 3
    # The offer given back passes on, in order, in that step.
    await store.release(offered.offer_hold_id, account_id="", reason="patient_released")
    declined = await waitlist.entry(first.entry.entry_id)
    assert declined is not None
    assert declined.state.value == "declined"
    now_offered = await waitlist.entry(second.entry.entry_id)
    assert now_offered is not None
    assert now_offered.state.value == "offered"


async def test_rebuild_restores_a_live_waiting_room(world: dict[str, Any]) -> None:
    """A queued release drawn and admitting (one admitted patient reserved, one holds a
    token, three wait) is recorded in Postgres; Redis is wiped and rebuilt: the room
    governs its schedule again (no reserve without a token), the same seed gives the
    same places, the used admission stays used, the outstanding one has a new token (the
    lost one is refused), and the room sells out as before."""
    tag, pool = world["tag"], world["pool"]
    clock = ManualClock(now_ms=int(datetime.now(tz=UTC).timestamp() * 1000))
    store = await SlotStore.connect_scripts(world["client"], clock=clock)
    t0 = (datetime.now(tz=UTC) + timedelta(hours=1)).replace(microsecond=0)
    start = world["start"] + timedelta(hours=6)
    schedule = f"s2-{world['department']}"
    slot = f"sq-{world['department']}"
    await world["catalogue"].put_schedule(
        {
            "schedule_id": schedule,
            "hospital_id": world["hospital"],
            "department_id": world["department"],
            "doctor_id": world["doctor"],
            "visit_date": world["day"],
            "session": "afternoon",
            "starts_at": start,
            "ends_at": start + timedelta(hours=2),
            "release_at": t0,
            "cancel_deadline": start - timedelta(hours=12),
            "fee_fen": 0,
            "location": "",
        },
        [
            {
                "slot_id": slot,
                "starts_at": start,
                "ends_at": start + timedelta(minutes=30),
                "capacity": 2,
            }
        ],
    )
    rooms = RoomStore(store)
    release = keys.release_id_for(world["department"], world["day"], "pm")
    await rooms.open(
        release,
        [schedule],
        hospital_id=world["hospital"],
        t0_ms=int(t0.timestamp() * 1000),
        window_ms=7_200_000,
        factor=1.0,
        token_ms=60_000,
    )
    people = {}
    for _ in range(5):
        patient = await _patient_row(world)
        ticket, _ = await rooms.join(release, account_id="acct-r", patient_id=patient)
        people[ticket] = patient
    clock.now_ms = int(t0.timestamp() * 1000) + 1_000
    assert (await rooms.advance(release)).admitted == 2
    before = {t: await rooms.status(release, t, account_id="acct-r") for t in people}
    first, second = sorted((s for s in before.values() if s.token), key=lambda s: s.position)

    def reserve(ticket: str, token: str) -> Any:
        return store.reserve(
            dataclasses.replace(
                ReserveRequest(
                    world["hospital"],
                    world["department"],
                    world["day"],
                    slot,
                    "acct-r",
                    people[ticket],
                    "app",
                    uuid.uuid4().hex,
                ),
                admission_token=token,
            )
        )

    await reserve(first.ticket_id, first.token)
    await project_stream(world)
    snap_before = await rooms.snapshot(release)
    assert snap_before is not None

    await world["client"].flushall()
    report = await rebuild(
        store, pool, tags=[tag], after_tag=lambda t: restore_rooms(store, pool, t)
    )
    assert report.ok, report.failed
    assert report.rooms == 1
    snap = await rooms.snapshot(release)
    assert snap is not None
    assert (snap.state, snap.seed, snap.seed_hash) == (
        "admitting",
        snap_before.seed,
        snap_before.seed_hash,
    )
    assert (snap.drawn, snap.admitted, snap.outstanding, snap.used) == (5, 2, 1, 1)
    after = {t: await rooms.status(release, t, account_id="acct-r") for t in people}
    for ticket, status in after.items():
        assert status.position == before[ticket].position
    now = clock.now_ms
    assert after[first.ticket_id].outcome(now) == "reserved"
    renewed = after[second.ticket_id]
    assert renewed.outcome(now) == "admitted"
    assert renewed.token != second.token
    waiting = [t for t in people if t not in (first.ticket_id, second.ticket_id)]
    assert {after[t].outcome(now) for t in waiting} == {"waiting"}
    with pytest.raises(errors.AdmissionRequiredError):
        await reserve(waiting[0], "")
    with pytest.raises(errors.AdmissionTokenInvalidError):
        await reserve(second.ticket_id, second.token)
    await reserve(second.ticket_id, renewed.token)
    assert (await rooms.advance(release)).state == "sold_out"


def test_a_room_not_drawn_is_restored_under_a_new_commitment() -> None:
    """The committed seed of a room not drawn yet lived in Redis only: its restore draws
    a new seed and publishes its hash; the tickets wait for the draw as before (late
    joiners in arrival order), nothing admitted."""
    t0 = datetime(2027, 3, 1, 9, tzinfo=UTC)
    release = {
        "release_id": "d1.20270308.r1",
        "schedule_ids": ["s2", "s1"],
        "drawn_at": None,
        "drawn": None,
        "seed": None,
        "seed_hash": "00" * 32,
        "token_s": 60,
        "factor": 1.2,
        "t0": t0,
        "opens_at": t0 - timedelta(minutes=30),
        "hospital_id": "h1",
    }
    tickets = [
        {
            "ticket_id": "a" * 24,
            "late_seq": 0,
            "account_id": "x",
            "patient_id": "p1",
            "joined_at": t0 - timedelta(minutes=5),
            "position": None,
            "token_expires_at": None,
            "outcome": "waiting",
        },
        {
            "ticket_id": "b" * 24,
            "late_seq": 1,
            "account_id": "y",
            "patient_id": "p2",
            "joined_at": t0 + timedelta(seconds=1),
            "position": None,
            "token_expires_at": None,
            "outcome": "waiting",
        },
    ]
    fields, records, tokens, members = room_state(release, tickets, ["sl1"], 0)
    assert fields["state"] == "open"
    assert fields["seed_hash"] != release["seed_hash"]
    assert fields["seed_hash"] == draw.seed_hash(fields["secret"])
    assert "seed" not in fields
    assert (fields["schedules"], fields["joined"], fields["late"], fields["admitted"]) == (
        "s1 s2",
        2,
        1,
        0,
    )
    assert tokens == []
    assert members == [
        f"d1.20270308.r1|d|{draw.draw_key(fields['secret'], 'a' * 24)}|{'a' * 24}",
        f"d1.20270308.r1|l|0000000001|{'b' * 24}",
    ]
    assert [json.loads(r[1])["k"] for r in records] == ["", ""]
