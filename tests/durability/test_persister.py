"""The persister against a real Redis and Postgres: every event once, projections equal
to the store, redelivery harmless, poison entries dead-lettered, diverged histories
fenced and not applied, and the same on a Redis Cluster."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from inventory.devtools.servers import RedisClusterServers, RedisServer
from inventory.record.bookings import PgBookings
from inventory.record.persister import GROUP, Persister, PersisterConfig
from inventory.record.projection import HOLD_EVENTS, OutboxEntry
from inventory.record.queries import QUERIES
from inventory.store import keys

from .outbox_world import Load, World, check_persisted, open_world, world_streams


@pytest.fixture
async def world(private_redis: RedisServer, database: str) -> AsyncIterator[World]:
    """Two department-day tags of three slots each, forty patients."""
    async with open_world(private_redis.url, database) as w:
        yield w


def persister(world: World, **options: Any) -> Persister:
    """An in-process persister over the world's streams, with test-sized timings."""
    hook = options.pop("hook", None)
    config = PersisterConfig(
        match=world.stream_patterns,
        claim_min_idle_s=options.pop("claim_min_idle_s", 0.5),
        block_s=0.1,
        stats_interval_s=0.2,
        **options,
    )
    return Persister(world.client, world.pool, config=config, on_diverged=hook)


async def table_counts(world: World) -> dict[str, int]:
    """Row counts of every table the persister writes."""
    tables = ("inventory_events", "holds", "bookings", "booking_status_history", "patient_bans")
    async with world.pool.acquire() as conn:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in tables}


async def stream_entries(world: World) -> list[OutboxEntry]:
    """Every entry of the world's streams, as the persister reads them."""
    entries = []
    for stream in await world_streams(world):
        for entry_id, fields in await world.client.xrange(stream):
            entries.append(OutboxEntry(stream, entry_id, fields))
    return entries


async def test_every_event_lands_once_and_redelivery_changes_nothing(world: World) -> None:
    """A random walk of store steps ends in Postgres once per event, equal to Redis;
    a second persister and a redelivery of every entry change nothing."""
    load = Load(world, seed=7)
    for _ in range(800):
        await load.step()
    assert load.report.errors == []
    before = await stream_entries(world)
    first = persister(world)
    assert await first.drain(timeout_s=30)
    figures = await check_persisted(world)
    assert first.stats.events_persisted == figures["events"]
    assert first.stats.duplicates == 0
    counts = await table_counts(world)
    assert counts["inventory_events"] == figures["events"] > 500
    async with world.pool.acquire() as conn:
        types = {r["type"] for r in await conn.fetch("SELECT DISTINCT type FROM inventory_events")}
    # The storm joins no waitlist: no offer is made in it.
    assert types >= {"schedule_loaded", "capacity_adjusted", *(HOLD_EVENTS - {"waitlist_offered"})}
    assert first.stats.patient_events > 0

    again = persister(world, consumer="second")
    assert await again.drain(timeout_s=10)
    assert again.stats.events_persisted == 0
    # Redelivery: every entry once more, as after a crash between commit and XACK.
    await again._persist(before)
    assert again.stats.duplicates == figures["events"]
    assert again.stats.events_persisted == 0
    assert await table_counts(world) == counts
    await check_persisted(world)


async def test_the_confirm_path_and_the_persister_meet_in_either_order(world: World) -> None:
    """Bookings written by confirm (seq 0) before or after the persister end the same."""
    scenario, slot = world.slots()[0]
    patient = world.patients[0]
    bookings = PgBookings(world.pool)
    held = await world.store.reserve(
        scenario.request(slot, patient_id=patient, account_id=f"acct-{patient}")
    )
    booked = await world.store.confirm(held.hold.hold_id, account_id="", payment_ref="pay-1")
    await bookings.record(booked.hold)  # the API's synchronous write, before the events
    assert await persister(world).drain(timeout_s=10)
    cancelled = await world.store.release(
        held.hold.hold_id, account_id="", reason="patient_cancelled"
    )
    assert await persister(world).drain(timeout_s=10)
    await bookings.record(booked.hold)  # a late retry of the confirm write: not backwards
    await bookings.record(cancelled.hold)
    await check_persisted(world)
    async with world.pool.acquire() as conn:
        row = await conn.fetchrow(QUERIES["get_hold"], held.hold.hold_id)
        history = await conn.fetch(QUERIES["list_status_history"], held.hold.hold_id)
    assert row["state"] == "cancelled"
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "held"),
        ("held", "booked"),
        ("booked", "cancelled"),
    ]


async def test_a_poison_entry_goes_to_dead_letters_and_the_rest_is_persisted(
    world: World,
) -> None:
    """An entry the database refuses, and one that is not an event at all, are tried
    max_attempts times, then dead-lettered and acknowledged; the rest of the batch lands."""
    load = Load(world, seed=11)
    for _ in range(50):
        await load.step()
    stream = keys.tag_keys(world.tags[0]).outbox
    refused = await world.client.xadd(
        stream, {"type": "Not-A-Type", "seq": "900000", "at": "1", "tag": world.tags[0]}
    )
    malformed = await world.client.xadd(stream, {"type": "hold_created", "tag": world.tags[0]})
    for _ in range(50):
        await load.step()
    worker = persister(world, max_attempts=3, poison_retry_s=0.05)
    assert await worker.drain(timeout_s=30)
    assert worker.stats.dead_letters == 2
    await check_persisted(world, dead_letters=2)
    async with world.pool.acquire() as conn:
        rows = {
            r["entry_id"]: r
            for r in await conn.fetch("SELECT * FROM dead_letters ORDER BY entry_id")
        }
    assert set(rows) == {refused, malformed}
    assert "CheckViolation" in rows[refused]["error"]
    assert rows[refused]["seq"] == 900000
    assert "MalformedEntryError" in rows[malformed]["error"]
    assert rows[malformed]["payload"] == {"type": "hold_created", "tag": world.tags[0]}


async def test_a_diverged_history_is_fenced_and_not_applied(world: World) -> None:
    """An event whose (tag, seq) Postgres holds under another stream id calls the fence
    hook with its tag, changes no row, is kept as evidence and acknowledged; a hook that
    fails leaves the entry pending until it succeeds."""
    load = Load(world, seed=3)
    for _ in range(30):
        await load.step()
    assert await persister(world).drain(timeout_s=10)
    counts = await table_counts(world)
    tag = world.tags[0]
    async with world.pool.acquire() as conn:
        recorded = await conn.fetchrow(
            "SELECT * FROM inventory_events WHERE tag = $1 AND type = 'hold_created'"
            " ORDER BY seq LIMIT 1",
            tag,
        )
    # What a Redis restored from an older copy would write next: the same seq, other news.
    fields = {"type": recorded["type"], "seq": str(recorded["seq"]), "at": "1", "tag": tag}
    fields.update(recorded["payload"])
    fields["channel"] = "diverged"
    stream_id = await world.client.xadd(keys.tag_keys(tag).outbox, fields)
    calls: list[str] = []

    async def fence(fenced_tag: str) -> None:
        calls.append(fenced_tag)
        if len(calls) == 1:
            raise ConnectionError("Redis went away while fencing")

    worker = persister(world, hook=fence, poison_retry_s=0.05)
    assert await worker.drain(timeout_s=10)
    assert calls == [tag, tag]
    assert worker.stats.diverged == 2  # seen again after the failed fence
    assert await table_counts(world) == counts
    async with world.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT stream_id FROM inventory_events WHERE tag = $1 AND seq = $2",
            tag,
            recorded["seq"],
        )
        evidence = await conn.fetchrow(
            "SELECT error, attempts FROM dead_letters WHERE entry_id = $1", stream_id
        )
    assert stored == recorded["stream_id"]
    assert evidence["error"].startswith("diverged:")
    assert await world.client.xlen(keys.tag_keys(tag).outbox) == 0


async def test_entries_of_a_dead_consumer_are_taken_over(world: World) -> None:
    """Entries read by a consumer that never acknowledged them are claimed by another
    after min-idle and persisted once; nothing is reported deleted."""
    load = Load(world, seed=5)
    for _ in range(100):
        await load.step()
    dead = persister(world, consumer="dead")
    await dead.discover()
    streams = dict.fromkeys(await world_streams(world), ">")
    taken = await world.client.xreadgroup(GROUP, "dead", streams, count=1000)
    read = sum(len(entries) for _, entries in taken)
    assert read > 50
    alive = persister(world, consumer="alive", claim_min_idle_s=0.3)
    assert await alive.drain(timeout_s=10)
    assert alive.stats.autoclaimed == read
    assert alive.stats.autoclaim_deleted == 0
    await check_persisted(world)


async def test_a_deleted_stream_is_joined_again_when_it_comes_back(world: World) -> None:
    """A stream deleted under the persister (a rebuild) is forgotten, and read from its
    first entry once scripts write to it again."""
    worker = persister(world)
    assert await worker.drain(timeout_s=10)
    tag = world.tags[0]
    await world.client.delete(keys.tag_keys(tag).outbox)
    await worker.step()
    scenario, slot = next((sc, s) for sc, s in world.slots() if sc.tag == tag)
    patient = world.patients[1]
    outcome = await world.store.reserve(
        scenario.request(slot, patient_id=patient, account_id=f"acct-{patient}")
    )
    world.witnessed.add((outcome.event_id or "", tag))
    assert await worker.drain(timeout_s=10)
    async with world.pool.acquire() as conn:
        assert await conn.fetchrow(QUERIES["get_hold"], outcome.hold.hold_id) is not None


async def test_drain_is_not_caught_up_while_a_stream_is_set_aside(world: World) -> None:
    """A stream whose Cluster node was out of reach is set aside, and its events are
    not in the figures: drain must not answer "caught up" (it did, and a test of a
    failover saw Postgres lack a whole tag after a drain that said so) until the stream
    is reachable again and its events are persisted."""
    load = Load(world, seed=3)
    for _ in range(20):
        await load.step()
    worker = persister(world, retry_max_s=0.6)
    await worker.discover()
    stream = sorted(await world_streams(world))[0]
    # Its node went away before the persister ever sampled it (the failover's case).
    worker._set_aside(stream, ConnectionError("its node is out of reach"))
    worker.stats.lag.pop(stream, None)
    worker.stats.pending.pop(stream, None)
    assert not await worker.drain(timeout_s=0.3)  # set aside for 0.6 s
    assert await worker.drain(timeout_s=10)
    await check_persisted(world)


@pytest.mark.cluster
async def test_persister_on_a_redis_cluster(
    redis_cluster: RedisClusterServers, database: str
) -> None:
    """On a 3-master Cluster: streams found on every primary, read per stream, every
    event once in Postgres."""
    nodes = [ClusterNode(host, port) for host, port in redis_cluster.startup_nodes]
    client = RedisCluster(startup_nodes=nodes, decode_responses=True)
    await client.initialize()
    try:
        async with open_world(redis_cluster.url, database, client=client, tags=4) as world:
            load = Load(world, seed=13)
            for _ in range(400):
                await load.step()
            assert load.report.errors == []
            worker = persister(world)
            assert worker.cluster
            assert await worker.drain(timeout_s=30)
            await check_persisted(world)
            assert worker.stats.streams >= 4
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
