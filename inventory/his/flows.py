"""The HIS flows as worker loops: schedule sync, booking submitter, reconciler.

:func:`his_loops` gives the worker its three loops when ``INVENTORY_HIS_URL`` is set
(none otherwise). They share one HIS client, so the client's concurrency and rate limits
bound everything the worker sends the HIS, and one small Postgres pool of their own; both
are opened when the first loop starts and closed when the last one ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from inventory.his.client import FhirHisClient, HisClientConfig
from inventory.his.reconcile import (
    ReconcileConfig,
    ReconcilePolicy,
    Reconciler,
    ReconcileStats,
    run_reconciler,
)
from inventory.his.submitter import (
    PatientLookup,
    Submitter,
    SubmitterStats,
    keyring_patients,
    run_submitter,
)
from inventory.his.sync import ScheduleSync, SyncConfig, SyncStats, run_schedule_sync
from inventory.ops import metrics
from inventory.ops.config import Settings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import create_pool
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)


@dataclass
class HisFlowStats:
    """The three loops' figures, for the metrics sampler."""

    sync: SyncStats = field(default_factory=SyncStats)
    submitter: SubmitterStats = field(default_factory=SubmitterStats)
    reconcile: ReconcileStats = field(default_factory=ReconcileStats)


@dataclass
class HisFlows:
    """The flows' shared parts: the HIS client, a pool, the sync, submitter, reconciler."""

    client: FhirHisClient
    pool: Any
    sync: ScheduleSync
    submitter: Submitter
    reconciler: Reconciler


def client_config(settings: Settings) -> HisClientConfig:
    """The HIS client's configuration (its limits are HisClientConfig's defaults)."""
    return HisClientConfig(base_url=settings.his_url)


async def open_flows(
    settings: Settings,
    store: SlotStore,
    *,
    stats: HisFlowStats | None = None,
    pool: Any | None = None,
    client: FhirHisClient | None = None,
) -> HisFlows:
    """Build the flows (a pool and a client of their own unless given)."""
    stats = stats or HisFlowStats()
    pool = pool or await create_pool(settings.database_url, min_size=0, max_size=6, init_size=0)
    client = client or FhirHisClient(
        client_config(settings),
        observer=metrics.observe_his_call,
        on_breaker_change=metrics.observe_his_breaker,
    )
    catalogue = PgCatalogue(pool, store)
    sync = ScheduleSync(
        client,
        pool,
        store,
        catalogue,
        config=SyncConfig(
            window_days=settings.his_booking_window_days,
            interval_s=settings.his_sync_interval_s,
            timezone=settings.timezone,
        ),
    )
    patients: PatientLookup | None = None
    if settings.field_keys:
        try:
            patients = keyring_patients(pool, settings.keyring())
        except ValueError as error:
            log.warning("his.patients_without_keys", error=str(error))
    submitter = Submitter(client, pool, store, patients=patients, stats=stats.submitter)
    reconciler = Reconciler(
        client,
        pool,
        store,
        sync,
        policy=ReconcilePolicy.parse(settings.reconcile_policy),
        config=ReconcileConfig(interval_s=settings.reconcile_interval_s),
    )
    return HisFlows(client, pool, sync, submitter, reconciler)


def his_loops(
    settings: Settings,
    store: SlotStore,
    *,
    stop: asyncio.Event,
    stats: HisFlowStats | None = None,
) -> dict[str, Coroutine[Any, Any, None]]:
    """The worker's HIS loops (``his_sync``, ``his_submitter``, ``his_reconciler``), or
    none when ``settings.his_url`` is empty."""
    if not settings.his_url:
        return {}
    stats = stats or HisFlowStats()
    shared = _Shared(settings, store, stats)
    return {
        "his_sync": shared.run(lambda f: run_schedule_sync(f.sync, stop=stop, stats=stats.sync)),
        "his_submitter": shared.run(lambda f: run_submitter(f.submitter, stop=stop)),
        "his_reconciler": shared.run(
            lambda f: run_reconciler(f.reconciler, stop=stop, stats=stats.reconcile)
        ),
    }


class _Shared:
    """Opens the flows for the first loop and closes them after the last."""

    def __init__(self, settings: Settings, store: SlotStore, stats: HisFlowStats) -> None:
        self._settings = settings
        self._store = store
        self._stats = stats
        self._lock = asyncio.Lock()
        self._users = 0
        self._flows: HisFlows | None = None

    async def run(self, loop: Callable[[HisFlows], Awaitable[None]]) -> None:
        async with self._lock:
            if self._flows is None:
                self._flows = await open_flows(self._settings, self._store, stats=self._stats)
            self._users += 1
            flows = self._flows
        try:
            await loop(flows)
        finally:
            async with self._lock:
                self._users -= 1
                if self._users == 0 and self._flows is not None:
                    await self._flows.client.close()
                    await self._flows.pool.close()
                    self._flows = None
