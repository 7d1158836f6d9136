"""The worker's metrics: a small loop that samples the store and the persister's stats
into gauges and counters, and serves them on ``/metrics`` (its own HTTP port), with
``/healthz`` (the loop turns) and ``/readyz`` (Redis sampled lately, Postgres writable,
outbox backlog within bounds, no department-day fenced; the body says what is wrong).

Each sample reads every registered tag's slot counts and fence flag (pipelined, a few
hundred tags per round trip) and checks the conservation invariant of every slot on
the way: ``remaining + held + booked + waiting == capacity``, nothing negative.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import web

from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS
from inventory.record.persister import PersisterStats
from inventory.store import keys
from inventory.store.backlog import TAGS_PER_ROUND_TRIP, outbox_verdict
from inventory.store.connection import RedisClient
from inventory.store.slot_store import SlotStore, counts_of_slots_hash

log = structlog.get_logger(__name__)

#: Seconds between samples.
SAMPLE_INTERVAL_S: Final = 5.0


class MeteredPersisterStats(PersisterStats):
    """The persister's stats, observing each committed batch's size and latency as it
    happens (the persister sets them, then ``last_commit_at`` last, once per commit)."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "last_commit_at" and value:
            metrics.observe_batch(self.last_batch_size, self.last_batch_latency_s)


@dataclass(frozen=True)
class StoreSample:
    """What one sample of the store found."""

    tags: int
    holds_active: int
    units_waiting: int
    fenced_tags: int
    violating_slots: int


async def _read_tags(client: RedisClient, tags: Sequence[str]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        tk = keys.tag_keys(tag)
        pipe.hgetall(tk.slots)
        pipe.hget(tk.meta, "fenced")
    return list(await pipe.execute())


async def sample_store(store: SlotStore) -> StoreSample:
    """Sample every tag into the gauges (and count invariant violations)."""
    client = store.client
    tags = sorted(str(t) for t in await client.smembers(keys.TAG_REGISTRY_KEY))
    held = waiting = fenced = violating = 0
    for start in range(0, len(tags), TAGS_PER_ROUND_TRIP):
        chunk = tags[start : start + TAGS_PER_ROUND_TRIP]
        replies = await _read_tags(client, chunk)
        for i in range(len(chunk)):
            raw_slots, fence_flag = replies[2 * i], replies[2 * i + 1]
            if str(fence_flag) == "1":
                fenced += 1
            for counts in counts_of_slots_hash(raw_slots or {}).values():
                held += counts.held
                waiting += counts.waiting
                if not counts.conserved:
                    violating += 1
    sample = StoreSample(len(tags), held, waiting, fenced, violating)
    metrics.TAGS.set(sample.tags)
    metrics.HOLDS_ACTIVE.set(sample.holds_active)
    metrics.UNITS_WAITING.set(sample.units_waiting)
    metrics.FENCED_TAGS.set(sample.fenced_tags)
    metrics.INVARIANT_VIOLATING_SLOTS.set(sample.violating_slots)
    if sample.violating_slots:
        metrics.INVARIANT_VIOLATIONS.labels(source="sampler").inc(sample.violating_slots)
        log.error("sampler.invariant_violated", slots=sample.violating_slots)
    metrics.LAST_SAMPLE.set(time.time())
    return sample


async def sample_records(
    pool: Any, *, his_queue: bool, his_connection_of: Callable[[str], str] | None = None
) -> None:
    """Sample what is still open in Postgres into gauges: pending payments, open refunds
    and (``his_queue``: when this worker runs the HIS flows) bookings waiting for the
    HIS, each with the age of its oldest. One query over partial indexes; with
    ``his_connection_of`` (hospital id -> the name of the HIS connection serving it) a
    second one gives each connection's queue."""
    from inventory.record.pool import acquire
    from inventory.record.queries import QUERIES

    async with acquire(pool, timeout_s=SAMPLE_INTERVAL_S) as connection:
        row = await connection.fetchrow(
            QUERIES["sample_open_money_and_his_queue"], timeout=SAMPLE_INTERVAL_S
        )
        by_hospital = (
            await connection.fetch(
                QUERIES["sample_his_queue_by_hospital"], timeout=SAMPLE_INTERVAL_S
            )
            if his_queue and his_connection_of is not None
            else None
        )
    metrics.observe_open_money_and_his_queue(row, his_queue=his_queue)
    if by_hospital is not None and his_connection_of is not None:
        metrics.observe_his_connection_queues(by_hospital, his_connection_of)


@dataclass
class WorkerHealth:
    """What the worker's /healthz and /readyz report."""

    stats: PersisterStats | None
    interval_s: float
    #: /readyz fails above this many outbox entries waiting for the persister.
    max_backlog: int
    #: loop.time() of the last loop turn and of the last good store sample (None: no
    #: sample yet). loop.time() counts from the host's boot, so only differences of
    #: two readings are ages.
    last_turn: float = 0.0
    last_sample: float | None = None
    sample_error: str = ""
    #: Department-days the fence found diverged (as of the last good sample).
    fenced_tags: int = 0
    #: loop.time() when the sampler started.
    started: float = 0.0

    def checks(self, now: float) -> dict[str, str]:
        """Each part: "ok" or what is wrong with it."""
        stale_after = 3 * self.interval_s
        reason = self.sample_error or "sampling"
        if self.last_sample is None:
            redis_check = (
                f"failing: no store sample yet, {now - self.started:.0f} s after start ({reason})"
            )
        elif now - self.last_sample <= stale_after:
            redis_check = "ok"
        else:
            redis_check = f"failing: no store sample for {now - self.last_sample:.0f} s ({reason})"
        found = {"redis": redis_check[:200]}
        if self.stats is not None:
            found["postgres"] = (
                "ok"
                if self.stats.db_available
                else f"failing: persister writes retried ({self.stats.last_error})"[:200]
            )
            found["outbox"] = outbox_verdict(
                self.stats.total_lag + self.stats.total_pending, self.max_backlog
            )
        found["fence"] = (
            "ok"
            if not self.fenced_tags
            else f"fenced: {self.fenced_tags} department-day(s) refuse changes until "
            "`inventory rebuild --fenced` (docs/runbooks.md)"
        )
        return found


HEALTH = web.AppKey("health", WorkerHealth)


async def _metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(metrics.exposition, "worker")
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def _healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH]
    now = asyncio.get_running_loop().time()
    alive = now - health.last_turn <= 3 * health.interval_s
    return web.json_response({"status": "ok" if alive else "stuck"}, status=200 if alive else 503)


async def _readyz(request: web.Request) -> web.Response:
    checks = request.app[HEALTH].checks(asyncio.get_running_loop().time())
    ready = all(state == "ok" for state in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


async def start_metrics_server(host: str, port: int, health: WorkerHealth) -> web.AppRunner | None:
    """Serve the worker's ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``;
    None (logged) if the port is taken: metrics must never stop the worker's real work."""
    app = web.Application()
    app[HEALTH] = health
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        log.error("sampler.metrics_port_unavailable", host=host, port=port, error=str(error))
        await runner.cleanup()
        return None
    log.info("sampler.serving", url=f"http://{host}:{port}/metrics")
    return runner


async def run_sampler(
    store: SlotStore,
    *,
    stats: PersisterStats | None,
    stop: asyncio.Event,
    max_backlog: int,
    host: str = "127.0.0.1",
    port: int = 0,
    interval_s: float = SAMPLE_INTERVAL_S,
    pool: Any = None,
    his_queue: bool = False,
    his_connection_of: Callable[[str], str] | None = None,
) -> None:
    """Serve ``/metrics`` (and health) on ``port`` (0: none) and sample every
    ``interval_s`` until ``stop``; a failed sample is counted and logged, never fatal.
    /readyz fails while more than ``max_backlog`` outbox entries wait. With a Postgres
    ``pool``, each turn also samples the open payments, refunds and HIS queue."""
    metrics.INVARIANT_VIOLATIONS.labels(source="sampler")  # exported at 0 from the start
    loop = asyncio.get_running_loop()
    started = loop.time()
    health = WorkerHealth(stats, interval_s, max_backlog, last_turn=started, started=started)
    runner = await start_metrics_server(host, port, health) if port else None
    try:
        while not stop.is_set():
            health.last_turn = loop.time()
            if stats is not None:
                metrics.observe_persister(stats)
            try:
                sample = await sample_store(store)
            except TRANSIENT_ERRORS as error:
                metrics.SAMPLE_FAILURES.inc()
                health.sample_error = f"{type(error).__name__}: {error}"
                log.warning("sampler.sample_failed", error=health.sample_error)
            else:
                health.last_sample = loop.time()
                health.sample_error = ""
                health.fenced_tags = sample.fenced_tags
            if pool is not None:
                try:
                    # Bounded: a Postgres that hangs must not stall the loop's turns
                    # (the store's sample and /healthz come from them).
                    await asyncio.wait_for(
                        sample_records(
                            pool, his_queue=his_queue, his_connection_of=his_connection_of
                        ),
                        timeout=interval_s / 2,
                    )
                except TRANSIENT_ERRORS as error:
                    # Postgres down: its own alerts say so; the gauges keep their value.
                    metrics.SAMPLE_FAILURES.inc()
                    log.warning("sampler.records_failed", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
    finally:
        if runner is not None:
            await runner.cleanup()
