"""Reserve steps per second through :class:`~inventory.store.slot_store.SlotStore`, against bare
EVALSHA of the same script from a plain redis-py client, in the same run.

Both sides run the very same ``reserve`` script on the same slot of the benchmark's own
department-day tag, with the same number of concurrent workers, each worker on its own
connection of a pool of ``concurrency`` connections (two identical pools, one per side):

- **store**: ``await store.reserve(ReserveRequest(...))``, the public API with everything
  it does in Python (id checks, hold id and fingerprint digests, the reply parsed into a
  :class:`~inventory.domain.HoldOutcome`);
- **bare**: ``await client.evalsha(sha, len(keys), *keys, *args)`` with the same eleven arguments
  (fresh hold, account and patient ids per call, server clock), checking only the reply's
  return code.

Rounds interleave the sides (store then bare, then bare then store, ...) so that both see
the same machine state; the ratio store/bare is taken inside each round and reported as
median [min-max] over the rounds. A call that does not create a hold counts as a failure,
not as throughput.

The slot has capacity 10**9, so no call is refused for lack of units, and every call
writes a hold (with its outbox event, patient index entry and timers). Every timed phase
runs in a fresh department-day tag of its own (department ``bench-<random>``), deleted
with DEL once the phase is over, untimed: both sides start from the same state, memory
stays bounded by one phase, and nothing else on the server is touched (apart from the
tag's entry in the tag registry, also removed, and the scripts in the script cache).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis

from bench.stats import Spread, percentile_ms
from inventory.domain import ReserveRequest, ScheduleSpec, SlotSpec
from inventory.errors import LUA_OK, InventoryError
from inventory.store import keys
from inventory.store.connection import RedisClient
from inventory.store.slot_store import SERVER_TIME, SlotStore

SIDES: tuple[str, str] = ("store", "bare")

#: Units of the benchmark's slot: never sold out in any run.
BENCH_CAPACITY = 10**9
#: Hospitals are in UTC+8; only used to place the benchmark's schedule in time.
_CHINA = timezone(timedelta(hours=8))
#: Passed as reserve's reclaim limit by both sides (the store's default).
_RECLAIM_LIMIT = 64
#: The bare side's fingerprint: any 32 hex digits do, since every hold id is new.
_BARE_FINGERPRINT = "0" * 32

#: Other processes using more than this (% of one core) during a phase: a disturbed run.
DISTURBED_PCT = 5.0

_T = TypeVar("_T")

#: One call of one side: None when it created a hold, else a short reason.
Call = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """How long and how hard to run."""

    seconds: float = 5.0
    rounds: int = 3
    concurrency: int = 64
    #: Untimed run of each side before round 1 (connections, script cache).
    warmup_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError("seconds must be a positive number")
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not (self.warmup_seconds >= 0 and math.isfinite(self.warmup_seconds)):
            raise ValueError("warmup_seconds must not be negative")


@dataclass(frozen=True, slots=True)
class SideRound:
    """One side's figures in one round."""

    side: str
    #: Calls that created a hold.
    holds: int
    #: Calls that did not (any refusal or Redis error); a healthy run has none.
    failures: int
    first_failure: str | None
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    #: CPU of this (client) process per call, in µs.
    client_cpu_us: float
    #: CPU of the Redis server per call, in µs (INFO cpu; includes other clients' load).
    redis_cpu_us: float
    #: Growth of Redis's used_memory per hold created (hold, index, timers, event).
    redis_bytes_per_hold: float
    #: CPU used by other processes of this machine, in % of one core (busy time from
    #: /proc/stat minus this process and Redis); None off Linux or with a remote Redis.
    #: Above a few % the machine was shared during the phase: its figures are disturbed.
    other_cpu_pct: float | None

    @property
    def ops_per_s(self) -> float:
        """Holds created per second."""
        return self.holds / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Machine-readable figures."""
        return {
            "holds": self.holds,
            "failures": self.failures,
            "first_failure": self.first_failure,
            "elapsed_s": round(self.elapsed_s, 4),
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "client_cpu_us_per_call": round(self.client_cpu_us, 1),
            "redis_cpu_us_per_call": round(self.redis_cpu_us, 1),
            "redis_bytes_per_hold": round(self.redis_bytes_per_hold),
            "other_cpu_pct": None if self.other_cpu_pct is None else round(self.other_cpu_pct, 1),
        }


@dataclass(frozen=True, slots=True)
class RoundResult:
    """Both sides in one round, in the order they ran."""

    index: int
    order: tuple[str, str]
    store: SideRound
    bare: SideRound

    @property
    def ratio(self) -> float:
        """Store throughput divided by bare throughput in this round."""
        return self.store.ops_per_s / self.bare.ops_per_s if self.bare.ops_per_s else 0.0


@dataclass(frozen=True, slots=True)
class ReserveBenchReport:
    """Everything one run measured, with the setting it ran in."""

    config: BenchConfig
    redis_version: str
    #: Where Redis ran, e.g. "private redis-server (AOF off)" or "127.0.0.1:6379".
    redis_where: str
    loop: str
    rounds: tuple[RoundResult, ...]

    @property
    def ratio(self) -> Spread:
        """store/bare throughput ratio over the rounds."""
        return Spread.of([r.ratio for r in self.rounds])

    @property
    def max_other_cpu_pct(self) -> float | None:
        """The most CPU other processes used in any timed phase (None: not measured)."""
        values = [
            f.other_cpu_pct
            for r in self.rounds
            for f in (r.store, r.bare)
            if f.other_cpu_pct is not None
        ]
        return max(values) if values else None

    @property
    def failures(self) -> int:
        """Calls of either side that did not create a hold."""
        return sum(r.store.failures + r.bare.failures for r in self.rounds)

    def side_spreads(self, side: str) -> dict[str, Spread]:
        """Spreads of one side's ops/s and latencies over the rounds."""
        figures = [getattr(r, side) for r in self.rounds]
        return {
            "ops_per_s": Spread.of([f.ops_per_s for f in figures]),
            "p50_ms": Spread.of([f.p50_ms for f in figures]),
            "p99_ms": Spread.of([f.p99_ms for f in figures]),
            "client_cpu_us_per_call": Spread.of([f.client_cpu_us for f in figures]),
            "redis_cpu_us_per_call": Spread.of([f.redis_cpu_us for f in figures]),
            "redis_bytes_per_hold": Spread.of([f.redis_bytes_per_hold for f in figures]),
        }

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (what ``--json`` prints)."""
        ratio = self.ratio
        return {
            "benchmark": "reserve",
            "ratio": round(ratio.median, 4),
            "ratio_min": round(ratio.min, 4),
            "ratio_max": round(ratio.max, 4),
            "failures": self.failures,
            "max_other_cpu_pct": (
                None if self.max_other_cpu_pct is None else round(self.max_other_cpu_pct, 1)
            ),
            "config": {
                "seconds": self.config.seconds,
                "rounds": self.config.rounds,
                "concurrency": self.config.concurrency,
                "warmup_seconds": self.config.warmup_seconds,
            },
            "redis": {"version": self.redis_version, "where": self.redis_where},
            "loop": self.loop,
            "summary": {
                side: {name: s.as_dict() for name, s in self.side_spreads(side).items()}
                for side in SIDES
            },
            "rounds": [
                {
                    "round": r.index,
                    "order": list(r.order),
                    "ratio": round(r.ratio, 4),
                    "store": r.store.as_dict(),
                    "bare": r.bare.as_dict(),
                }
                for r in self.rounds
            ],
        }

    def format_text(self) -> str:
        """The human-readable report."""
        c = self.config
        lines = [
            f"reserve through the store vs bare EVALSHA: {c.rounds} round(s) x {c.seconds:g} s "
            f"per side, concurrency {c.concurrency}, Redis {self.redis_version} "
            f"({self.redis_where}), event loop {self.loop}",
            "",
            f"{'round':>5}  {'side':<5}  {'holds':>9}  {'ops/s':>9}  {'p50 ms':>7}  "
            f"{'p99 ms':>7}  {'client CPU µs/call':>18}  {'Redis CPU µs/call':>17}  "
            f"{'Redis B/hold':>12}  {'other CPU %':>11}  failures",
        ]
        for r in self.rounds:
            for side in r.order:
                f: SideRound = getattr(r, side)
                lines.append(
                    f"{r.index:>5}  {side:<5}  {f.holds:>9,}  {f.ops_per_s:>9,.0f}  "
                    f"{f.p50_ms:>7.2f}  {f.p99_ms:>7.2f}  {f.client_cpu_us:>18.1f}  "
                    f"{f.redis_cpu_us:>17.1f}  {f.redis_bytes_per_hold:>12,.0f}  "
                    f"{_pct(f.other_cpu_pct):>11}  {f.failures}"
                    + (f" (first: {f.first_failure})" if f.first_failure else "")
                )
        lines.append("")
        for side in SIDES:
            s = self.side_spreads(side)
            lines.append(
                f"{side:<5}  ops/s {_fmt(s['ops_per_s'], '{:,.0f}')}   "
                f"p50 {_fmt(s['p50_ms'], '{:.2f}')} ms   p99 {_fmt(s['p99_ms'], '{:.2f}')} ms"
            )
        lines.append(f"ratio store/bare: {_fmt(self.ratio, '{:.3f}')}  (median [min-max])")
        other = self.max_other_cpu_pct
        if other is not None and other > DISTURBED_PCT:
            lines.append(
                f"DISTURBED: other processes used up to {other:.0f} % of a core during a "
                "timed phase; the figures are not clean"
            )
        if self.failures:
            lines.append(f"FAILURES: {self.failures} call(s) did not create a hold")
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _fmt(spread: Spread, pattern: str) -> str:
    return (
        f"{pattern.format(spread.median)} "
        f"[{pattern.format(spread.min)}-{pattern.format(spread.max)}]"
    )


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """The benchmark's own hospital, department-day tag and slot."""

    hospital_id: str
    department_id: str
    visit_date: date
    slot_id: str

    @classmethod
    def fresh(cls, today: date) -> BenchTarget:
        """A target nobody else uses: a random department, a week after ``today``."""
        return cls(
            hospital_id="bench",
            department_id=f"bench-{secrets.token_hex(5)}",
            visit_date=today + timedelta(days=7),
            slot_id="slot-1",
        )

    @property
    def tag(self) -> str:
        """The department-day tag every key of the benchmark lives under."""
        return keys.department_day_tag(self.department_id, self.visit_date)

    def schedule(self, now: datetime) -> ScheduleSpec:
        """One open schedule, released an hour ago, with one never-sold-out slot."""
        starts = datetime.combine(self.visit_date, datetime.min.time(), _CHINA).replace(hour=8)
        return ScheduleSpec(
            schedule_id=f"sched-{self.department_id}",
            hospital_id=self.hospital_id,
            department_id=self.department_id,
            visit_date=self.visit_date,
            release_at=now - timedelta(hours=1),
            starts_at=starts,
            ends_at=starts + timedelta(hours=4),
            cancel_deadline=starts - timedelta(hours=16),
            fee_fen=5000,
            slots=(SlotSpec(self.slot_id, BENCH_CAPACITY),),
        )


def _client(url: str, concurrency: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=concurrency, timeout=30, decode_responses=True
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() disconnects it


def _store_calls(store: SlotStore, target: BenchTarget) -> Callable[[int], Call]:
    def make(worker: int) -> Call:
        prefix = f"w{worker}x{secrets.token_hex(4)}"
        counter = itertools.count()

        async def call() -> str | None:
            n = next(counter)
            request = ReserveRequest(
                hospital_id=target.hospital_id,
                department_id=target.department_id,
                visit_date=target.visit_date,
                slot_id=target.slot_id,
                account_id=f"{prefix}a{n}",
                patient_id=f"{prefix}p{n}",
                channel="bench",
                idempotency_key=f"k{n}",
            )
            try:
                await store.reserve(request)
            except InventoryError as error:
                return error.code
            return None

        return call

    return make


def _bare_calls(client: Redis, sha: str, target: BenchTarget) -> Callable[[int], Call]:
    key_list = keys.tag_keys(target.tag).as_list()
    department, day = target.tag.split(":")

    def make(worker: int) -> Call:
        prefix = f"w{worker}y{secrets.token_hex(4)}"
        # A valid hold id: "<department>.<day>.<24 base32 characters>", 16 random per
        # worker and 8 from the call counter.
        hold_prefix = f"{department}.{day}." + _b32(secrets.token_bytes(10))
        counter = itertools.count()

        async def call() -> str | None:
            n = next(counter)
            args = (
                SERVER_TIME,
                1,
                hold_prefix + _b32(n.to_bytes(5, "big")),
                target.slot_id,
                f"{prefix}a{n}",
                f"{prefix}p{n}",
                "bench",
                _BARE_FINGERPRINT,
                0,
                _RECLAIM_LIMIT,
                "",  # request_id: none, as the store sends by default
            )
            try:
                reply = await client.evalsha(sha, len(key_list), *key_list, *args)
            except redis.exceptions.RedisError as error:
                return type(error).__name__
            code = int(reply[0])
            return None if code == LUA_OK else f"return code {code}"

        return call

    return make


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").lower()


async def _redis_cpu_s(client: RedisClient) -> float:
    info: dict[str, Any] = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _redis_memory(client: RedisClient) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


def _host_busy_s() -> float | None:
    """Busy CPU-seconds of the whole machine since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


async def _drive(
    side: str,
    make_call: Callable[[int], Call],
    config: BenchConfig,
    seconds: float,
    probe: RedisClient,
    redis_is_local: bool,
) -> SideRound:
    """Run ``concurrency`` workers of one side for ``seconds``; gather their figures."""
    latencies: list[int] = []
    holds = failures = 0
    first_failure: str | None = None
    calls = [make_call(i) for i in range(config.concurrency)]
    memory_before = await _redis_memory(probe)
    redis_cpu_before = await _redis_cpu_s(probe)
    host_before = _host_busy_s()
    cpu_before = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(call: Call) -> None:
        nonlocal holds, failures, first_failure
        clock = time.perf_counter
        tick = time.perf_counter_ns
        record = latencies.append
        task = asyncio.current_task()
        while clock() < deadline:
            if task is not None and task.cancelling():
                # A cancellation swallowed below us (on Python 3.11 asyncio.wait_for,
                # which redis-py writes through, can return a result it had raced with
                # a cancel): stop now rather than run on to the deadline.
                raise asyncio.CancelledError
            t0 = tick()
            failure = await call()
            record(tick() - t0)
            if failure is None:
                holds += 1
            else:
                failures += 1
                first_failure = first_failure or failure

    await asyncio.gather(*(worker(call) for call in calls))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    host_after = _host_busy_s()
    redis_cpu = await _redis_cpu_s(probe) - redis_cpu_before
    other_pct: float | None = None
    if redis_is_local and host_before is not None and host_after is not None:
        other = host_after - host_before - cpu - redis_cpu
        other_pct = max(0.0, other) / elapsed * 100
    memory = await _redis_memory(probe) - memory_before
    total = max(1, holds + failures)
    latencies.sort()
    return SideRound(
        side=side,
        holds=holds,
        failures=failures,
        first_failure=first_failure,
        elapsed_s=elapsed,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        client_cpu_us=cpu / total * 1e6,
        redis_cpu_us=redis_cpu / total * 1e6,
        redis_bytes_per_hold=memory / holds if holds else 0.0,
        other_cpu_pct=other_pct,
    )


async def delete_target(client: RedisClient, target: BenchTarget) -> None:
    """Delete every key of ``target``'s tag and its entry in the tag registry.

    DEL, not UNLINK: the memory is freed before the next timed phase starts, instead of
    by Redis's background thread while it runs.
    """
    await client.delete(*keys.tag_keys(target.tag).as_list())
    await client.srem(keys.TAG_REGISTRY_KEY, target.tag)


#: Builds one side's calls against one phase's tag.
SideCalls = Callable[[BenchTarget], Callable[[int], Call]]


async def _phase(
    side: str,
    calls: SideCalls,
    store: SlotStore,
    config: BenchConfig,
    seconds: float,
    redis_is_local: bool,
) -> SideRound:
    """One timed run of one side, on a fresh tag that is deleted afterwards (untimed).

    Every phase therefore starts from the same state: no side runs on the hashes and
    streams the other side grew.
    """
    target = BenchTarget.fresh(datetime.now(_CHINA).date())
    probe = store.client
    try:
        await store.load_schedule(target.schedule(datetime.now(_CHINA)))
        return await _drive(side, calls(target), config, seconds, probe, redis_is_local)
    finally:
        await delete_target(probe, target)


async def run_reserve_bench(
    redis_url: str,
    config: BenchConfig,
    *,
    redis_where: str | None = None,
    loop_name: str = "asyncio",
    progress: Callable[[str], None] | None = None,
) -> ReserveBenchReport:
    """Run the benchmark against the Redis at ``redis_url``.

    Each timed phase works in a tag of its own, deleted when the phase ends (also after
    an error or a cancellation), so the server is left as it was found, apart from the
    scripts in its script cache.
    """
    say = progress or (lambda _line: None)
    local = _is_local(redis_url)
    store_client = _client(redis_url, config.concurrency)
    bare_client = _client(redis_url, config.concurrency)
    try:
        store = await SlotStore.connect_scripts(store_client)
        server_info: dict[str, Any] = await store_client.info("server")
        version = str(server_info.get("redis_version", "?"))
        script = store.scripts["reserve"]
        sha = str(await bare_client.script_load(script.script))
        if sha != script.sha:
            raise RuntimeError("the bare client's script digest differs from the store's")
        sides: dict[str, SideCalls] = {
            "store": lambda target: _store_calls(store, target),
            "bare": lambda target: _bare_calls(bare_client, sha, target),
        }
        if config.warmup_seconds > 0:
            say(f"warming up: {config.warmup_seconds:g} s per side")
            for side in SIDES:
                await _phase(side, sides[side], store, config, config.warmup_seconds, local)
        rounds: list[RoundResult] = []
        for index in range(1, config.rounds + 1):
            order = SIDES if index % 2 else (SIDES[1], SIDES[0])
            figures = {
                side: await _phase(side, sides[side], store, config, config.seconds, local)
                for side in order
            }
            result = RoundResult(index, order, figures["store"], figures["bare"])
            rounds.append(result)
            say(
                f"round {index}/{config.rounds}: store {result.store.ops_per_s:,.0f}/s, "
                f"bare {result.bare.ops_per_s:,.0f}/s, ratio {result.ratio:.3f}"
            )
        return ReserveBenchReport(
            config=config,
            redis_version=version,
            redis_where=redis_where or _where(redis_url),
            loop=loop_name,
            rounds=tuple(rounds),
        )
    finally:
        await store_client.aclose()
        await bare_client.aclose()


def _is_local(url: str) -> bool:
    """Whether the Redis at ``url`` runs on this machine (its CPU is then on this host)."""
    parts = urlsplit(url)
    return parts.scheme == "unix" or parts.hostname in ("127.0.0.1", "localhost", "::1")


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL, without any credentials."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


def run_loop(coroutine: Coroutine[Any, Any, _T], loop: str) -> _T:
    """Run ``coroutine`` on the named event loop ("uvloop" or "asyncio")."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


def run_reserve(
    config: BenchConfig,
    *,
    redis_url: str | None,
    aof: str,
    loop: str,
    progress: Callable[[str], None],
) -> ReserveBenchReport:
    """The whole run: on the Redis at ``redis_url``, or on a private redis-server (with
    the append-only file ``aof``: off, everysec or always) started in a temporary folder
    and stopped at the end."""
    if redis_url:
        return run_loop(
            run_reserve_bench(redis_url, config, loop_name=loop, progress=progress), loop
        )
    from inventory.devtools.servers import start_redis

    with tempfile.TemporaryDirectory(prefix="inventory-bench-") as tmp:
        progress("starting a private redis-server")
        with start_redis(
            Path(tmp),
            appendonly=aof != "off",
            appendfsync=aof if aof != "off" else "everysec",
        ) as server:
            where = f"private redis-server on {server.host}:{server.port}, AOF {aof}"
            return run_loop(
                run_reserve_bench(
                    server.url, config, redis_where=where, loop_name=loop, progress=progress
                ),
                loop,
            )
