"""The persister's throughput against the offered event rate, and its drain time after an
outage, measured with the persister as a real process (``inventory persist``).

A load generator in this process offers store steps at a steady rate (reserve 60 %,
confirm 20 %, release 20 %: one outbox event each) on the benchmark's own department-day
tags. Meanwhile:

1. **steady**: the persister keeps up, or not: events offered per second against events
   written to Postgres per second, and the backlog (undelivered + pending entries) it
   leaves;
2. **outage**: the persister process is frozen (SIGSTOP) for ``outage`` seconds while the
   load goes on, then thawed (SIGCONT); the drain time is how long the backlog takes to
   fall back under a quarter second's worth of load, with the load still running. The
   drain rate during that time is the persister's capacity, reported as a multiple of
   the offered rate (research/reliability.md G6: drain ≤ 0.5 x outage; G20: capacity
   ≥ 3 x offered);
3. **check**: once the load stops and the backlog is gone, the events Redis numbered
   (the tags' seq) equal the rows in ``inventory_events``.

Freezing the process stands in for any outage of the persister's path (a crash and a
restart, Postgres away): the entries wait in Redis either way. With Postgres itself down
the drain also waits for the persister's next retry (at most ``retry_max_s``, 2 s).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from redis.asyncio import Redis

from inventory.domain import HospitalPolicy, ReserveRequest, ScheduleSpec, SlotSpec
from inventory.errors import InventoryError
from inventory.record.persister import GROUP
from inventory.record.pool import create_pool
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore

#: One open hold or booking per patient per day would refuse most of a random load.
_POLICY = HospitalPolicy(one_per_day=False, hold_ttl_s=3600, max_hold_s=3600)


@dataclass(frozen=True, slots=True)
class PersisterBenchConfig:
    """How hard and how long. Rates in store steps (= events) per second."""

    rate: float = 1500.0
    #: Seconds of the steady phase (after warmup_s untimed seconds).
    seconds: float = 10.0
    outage_s: float = 10.0
    warmup_s: float = 2.0
    batch_size: int = 500
    #: Department-day tags (outbox streams) the load spreads over.
    tags: int = 4
    slots_per_tag: int = 4
    #: Concurrent callers of the load generator.
    concurrency: int = 16
    #: Give up a drain after this long.
    drain_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("rate", "seconds", "outage_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.warmup_s < 0:
            raise ValueError("warmup_s must not be negative")
        if min(self.batch_size, self.tags, self.slots_per_tag, self.concurrency) < 1:
            raise ValueError("batch_size, tags, slots_per_tag and concurrency must be >= 1")


@dataclass
class PersisterBenchReport:
    """What one run measured."""

    config: PersisterBenchConfig
    redis_where: str
    postgres_where: str
    #: Steady phase.
    offered_per_s: float = 0.0
    persisted_per_s: float = 0.0
    steady_backlog_max: int = 0
    steady_backlog_end: int = 0
    #: Outage phase.
    outage_s: float = 0.0
    backlog_at_thaw: int = 0
    drain_s: float = 0.0
    drain_events: int = 0
    #: Whole run.
    events_offered: int = 0
    events_persisted: int = 0
    steps_failed: int = 0
    first_failure: str | None = None
    #: 1-minute load average at the start and the end, and this machine's CPUs: a load
    #: above the CPU count means other work shared the machine (figures disturbed).
    load_average: tuple[float, float] = (0.0, 0.0)
    cpus: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def drain_ratio(self) -> float:
        """Drain time over outage time (G6 asks for at most 0.5)."""
        return self.drain_s / self.outage_s if self.outage_s else 0.0

    @property
    def drain_per_s(self) -> float:
        """Events written per second while draining: the persister's capacity."""
        return self.drain_events / self.drain_s if self.drain_s else 0.0

    @property
    def capacity_ratio(self) -> float:
        """Capacity over the offered rate (G20 asks for at least 3)."""
        return self.drain_per_s / self.offered_per_s if self.offered_per_s else 0.0

    @property
    def lost(self) -> int:
        """Events numbered by Redis and missing from Postgres at the end."""
        return self.events_offered - self.events_persisted

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (``--json``)."""
        c = self.config
        return {
            "benchmark": "persister",
            "config": {
                "rate": c.rate,
                "seconds": c.seconds,
                "outage_s": c.outage_s,
                "warmup_s": c.warmup_s,
                "batch_size": c.batch_size,
                "tags": c.tags,
                "concurrency": c.concurrency,
            },
            "redis": self.redis_where,
            "postgres": self.postgres_where,
            "offered_per_s": round(self.offered_per_s, 1),
            "persisted_per_s": round(self.persisted_per_s, 1),
            "steady_backlog_max": self.steady_backlog_max,
            "steady_backlog_end": self.steady_backlog_end,
            "outage_s": round(self.outage_s, 3),
            "backlog_at_thaw": self.backlog_at_thaw,
            "drain_s": round(self.drain_s, 3),
            "drain_ratio": round(self.drain_ratio, 4),
            "drain_per_s": round(self.drain_per_s, 1),
            "capacity_ratio": round(self.capacity_ratio, 2),
            "events_offered": self.events_offered,
            "events_persisted": self.events_persisted,
            "lost": self.lost,
            "steps_failed": self.steps_failed,
            "first_failure": self.first_failure,
            "load_average": list(self.load_average),
            "cpus": self.cpus,
            "notes": list(self.notes),
        }

    def format_text(self) -> str:
        """The human-readable report."""
        c = self.config
        lines = [
            f"persister vs offered load: {c.rate:,.0f} steps/s asked, {c.tags} tags, batch "
            f"{c.batch_size}; Redis {self.redis_where}; Postgres {self.postgres_where}",
            "",
            f"steady ({c.seconds:g} s): offered {self.offered_per_s:,.0f} events/s, "
            f"persisted {self.persisted_per_s:,.0f} events/s, backlog max "
            f"{self.steady_backlog_max:,} end {self.steady_backlog_end:,}",
            f"outage: persister stopped {self.outage_s:.1f} s -> backlog "
            f"{self.backlog_at_thaw:,} events; drained in {self.drain_s:.2f} s "
            f"(drain/outage {self.drain_ratio:.2f}) at {self.drain_per_s:,.0f} events/s = "
            f"{self.capacity_ratio:.1f} x offered",
            f"check: {self.events_offered:,} events numbered by Redis, "
            f"{self.events_persisted:,} in Postgres, lost {self.lost}",
            f"machine: {self.cpus} CPUs, load average {self.load_average[0]:.1f} at the start, "
            f"{self.load_average[1]:.1f} at the end",
        ]
        if max(self.load_average) > self.cpus > 0:
            lines.append(
                "DISTURBED: the load average exceeded the CPU count; other work shared the "
                "machine and the rates are lower than it can do"
            )
        if self.steps_failed:
            lines.append(f"FAILURES: {self.steps_failed} step(s) failed ({self.first_failure})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Target:
    hospital_id: str
    specs: tuple[ScheduleSpec, ...]
    patients: tuple[str, ...]

    @property
    def tags(self) -> list[str]:
        return [keys.department_day_tag(s.department_id, s.visit_date) for s in self.specs]

    @property
    def patterns(self) -> list[str]:
        return [keys.tag_keys(tag).outbox for tag in self.tags]


def _target(config: PersisterBenchConfig) -> _Target:
    run = secrets.token_hex(4)
    now = datetime.now(UTC)
    visit = (now + timedelta(days=7)).date()
    starts = datetime(visit.year, visit.month, visit.day, 1, tzinfo=UTC)
    specs = tuple(
        ScheduleSpec(
            schedule_id=f"bench-{run}-s{t}",
            hospital_id=f"bench-{run}",
            department_id=f"bench-{run}-d{t}",
            visit_date=visit,
            release_at=now - timedelta(hours=1),
            starts_at=starts,
            ends_at=starts + timedelta(hours=4),
            cancel_deadline=starts - timedelta(hours=1),
            fee_fen=5000,
            slots=tuple(
                SlotSpec(f"bench-{run}-s{t}-{i}", 10**6) for i in range(config.slots_per_tag)
            ),
        )
        for t in range(config.tags)
    )
    patients = tuple(f"bench-{run}-p{i}" for i in range(200))
    return _Target(hospital_id=f"bench-{run}", specs=specs, patients=patients)


async def _seed(pool: asyncpg.Pool, target: _Target) -> None:
    """The catalogue rows and patients the events name (foreign keys of holds)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(QUERIES["upsert_hospital"], target.hospital_id, "Bench", "UTC", {})
        for spec in target.specs:
            doctor = f"{spec.schedule_id}-doc"
            await conn.execute(
                QUERIES["upsert_department"], spec.department_id, target.hospital_id, None, "D", 0
            )
            await conn.execute(
                QUERIES["upsert_doctor"],
                doctor,
                target.hospital_id,
                spec.department_id,
                "Dr",
                "",
                "",
            )
            await conn.execute(
                QUERIES["upsert_schedule"],
                spec.schedule_id,
                target.hospital_id,
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
        for patient in target.patients:
            await conn.execute(
                QUERIES["insert_patient"],
                patient,
                f"{patient}-acct",
                secrets.token_bytes(32),
                "bench",
                b"\x00",
                None,
                b"\x00",
                "female",
                date(1990, 1, 1),
            )


class _Load:
    """Store steps at a steady rate: reserve 60 %, confirm 20 %, release 20 %."""

    def __init__(self, store: SlotStore, target: _Target, rate: float, seed: int) -> None:
        self.store = store
        self.target = target
        self.interval = 1.0 / rate
        self.rng = random.Random(seed)
        self.held: list[str] = []
        self.booked: list[str] = []
        self.steps = 0
        self.failed = 0
        self.first_failure: str | None = None
        self._next = time.monotonic()

    async def run(self, seconds: float, concurrency: int) -> None:
        deadline = time.monotonic() + seconds
        self._next = max(self._next, time.monotonic())
        await asyncio.gather(*(self._worker(deadline) for _ in range(concurrency)))

    async def _worker(self, deadline: float) -> None:
        while True:
            at = self._next
            if at >= deadline or time.monotonic() >= deadline:
                return
            self._next += self.interval
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._step()
                self.steps += 1
            except InventoryError as error:
                self.failed += 1
                self.first_failure = self.first_failure or f"{error.code}: {error}"

    async def _step(self) -> None:
        roll = self.rng.random()
        if roll < 0.6 or len(self.held) + len(self.booked) < 10:
            spec = self.rng.choice(self.target.specs)
            slot = self.rng.choice(spec.slots)
            patient = self.rng.choice(self.target.patients)
            outcome = await self.store.reserve(
                ReserveRequest(
                    hospital_id=spec.hospital_id,
                    department_id=spec.department_id,
                    visit_date=spec.visit_date,
                    slot_id=slot.slot_id,
                    account_id=f"{patient}-acct",
                    patient_id=patient,
                    channel="bench",
                    idempotency_key=uuid.uuid4().hex,
                )
            )
            self.held.append(outcome.hold.hold_id)
        elif roll < 0.8 and self.held:
            hold_id = self.held.pop(self.rng.randrange(len(self.held)))
            await self.store.confirm(hold_id, account_id="", payment_ref=uuid.uuid4().hex[:16])
            self.booked.append(hold_id)
        else:
            pool = self.booked if self.booked and self.rng.random() < 0.5 else self.held
            if not pool:
                pool = self.booked or self.held
            hold_id = pool.pop(self.rng.randrange(len(pool)))
            await self.store.release(hold_id, account_id="", reason="bench")


class _Probe:
    """Events offered (Redis seq), persisted (Postgres rows) and the backlog."""

    def __init__(self, client: Redis, pool: asyncpg.Pool, target: _Target) -> None:
        self.client = client
        self.pool = pool
        self.tags = target.tags

    async def offered(self) -> int:
        total = 0
        for tag in self.tags:
            total += int(await self.client.hget(keys.tag_keys(tag).meta, "seq") or 0)
        return total

    async def persisted(self) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM inventory_events WHERE tag = ANY($1::text[])", self.tags
            )
        return int(value)

    async def backlog(self) -> int:
        """Entries not yet delivered to the persister plus delivered and unacknowledged."""
        total = 0
        for tag in self.tags:
            stream = keys.tag_keys(tag).outbox
            try:
                groups = await self.client.xinfo_groups(stream)
            except Exception:
                continue
            ours = [g for g in groups if g.get("name") == GROUP]
            if not ours:
                total += int(await self.client.xlen(stream))
                continue
            pending = int(ours[0].get("pending") or 0)
            lag = ours[0].get("lag")
            if lag is None:
                lag = max(0, int(await self.client.xlen(stream)) - pending)
            total += int(lag) + pending
        return total

    async def joined(self) -> bool:
        for tag in self.tags:
            try:
                groups = await self.client.xinfo_groups(keys.tag_keys(tag).outbox)
            except Exception:
                return False
            if not any(g.get("name") == GROUP for g in groups):
                return False
        return True


def _start_persister(
    redis_url: str, database_url: str, target: _Target, batch_size: int, log_path: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("INVENTORY_PERSISTER_CRASH_AFTER_COMMIT", None)
    env["INVENTORY_REDIS_URL"] = redis_url
    env["INVENTORY_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "inventory", "persist", "--batch-size", str(batch_size)]
    argv += ["--scan-interval", "0.5", "--min-idle", "600", "--stats-interval", "5"]
    for pattern in target.patterns:
        argv += ["--match", pattern]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_persister_bench(
    redis_url: str,
    database_url: str,
    config: PersisterBenchConfig,
    *,
    work_dir: Path,
    redis_where: str,
    postgres_where: str,
    progress: Callable[[str], None] | None = None,
) -> PersisterBenchReport:
    """Run the benchmark on a Redis and a *migrated* database the run may write to.

    Only the run's own tags, patients and catalogue rows are written; its Redis keys are
    deleted at the end (its Postgres rows stay: give it a scratch database).
    """
    say = progress or (lambda _line: None)
    report = PersisterBenchReport(config, redis_where, postgres_where)
    report.cpus = os.cpu_count() or 0
    load_start = _load_average()
    target = _target(config)
    client = Redis.from_url(redis_url, decode_responses=True)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    log_path = work_dir / "persister.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        store = await SlotStore.connect_scripts(client, policies=PolicyBook(default=_POLICY))
        await _seed(pool, target)
        for spec in target.specs:
            await store.load_schedule(spec)
        probe = _Probe(client, pool, target)
        load = _Load(store, target, config.rate, seed=secrets.randbits(32))
        process = _start_persister(redis_url, database_url, target, config.batch_size, log_path)
        deadline = time.monotonic() + 30
        while not await probe.joined():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the persister did not start; see {log_path}")
            await asyncio.sleep(0.1)
        if config.warmup_s:
            say(f"warming up: {config.warmup_s:g} s at {config.rate:,.0f} steps/s")
            await load.run(config.warmup_s, config.concurrency)

        say(f"steady: {config.seconds:g} s")
        offered0, persisted0, t0 = await probe.offered(), await probe.persisted(), time.monotonic()
        backlog_max = 0

        async def watch(stop: asyncio.Event) -> None:
            nonlocal backlog_max
            while not stop.is_set():
                backlog_max = max(backlog_max, await probe.backlog())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch(stop_watch))
        await load.run(config.seconds, config.concurrency)
        stop_watch.set()
        await watcher
        elapsed = time.monotonic() - t0
        report.offered_per_s = (await probe.offered() - offered0) / elapsed
        report.persisted_per_s = (await probe.persisted() - persisted0) / elapsed
        report.steady_backlog_max = backlog_max
        report.steady_backlog_end = await probe.backlog()

        say(f"outage: persister stopped for {config.outage_s:g} s under the same load")
        os.kill(process.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            await load.run(config.outage_s, config.concurrency)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        report.outage_s = thawed_at - stopped_at
        report.backlog_at_thaw = await probe.backlog()
        persisted_at_thaw = await probe.persisted()
        threshold = max(config.batch_size, int(config.rate / 4))
        drained = asyncio.Event()

        async def keep_loading() -> None:
            while not drained.is_set():
                await load.run(0.5, config.concurrency)

        loader = asyncio.create_task(keep_loading())
        try:
            while await probe.backlog() > threshold:
                if time.monotonic() - thawed_at > config.drain_timeout_s:
                    report.notes.append(f"not drained within {config.drain_timeout_s:g} s")
                    break
                await asyncio.sleep(0.02)
            report.drain_s = time.monotonic() - thawed_at
            report.drain_events = await probe.persisted() - persisted_at_thaw
        finally:
            drained.set()
            await loader
        say(f"drained in {report.drain_s:.2f} s; waiting for the rest")
        deadline = time.monotonic() + config.drain_timeout_s
        while time.monotonic() < deadline:
            if await probe.backlog() == 0:
                break
            await asyncio.sleep(0.05)
        report.events_offered = await probe.offered()
        report.events_persisted = await probe.persisted()
        report.steps_failed = load.failed
        report.first_failure = load.first_failure
        report.load_average = (load_start, _load_average())
        return report
    finally:
        if process is not None:
            _stop(process)
        await _delete_keys(client, target)
        await pool.close()
        await client.aclose()


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return 0.0


async def _delete_keys(client: Redis, target: _Target) -> None:
    with contextlib.suppress(Exception):
        for tag in target.tags:
            await client.delete(*keys.tag_keys(tag).as_list())
            await client.srem(keys.TAG_REGISTRY_KEY, tag)


def describe_url(url: str) -> str:
    """``host:port/db`` of a URL, without credentials."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


def offered_default_note(report: PersisterBenchReport, asked: float) -> None:
    """Note when the load generator could not offer the rate asked for."""
    if report.offered_per_s < 0.9 * asked:
        report.notes.append(
            f"the load generator offered {report.offered_per_s:,.0f} of the "
            f"{asked:,.0f} steps/s asked (one Python process): raise --concurrency or "
            "lower --rate"
        )


async def run_with_servers(
    config: PersisterBenchConfig,
    *,
    redis_url: str | None,
    postgres_url: str | None,
    work_dir: Path,
    progress: Callable[[str], None],
) -> PersisterBenchReport:
    """The whole run: on the given Redis (or a private one, AOF always) and a scratch
    database created on the given Postgres server (or a private one) and dropped at the
    end; the private servers live in ``work_dir`` and are stopped at the end."""
    from inventory.devtools.servers import start_postgres, start_redis
    from inventory.record.migrate import migrate_database

    with contextlib.ExitStack() as servers:
        redis_where = describe_url(redis_url) if redis_url else ""
        if not redis_url:
            progress("starting a private redis-server (AOF always)")
            redis_server = servers.enter_context(start_redis(work_dir / "redis"))
            redis_url, redis_where = redis_server.url, "private redis-server, AOF always"
        admin_url = postgres_url
        postgres_where = describe_url(admin_url) if admin_url else ""
        if not admin_url:
            progress("starting a private Postgres")
            postgres = servers.enter_context(start_postgres(work_dir / "postgres"))
            admin_url, postgres_where = postgres.dsn, f"private Postgres {postgres.version}"
        name = f"bench_persister_{secrets.token_hex(6)}"
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        database_url = admin_url.rsplit("/", 1)[0] + "/" + name
        try:
            await migrate_database(database_url)
            return await run_persister_bench(
                redis_url,
                database_url,
                config,
                work_dir=work_dir,
                redis_where=redis_where,
                postgres_where=postgres_where,
                progress=progress,
            )
        finally:
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            finally:
                await admin.close()
