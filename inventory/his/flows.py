"""The HIS flows as worker loops: schedule sync, booking submitter, reconciler, for each
HIS connection (inventory/his/connections.py).

:func:`his_loops` gives the worker three loops per connection: ``his_sync``,
``his_submitter`` and ``his_reconciler`` for the default connection
(``INVENTORY_HIS_URL``), ``his_sync:<hospital>`` ... for a hospital's own. A connection's
loops share its HIS client (its concurrency and rate limits, its circuit breaker, its
token) and a small Postgres pool of their own, opened when the first loop starts and
closed when the last one ends; they read and claim only the schedules and bookings of
the hospitals the connection serves. So one hospital's HIS down or slow holds up that
hospital's sync, submissions and reconciliation only: nothing is shared with another
connection but the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from inventory.his.client import HisClient, HisClientConfig
from inventory.his.connections import HisConnection, HisConnections, load_connections
from inventory.his.reconcile import (
    ReconcileConfig,
    ReconcilePolicy,
    Reconciler,
    ReconcileStats,
    run_reconciler,
)
from inventory.his.scope import HospitalScope
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
    """One connection's flows: its HIS client, a pool, the sync, submitter, reconciler."""

    client: HisClient
    pool: Any
    sync: ScheduleSync
    submitter: Submitter
    reconciler: Reconciler
    connection: str = "default"


def client_config(settings: Settings) -> HisClientConfig:
    """The default connection's client configuration (HisClientConfig's limits)."""
    return HisClientConfig(base_url=settings.his_url)


def connections_of(settings: Settings) -> HisConnections:
    """The deployment's HIS connections (:class:`ConnectionsError` when the file is
    wrong): the file named by INVENTORY_HIS_CONNECTIONS, INVENTORY_HIS_URL the default."""
    return load_connections(settings.his_connections or None, default_url=settings.his_url)


def metered_client(connection: HisConnection) -> HisClient:
    """A connection's client whose calls and breaker feed the metrics, by its name."""
    return connection.build(
        observer=functools.partial(metrics.observe_his_call, connection=connection.name),
        on_breaker_change=functools.partial(
            metrics.observe_his_breaker, connection=connection.name
        ),
    )


async def open_flows(
    settings: Settings,
    store: SlotStore,
    *,
    stats: HisFlowStats | None = None,
    pool: Any | None = None,
    client: HisClient | None = None,
    connection: HisConnection | None = None,
    scope: HospitalScope | None = None,
    connections: HisConnections | None = None,
) -> HisFlows:
    """Build one connection's flows (a pool and a client of their own unless given):
    ``connection`` (the default connection when None) serving ``scope`` (the hospitals
    the configuration gives it when None)."""
    stats = stats or HisFlowStats()
    if connection is None or scope is None:
        connections = connections or connections_of(settings)
        connection = connection or connections.default
        if connection is None:
            raise ValueError("no default HIS connection: set INVENTORY_HIS_URL")
        scope = scope or connections.scope(connection)
    pool = pool or await create_pool(settings.database_url, min_size=0, max_size=6, init_size=0)
    client = client or metered_client(connection)
    catalogue = PgCatalogue(pool, store)
    sync = ScheduleSync(
        client,
        pool,
        store,
        catalogue,
        config=SyncConfig(
            window_days=settings.his_booking_window_days,
            interval_s=connection.sync_interval_s or settings.his_sync_interval_s,
            timezone=settings.timezone,
        ),
        hospital_id=connection.hospital_id,
        scope=scope,
        connection=connection.name,
    )
    patients: PatientLookup | None = None
    if settings.field_keys:
        try:
            patients = keyring_patients(pool, settings.keyring())
        except ValueError as error:
            log.warning("his.patients_without_keys", error=str(error))
    submitter = Submitter(
        client,
        pool,
        store,
        patients=patients,
        stats=stats.submitter,
        scope=scope,
        connection=connection.name,
    )
    reconciler = Reconciler(
        client,
        pool,
        store,
        sync,
        policy=ReconcilePolicy.parse(settings.reconcile_policy),
        config=ReconcileConfig(
            interval_s=connection.reconcile_interval_s or settings.reconcile_interval_s
        ),
    )
    return HisFlows(client, pool, sync, submitter, reconciler, connection.name)


def his_loops(
    settings: Settings,
    store: SlotStore,
    *,
    stop: asyncio.Event,
    stats: dict[str, HisFlowStats] | None = None,
    connections: HisConnections | None = None,
) -> dict[str, Coroutine[Any, Any, None]]:
    """Three loops per HIS connection (see the module doc), or none without one.
    ``stats`` (by connection name) is filled in for the caller to read."""
    connections = connections if connections is not None else connections_of(settings)
    stats = stats if stats is not None else {}
    metrics.register_his_connections(connections.names)
    loops: dict[str, Coroutine[Any, Any, None]] = {}
    for connection in connections.all():
        figures = stats.setdefault(connection.name, HisFlowStats())
        shared = _Shared(
            settings,
            store,
            figures,
            connection,
            connections.scope(connection),
            # Each connection has a pool of its own, so a HIS that is slow cannot keep
            # another connection's flows waiting for Postgres: small when there are many.
            pool_size=6 if len(connections.all()) == 1 else 3,
        )
        suffix = "" if connection.hospital_id is None else f":{connection.name}"
        loops |= {
            f"his_sync{suffix}": shared.run(
                functools.partial(_sync_loop, stop=stop, stats=figures.sync)
            ),
            f"his_submitter{suffix}": shared.run(functools.partial(_submit_loop, stop=stop)),
            f"his_reconciler{suffix}": shared.run(
                functools.partial(_reconcile_loop, stop=stop, stats=figures.reconcile)
            ),
        }
    return loops


async def _sync_loop(flows: HisFlows, *, stop: asyncio.Event, stats: SyncStats) -> None:
    await run_schedule_sync(flows.sync, stop=stop, stats=stats)


async def _submit_loop(flows: HisFlows, *, stop: asyncio.Event) -> None:
    await run_submitter(flows.submitter, stop=stop)


async def _reconcile_loop(flows: HisFlows, *, stop: asyncio.Event, stats: ReconcileStats) -> None:
    await run_reconciler(flows.reconciler, stop=stop, stats=stats)


class _Shared:
    """Opens a connection's flows for its first loop and closes them after the last."""

    def __init__(
        self,
        settings: Settings,
        store: SlotStore,
        stats: HisFlowStats,
        connection: HisConnection,
        scope: HospitalScope,
        *,
        pool_size: int,
    ) -> None:
        self._settings = settings
        self._store = store
        self._stats = stats
        self._connection = connection
        self._scope = scope
        self._pool_size = pool_size
        self._lock = asyncio.Lock()
        self._users = 0
        self._flows: HisFlows | None = None

    async def run(self, loop: Callable[[HisFlows], Awaitable[None]]) -> None:
        # Every log line of this loop's task (the client's retries included) names the
        # connection: each loop runs in a task of its own, with its own context.
        structlog.contextvars.bind_contextvars(his_connection=self._connection.name)
        async with self._lock:
            if self._flows is None:
                pool = await create_pool(
                    self._settings.database_url,
                    min_size=0,
                    max_size=self._pool_size,
                    init_size=0,
                )
                self._flows = await open_flows(
                    self._settings,
                    self._store,
                    stats=self._stats,
                    pool=pool,
                    connection=self._connection,
                    scope=self._scope,
                )
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
