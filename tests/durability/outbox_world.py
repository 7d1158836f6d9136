"""A world for the persister tests: a private Redis, a migrated database of its own with
the catalogue and patients the store's events name, a load of store steps that remembers
every stream id the scripts returned, and the checks that Postgres holds exactly what
the outbox said.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from inventory import errors
from inventory.domain import HoldState, HospitalPolicy, ScheduleSpec
from inventory.record.persister import GROUP
from inventory.record.pool import create_pool
from inventory.record.projection import HOLD_EVENTS
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore

from ..lua.conftest import START, ManualClock, Scenario

#: Holds may be confirmed, released and extended freely: no patient rule gets in the way.
LOAD_POLICY = HospitalPolicy(one_per_day=False, hold_ttl_s=600, max_hold_s=1800, extend_s=300)


def ms(moment: datetime | None) -> int:
    """An instant as epoch ms (0 for None), as the store keeps it."""
    return int(moment.timestamp() * 1000) if moment is not None else 0


@dataclass
class World:
    """A store on a Redis and a database of the world's own, with N tags."""

    redis_url: str
    client: Any
    store: SlotStore
    clock: ManualClock
    database_url: str
    pool: asyncpg.Pool
    hospital_id: str
    scenarios: list[Scenario]
    specs: list[ScheduleSpec]
    patients: list[str]
    #: (stream id, tag) of every event a script reported (the linearization witnesses;
    #: a stream id is unique in its stream only).
    witnessed: set[tuple[str, str]] = field(default_factory=set)

    @property
    def tags(self) -> list[str]:
        return [s.tag for s in self.scenarios]

    @property
    def stream_patterns(self) -> tuple[str, ...]:
        """SCAN patterns matching this world's outbox streams and no one else's."""
        departments = [f"inv:{{{s.department_id}:*}}:outbox" for s in self.scenarios]
        return (*departments, f"inv:{{p:{self.patient_prefix}*}}:outbox")

    @property
    def patient_prefix(self) -> str:
        return self.patients[0].rsplit("-", 1)[0] + "-"

    def slots(self) -> list[tuple[Scenario, str]]:
        return [
            (sc, slot.slot_id)
            for sc, spec in zip(self.scenarios, self.specs, strict=True)
            for slot in spec.slots
        ]

    def persist_env(self) -> dict[str, str]:
        """Environment of an `inventory persist` subprocess for this world."""
        env = dict(os.environ)
        env["INVENTORY_REDIS_URL"] = self.redis_url
        env["INVENTORY_DATABASE_URL"] = self.database_url
        env.pop(CRASH_ENV, None)
        return env


CRASH_ENV = "INVENTORY_PERSISTER_CRASH_AFTER_COMMIT"


async def seed_catalogue(
    pool: asyncpg.Pool,
    hospital_id: str,
    specs: list[ScheduleSpec],
    patients: list[str],
) -> None:
    """Hospital, departments, one doctor per schedule, schedules, slots and patients."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(QUERIES["upsert_hospital"], hospital_id, "H", "Asia/Shanghai", {})
        for spec in specs:
            doctor = f"doc-{spec.schedule_id}"
            await conn.execute(
                QUERIES["upsert_department"], spec.department_id, hospital_id, None, "D", 0
            )
            await conn.execute(
                QUERIES["upsert_doctor"], doctor, hospital_id, spec.department_id, "Dr", "", ""
            )
            await conn.execute(
                QUERIES["upsert_schedule"],
                spec.schedule_id,
                hospital_id,
                spec.department_id,
                doctor,
                spec.visit_date,
                "morning",
                spec.starts_at,
                spec.ends_at,
                spec.release_at,
                spec.cancel_deadline,
                spec.fee_fen,
                "",
                "open",
            )
            for i, slot in enumerate(spec.slots):
                starts = spec.starts_at + timedelta(minutes=10 * i)
                await conn.execute(
                    QUERIES["upsert_slot"],
                    slot.slot_id,
                    spec.schedule_id,
                    starts,
                    starts + timedelta(minutes=10),
                    slot.capacity,
                )
        for patient in patients:
            await conn.execute(
                QUERIES["insert_patient"],
                patient,
                f"acct-{patient}",
                secrets.token_bytes(32),
                "k1",
                b"\x01name",
                None,
                b"\x01id",
                "female",
                date(1990, 1, 1),
            )


@contextlib.asynccontextmanager
async def open_world(
    redis_url: str,
    database_url: str,
    *,
    client: Any | None = None,
    tags: int = 2,
    slots_per_tag: int = 3,
    capacity: int = 100_000,
    patients: int = 40,
    departments: Sequence[str] = (),
) -> AsyncIterator[World]:
    """A world on the Redis at ``redis_url`` (or ``client``, e.g. a Cluster's) and the
    migrated database at ``database_url``; ``departments`` names the tags' departments
    (to place them on given Cluster masters), fresh ones otherwise."""
    own_client = client is None
    if client is None:
        client = Redis.from_url(redis_url, decode_responses=True)
    clock = ManualClock()
    store = await SlotStore.connect_scripts(
        client, clock=clock, policies=PolicyBook(default=LOAD_POLICY)
    )
    pool = await create_pool(database_url, min_size=1, max_size=4)
    hospital_id = f"h-{uuid.uuid4().hex[:8]}"
    scenarios = [
        Scenario(store=store, clock=clock, client=client, hospital_id=hospital_id)
        for _ in range(tags - len(departments))
    ]
    scenarios += [
        Scenario(store=store, clock=clock, client=client, hospital_id=hospital_id, department_id=d)
        for d in departments
    ]
    specs = [
        sc.schedule({f"slot-{sc.department_id}-{i}": capacity for i in range(slots_per_tag)})
        for sc in scenarios
    ]
    prefix = f"pat{uuid.uuid4().hex[:8]}"
    patient_ids = [f"{prefix}-{i}" for i in range(patients)]
    world = World(
        redis_url=redis_url,
        client=client,
        store=store,
        clock=clock,
        database_url=database_url,
        pool=pool,
        hospital_id=hospital_id,
        scenarios=scenarios,
        specs=specs,
        patients=patient_ids,
    )
    try:
        await seed_catalogue(pool, hospital_id, specs, patient_ids)
        for sc, spec in zip(scenarios, specs, strict=True):
            world.witnessed.add((await store.load_schedule(spec), sc.tag))
        yield world
    finally:
        await pool.close()
        if own_client:
            await client.aclose()


# -- load ------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a load run did."""

    steps: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


class Load:
    """Random store steps over the world's slots: reserve, confirm, extend, release
    (holds and bookings), expiry (the clock moves, the expirer sweeps), capacity changes
    and patient bans. Every stream id a step returns is remembered in ``world.witnessed``.
    """

    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.open: list[str] = []
        self.report = LoadReport()

    def _witness(self, event_id: str | None, tag: str) -> None:
        if event_id:
            self.world.witnessed.add((event_id, tag))

    async def step(self) -> None:
        """One random step."""
        w, rng = self.world, self.rng
        roll = rng.random()
        try:
            if roll < 0.45 or len(self.open) < 5:
                scenario, slot = rng.choice(w.slots())
                patient = rng.choice(w.patients)
                outcome = await w.store.reserve(
                    scenario.request(slot, patient_id=patient, account_id=f"acct-{patient}")
                )
                self._witness(outcome.event_id, scenario.tag)
                self.open.append(outcome.hold.hold_id)
            elif roll < 0.65:
                hold_id = self.open.pop(rng.randrange(len(self.open)))
                outcome = await w.store.confirm(
                    hold_id, account_id="", payment_ref=f"pay-{rng.getrandbits(40):x}"
                )
                self._witness(outcome.event_id, keys.tag_of_hold(hold_id))
                self.open.append(hold_id)
            elif roll < 0.72:
                hold_id = rng.choice(self.open)
                outcome = await w.store.extend(hold_id, account_id="")
                self._witness(outcome.event_id, keys.tag_of_hold(hold_id))
            elif roll < 0.86:
                # A booking moves to another slot of its tag (改约).
                hold_id = rng.choice(self.open)
                tag = keys.tag_of_hold(hold_id)
                slot = rng.choice([s for sc, s in w.slots() if sc.tag == tag])
                new_id = keys.hold_id_for("acct-move", f"move-{rng.getrandbits(40):x}", tag)
                outcome = await w.store.reschedule_in_tag(
                    hold_id, new_id, account_id="", slot_id=slot, max_moves=9, force=True
                )
                self._witness(outcome.event_id, tag)
                self.open.remove(hold_id)
                self.open.append(new_id)
            elif roll < 0.9:
                hold_id = self.open.pop(rng.randrange(len(self.open)))
                outcome = await w.store.release(
                    hold_id,
                    account_id="",
                    reason=rng.choice(["patient_released", "patient_cancelled"]),
                )
                self._witness(outcome.event_id, keys.tag_of_hold(hold_id))
            elif roll < 0.95:
                # Time passes: the holds reserved 10+ minutes ago expire in the sweep.
                w.clock.advance(rng.choice([1, 60, 400]))
                await w.store.expire_all()
            elif roll < 0.98:
                scenario, slot = rng.choice(w.slots())
                await w.store.adjust_capacity(scenario.tag, slot, rng.choice([1, 2, -1]))
            else:
                patient = rng.choice(w.patients)
                until = 0 if rng.random() < 0.4 else w.clock.now_ms + 86_400_000
                await w.store.ban_patient(
                    patient, hospital_id=w.hospital_id, until_ms=until, reason="no_show"
                )
            self.report.steps += 1
        except errors.RefusedError:
            # Expected outcomes of a random walk (an expired hold, extended twice, ...).
            self.report.refused += 1
        except errors.InventoryError as error:
            self.report.errors.append(f"{type(error).__name__}: {error}")

    async def run_for(self, seconds: float, *, rate_per_s: float | None = None) -> LoadReport:
        """Steps for ``seconds``, as fast as one caller goes or at ``rate_per_s``."""
        deadline = time.monotonic() + seconds
        interval = 1 / rate_per_s if rate_per_s else 0.0
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            await self.step()
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        return self.report


# -- the persister as a process --------------------------------------------------------


def start_persister(
    world: World,
    log_path: Path,
    *,
    crash_after_commit: float = 0.0,
    consumer: str | None = None,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """`inventory persist` as a child process on the world's servers."""
    env = world.persist_env()
    if crash_after_commit:
        env[CRASH_ENV] = str(crash_after_commit)
    argv = [
        sys.executable,
        "-m",
        "inventory",
        "persist",
        "--min-idle",
        "1",
        "--scan-interval",
        "0.5",
        "--block",
        "0.2",
        "--stats-interval",
        "1",
        "--batch-size",
        "200",
    ]
    if consumer:
        argv += ["--consumer", consumer]
    argv += extra or []
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()


def stop_persister(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


# -- checks ----------------------------------------------------------------------------


async def world_streams(world: World) -> list[str]:
    """The world's outbox streams (SCAN)."""
    found: list[str] = []
    for pattern in world.stream_patterns:
        found += [s async for s in world.client.scan_iter(match=pattern, _type="stream")]
    return found


async def outbox_backlog(world: World) -> tuple[int, int]:
    """(undelivered, pending) over the world's outbox streams."""
    lag = pending = 0
    for stream in await world_streams(world):
        groups = await world.client.xinfo_groups(stream)
        ours = [g for g in groups if g["name"] == GROUP]
        if not ours:
            lag += await world.client.xlen(stream)
            continue
        pending += int(ours[0]["pending"])
        lag += int(
            ours[0]["lag"] if ours[0]["lag"] is not None else await world.client.xlen(stream)
        )
    return lag, pending


async def wait_caught_up(world: World, timeout_s: float) -> float:
    """Wait until no outbox stream has undelivered or pending entries; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await outbox_backlog(world) == (0, 0):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"outbox not drained in {timeout_s} s: {await outbox_backlog(world)}")


async def check_persisted(world: World, *, dead_letters: int = 0) -> dict[str, int]:
    """Postgres has every event of every tag exactly once and the projection matches Redis.

    Returns figures for the test's summary line. Fails with a precise message otherwise.
    """
    figures = {"events": 0, "holds": 0, "bookings": 0, "history": 0}
    async with world.pool.acquire() as conn:
        for tag in world.tags:
            tk = keys.tag_keys(tag)
            redis_seq = int(await world.client.hget(tk.meta, "seq") or 0)
            row = await conn.fetchrow(
                "SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi,"
                " count(DISTINCT seq) AS distinct_n FROM inventory_events WHERE tag = $1",
                tag,
            )
            assert (row["n"], row["lo"], row["hi"]) == (redis_seq, 1, redis_seq), (
                f"{tag}: Redis seq {redis_seq}, Postgres has {dict(row)}"
            )
            last = await conn.fetchval("SELECT last_seq FROM tag_sequences WHERE tag = $1", tag)
            assert last == redis_seq
            figures["events"] += int(row["n"])
            # The outbox is empty: everything was acknowledged and deleted.
            assert await world.client.xlen(tk.outbox) == 0
            # Hold rows equal the store's records.
            records = await world.client.hgetall(tk.holds)
            rows = {
                r["hold_id"]: r
                for r in await conn.fetch("SELECT *, id AS hold_id FROM holds WHERE tag = $1", tag)
            }
            assert set(rows) == set(records), f"{tag}: holds differ"
            for hold_id in records:
                hold = await world.store.get_hold(hold_id)
                assert hold is not None
                row = rows[hold_id]
                assert row["state"] == hold.state.value, hold_id
                assert ms(row["deadline"]) == hold.deadline_ms
                assert row["extended"] == hold.extended
                assert row["payment_ref"] == hold.payment_ref
                assert ms(row["confirmed_at"]) == hold.confirmed_ms
                assert ms(row["ended_at"]) == hold.ended_ms
                assert row["end_reason"] == hold.end_reason
            figures["holds"] += len(records)
            # Last_seq of each hold = the seq of its newest event.
            newest = {
                r["hold"]: r["seq"]
                for r in await conn.fetch(
                    "SELECT payload->>'hold' AS hold, max(seq) AS seq FROM inventory_events"
                    " WHERE tag = $1 AND type = ANY($2::text[]) GROUP BY 1",
                    tag,
                    sorted(HOLD_EVENTS),
                )
            }
            for hold_id, row in rows.items():
                assert row["last_seq"] == newest[hold_id], hold_id
            # Bookings: one per paid hold, cancelled exactly when the hold is.
            bookings = {
                r["id"]: r["status"]
                for r in await conn.fetch("SELECT id, status FROM bookings WHERE tag = $1", tag)
            }
            paid = {h: r for h, r in rows.items() if r["payment_ref"]}
            assert set(bookings) == set(paid)
            for hold_id, status in bookings.items():
                assert (status == "cancelled") == (paid[hold_id]["state"] == HoldState.CANCELLED)
            figures["bookings"] += len(bookings)
            # One history row per hold event.
            hold_events = await conn.fetchval(
                "SELECT count(*) FROM inventory_events WHERE tag = $1 AND type = ANY($2::text[])",
                tag,
                sorted(HOLD_EVENTS),
            )
            history = await conn.fetchval(
                "SELECT count(*) FROM booking_status_history WHERE event_key LIKE $1",
                f"{tag}#%",
            )
            assert history == hold_events
            figures["history"] += int(history)
            # Slot capacities follow the store.
            caps = {
                r["id"]: r["capacity"]
                for r in await conn.fetch(
                    "SELECT s.id, s.capacity FROM slots s JOIN schedules c ON c.id = s.schedule_id"
                    " WHERE c.department_id = $1",
                    tag.split(":")[0],
                )
            }
            counts = await world.store.slot_counts(tag, caps)
            assert {s: c.capacity for s, c in counts.items()} == caps
        # Every stream id a script returned is recorded, under its tag.
        # (Stream ids are per stream: two tags can have the same one.)
        stored = {
            (r["stream_id"], r["tag"])
            for r in await conn.fetch(
                "SELECT stream_id, tag FROM inventory_events WHERE tag = ANY($1::text[])",
                world.tags,
            )
        }
        missing = sorted(world.witnessed - stored)
        assert not missing, f"{len(missing)} witnessed events missing, e.g. {list(missing)[:3]}"
        # Bans equal the store's patient tags.
        for patient in world.patients:
            bans = await world.client.hgetall(keys.patient_keys(patient).bans)
            rows = await conn.fetch(QUERIES["list_patient_bans"], patient)
            current = {
                r["hospital_id"]: ms(r["banned_until"])
                for r in rows
                if ms(r["banned_until"]) > ms(r["decided_at"])
            }
            assert current == {h: int(u) for h, u in bans.items()}, patient
            assert await world.client.xlen(keys.patient_keys(patient).outbox) == 0
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == dead_letters
    return figures


def log_events(log_path: Path, name: str) -> int:
    """How many log lines of an `inventory persist` log are the event ``name``."""
    if not log_path.exists():
        return 0
    return sum(
        1 for line in log_path.read_text(errors="replace").splitlines() if f'"{name}"' in line
    )


def now_ms() -> int:
    """The store's logical START, for scenario instants."""
    return ms(START)
