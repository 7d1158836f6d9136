"""``inventory worker``: the background half of the service, in one process.

Runs, side by side until SIGINT/SIGTERM: the persister (outbox streams -> Postgres), the
expirer (due holds back to the pool), the waitlist offers' settler (the patient-tag rules
of offers made under them, inventory/booking/offers.py), the waiting rooms' ticker, the
suspension sweep (a suspended schedule's bookings cancelled and refunded), the visits
loop (no-shows and the no-show rule), the move recovery (reschedules cut short by a
crash finished or undone), the fence monitor (Redis behind Postgres ->
fenced tags; a verified server -> the API's gate opens), the metrics sampler (its
own /metrics port, see inventory/ops/sampler.py) and, when a channel is configured, the
notifier (inventory/notify/). Each loop survives Redis or Postgres being
down (it logs a warning, backs off with jitter and resumes when they return, see
inventory/ops/backoff.py); a loop that fails with any other error stops the others and
:func:`run_worker` raises :class:`WorkerLoopFailedError`, so the process exits non-zero
and its supervisor starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from inventory.booking.offers import run_offer_settler
from inventory.booking.rescheduling import run_move_recovery
from inventory.his.flows import connections_of, his_loops
from inventory.his.suspension import run_suspension_sweep
from inventory.notify.service import run_notifier
from inventory.ops.config import Settings
from inventory.ops.sampler import MeteredPersisterStats, run_sampler
from inventory.privacy.crypto import FieldKeyring
from inventory.record.catalogue import PgCatalogue
from inventory.record.persister import run_persister
from inventory.record.pool import create_pool
from inventory.recovery.fence import run_fence_monitor
from inventory.release.rooms import RoomStore
from inventory.release.ticker import run_room_ticker
from inventory.store.connection import connect_redis
from inventory.store.expirer import run_expirer
from inventory.store.slot_store import PolicyBook, SlotStore
from inventory.visits.noshow import VisitsConfig, run_visits

log = structlog.get_logger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]


async def run_worker(
    settings: Settings, *, stop: asyncio.Event | None = None, handle_signals: bool = True
) -> None:
    """Run every worker loop until ``stop`` is set (or a signal arrives).

    Raises :class:`WorkerLoopFailedError` when a loop ends on its own (an unexpected
    error), after stopping the others."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:  # False when a caller (``inventory dev``) owns the signals
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as resources:
        client = await connect_redis(
            settings.redis_url,
            cluster=settings.redis_cluster,
            max_connections=settings.redis_max_connections,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )
        resources.push_async_callback(client.aclose)
        pool = await create_pool(settings.database_url, min_size=0, max_size=4, init_size=0)
        resources.push_async_callback(pool.close)
        store = await SlotStore.connect_scripts(client)
        failed = await _run_loops(settings, store, pool, stop)
    if failed:
        name, error = failed[0]
        raise WorkerLoopFailedError(name) from error


async def _run_loops(
    settings: Settings, store: SlotStore, pool: asyncpg.Pool, stop: asyncio.Event
) -> list[tuple[str, BaseException | None]]:
    """Run the loops until ``stop`` is set or one ends; the loops that failed."""

    async def fence(tag: str) -> None:
        # A diverged history seen by the persister: fence the tag whatever its seq.
        await store.fence_if_behind(tag, 2**62)

    stats = MeteredPersisterStats()
    # The offers' settler judges offers by each hospital's policy: the catalogue reads
    # them into the dict the store's policy book shares.
    catalogue = PgCatalogue(pool, store)
    store.policies = PolicyBook(default=store.policies.default, by_hospital=catalogue.policies)
    loops: dict[str, Coroutine[Any, Any, None]] = {
        "expirer": run_expirer(store, interval_s=settings.expire_interval_s, stop=stop),
        "offers": run_offer_settler(
            store, catalogue, interval_s=settings.expire_interval_s, stop=stop
        ),
        "fence": run_fence_monitor(store, pool, interval_s=settings.fence_interval_s, stop=stop),
        "sampler": run_sampler(
            store,
            stats=stats,
            stop=stop,
            max_backlog=settings.ready_max_outbox_backlog,
            host=settings.host,
            port=settings.worker_metrics_port,
            pool=pool,
            his_queue=settings.his_enabled,
            # Each HIS connection's queue (hospital -> the connection serving it).
            his_connection_of=(connections_of(settings).name_for if settings.his_enabled else None),
        ),
        "persister": run_persister(store.client, pool, stop=stop, on_diverged=fence, stats=stats),
        # 停诊 entered by an operator: the suspended schedules' bookings cancelled and
        # refunded, their holds released (with or without a HIS).
        "suspensions": run_suspension_sweep(pool, store, stop=stop),
        # Release day's waiting rooms: draw, admit, lapse, sell out (the API's watchers
        # do the same for the releases their clients follow).
        "rooms": run_room_ticker(
            RoomStore(store), interval_s=settings.room_tick_interval_s, stop=stop
        ),
        # Bookings never checked in become no-shows; the no-show rule bans.
        "visits": run_visits(
            pool, store, stop=stop, config=VisitsConfig(with_his=settings.his_enabled)
        ),
        # Moves of bookings (改约) cut short by a process that died between their steps.
        "moves": run_move_recovery(pool, store, stop=stop),
    }
    if settings.his_enabled:  # the HIS flows: schedule sync, submitter, reconciler
        loops |= his_loops(settings, store, stop=stop)
    if settings.notify.enabled:  # some channel is configured
        loops["notifier"] = run_notifier(
            pool, settings.notify, keyring=_keyring(settings), his=settings.his_enabled, stop=stop
        )
    tasks: dict[str, asyncio.Task[None]] = {
        name: asyncio.create_task(coro, name=name) for name, coro in loops.items()
    }
    log.info("worker.started", loops=sorted(tasks))
    failed: list[tuple[str, BaseException | None]] = []
    try:
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.cancelled():
                continue
            error = task.exception()
            # A loop ends by itself only when asked to stop; ending early, with or
            # without an exception, leaves part of the worker silently dead.
            if error is not None or not stop.is_set():
                failed.append((task.get_name(), error))
                log.error(
                    "worker.loop_failed",
                    loop=task.get_name(),
                    error=f"{type(error).__name__}: {error}" if error else "returned early",
                    exc_info=error,
                )
    finally:
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return failed


def _keyring(settings: Settings) -> FieldKeyring | None:
    """The field keys (the notifier decrypts phones with them), or None without them."""
    try:
        return settings.keyring()
    except ValueError:
        return None


class WorkerLoopFailedError(Exception):
    """A worker loop ended with an unexpected error (a bug, not an outage): the other
    loops were stopped, and ``inventory worker`` exits non-zero so that its supervisor
    restarts it."""

    def __init__(self, loop: str) -> None:
        super().__init__(f"the worker loop {loop!r} failed")
        self.loop = loop
