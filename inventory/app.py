"""The application factory: ``create_app(settings) -> web.Application``.

Resources (Redis, Postgres, scripts) open and close with the app in ``cleanup_ctx``;
script calls share one auto-pipelined Redis connection per process unless
``INVENTORY_REDIS_AUTOPIPELINE=false`` (see inventory/store/autopipeline.py);
handlers reach them through the typed ``SERVICES`` key. One middleware
(inventory/api/edge.py): request id, metrics and access log, the in-flight admission
gate and problem+json for every error; the routes that record an Idempotency-Key have
their handlers wrapped (inventory/api/idempotency.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from inventory.api import docs, observability, openapi, webapp
from inventory.api import login as login_routes
from inventory.api import payments as payment_routes
from inventory.api.admission import AdmissionGate
from inventory.api.audit import auditing
from inventory.api.auth import VERIFIER, TokenVerifier
from inventory.api.bodies import MAX_BODY_BYTES
from inventory.api.context import SERVICES, Services
from inventory.api.edge import edge_middleware
from inventory.api.idempotency import recording
from inventory.api.routes import TABLES
from inventory.booking.ratelimit import ReserveRateLimiter
from inventory.booking.rescheduling import Rescheduling
from inventory.booking.reservations import Reservations
from inventory.booking.soldout import SoldOutSlots
from inventory.booking.substitution import Substitutions
from inventory.booking.waitlist import Waitlists
from inventory.domain import HospitalPolicy
from inventory.ops.config import Settings
from inventory.ops.tasks import cancel_and_wait
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError
from inventory.record.patients import PatientRegistry
from inventory.record.pool import create_pool
from inventory.record.waitlist import PgWaitlist
from inventory.recovery.fence import StoreVerification
from inventory.release.rooms import RoomStore
from inventory.release.service import WaitingRooms
from inventory.store.autopipeline import AutoPipeline, supports_url
from inventory.store.connection import (
    RedisClient,
    connect_redis,
    parse_sentinel_url,
    sentinel_for,
)
from inventory.store.slot_store import PolicyBook, SlotStore

#: How often each process re-reads hospital policies written by other processes.
POLICY_REFRESH_S = 30.0

SETTINGS = web.AppKey("settings", Settings)
GATE = web.AppKey("gate", AdmissionGate)

#: The auto-pipelined connection's name in ``CLIENT LIST``.
SCRIPTS_CLIENT_NAME = "inventory-api-scripts"


async def services_context(app: web.Application) -> AsyncIterator[None]:
    """The app's ``SERVICES`` (Redis, the scripts, Postgres, the catalogue) from start-up
    to cleanup: a ``cleanup_ctx`` entry, also used by the benchmark's floor server.

    Whatever opened before a failing step is closed again (the exit stack), so a start
    that fails leaves no connection behind."""
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        # The verified-store gate: per primary (every Cluster node), by its run id.
        verification = StoreVerification(
            required=settings.require_verified_store, cluster=settings.redis_cluster
        )
        # A first connection to an unverified server starts its watcher.
        stack.push_async_callback(verification.close)
        client = await _connect_client(settings, verification)
        stack.push_async_callback(client.aclose)
        # Again before the client closes: the watcher polls through it.
        stack.push_async_callback(verification.close)
        pipeline = await _connect_pipeline(settings, verification, stack)
        catalogue_policies: dict[str, HospitalPolicy] = {}
        store = await SlotStore.connect_scripts(
            client,
            pipeline=pipeline,
            reconnect_gate=verification.check,
            # The store and the catalogue share one dict: the catalogue keeps it current.
            policies=PolicyBook(by_hospital=catalogue_policies),
            write_gate=verification.check,
        )
        # init_size=0: the API starts (and keeps taking holds) while Postgres is down.
        pool = await create_pool(
            settings.database_url, min_size=0, max_size=settings.database_pool_max, init_size=0
        )
        stack.push_async_callback(pool.close)
        catalogue = PgCatalogue(pool, store)
        catalogue.policies = catalogue_policies
        patients = PatientRegistry(pool, settings.keyring(), settings.blind_index(), redis=client)
        bookings = PgBookings(pool)
        sold_out = SoldOutSlots(settings.availability_cache_s)
        limiter = ReserveRateLimiter(
            store,
            per_account=settings.reserve_rate_per_account,
            per_ip=settings.reserve_rate_per_ip,
            client_ip_header=settings.client_ip_header,
        )
        reservations = Reservations(
            store=store,
            catalogue=catalogue,
            patients=patients,
            bookings=bookings,
            limiter=limiter,
            sold_out=sold_out,
            db=pool,
            payments_enabled=settings.payments.enabled,
        )
        rooms = WaitingRooms(RoomStore(store), catalogue, patients)
        stack.push_async_callback(rooms.close)
        rescheduling = Rescheduling(
            store=store,
            catalogue=catalogue,
            bookings=bookings,
            db=pool,
            payments_enabled=settings.payments.enabled,
        )
        app[SERVICES] = Services(
            settings=settings,
            store=store,
            reservations=reservations,
            rescheduling=rescheduling,
            substitutions=Substitutions(
                store=store,
                catalogue=catalogue,
                bookings=bookings,
                rescheduling=rescheduling,
                db=pool,
            ),
            waitlists=Waitlists(
                store=store,
                catalogue=catalogue,
                patients=patients,
                record=PgWaitlist(pool),
                limiter=limiter,
            ),
            gate=app[GATE],
            catalogue=catalogue,
            patients=patients,
            bookings=bookings,
            db=pool,
            verification=verification,
            sold_out=sold_out,
            rooms=rooms,
        )
        refresher = asyncio.create_task(_refresh_policies(catalogue))
        stack.push_async_callback(cancel_and_wait, refresher)
        yield


async def _connect_client(settings: Settings, verification: StoreVerification) -> RedisClient:
    """The redis-py client (reads, the gate's watcher; the scripts too without the
    auto-pipeline), its connections checked by the gate when it is required."""
    on_connect = None
    if verification.required:
        on_connect = (
            verification.on_cluster_connect if settings.redis_cluster else verification.on_connect
        )
    client = await connect_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        pool_timeout_s=settings.redis_pool_timeout_s,
        on_connect=on_connect,
        before_initialize=verification.attach,
    )
    verification.attach(client)
    if verification.required and settings.redis_cluster:
        try:
            # Every primary's run id and record before the first request: a verified
            # cluster serves from the start.
            await verification.refresh()
        except BaseException:
            await client.aclose()
            raise
    return client


async def _connect_pipeline(
    settings: Settings, verification: StoreVerification, stack: contextlib.AsyncExitStack
) -> AutoPipeline | None:
    """The connected auto-pipeline script calls share (closed by ``stack``), or None
    where it does not serve: turned off, a Cluster, or a URL scheme it does not speak."""
    if not settings.redis_autopipeline or settings.redis_cluster:
        return None
    on_connect = verification.on_raw_connect if verification.required else None
    timeout_s = settings.redis_pool_timeout_s
    if settings.redis_sentinel:
        # Every connect asks the Sentinels for the primary, as the redis-py client does.
        target = parse_sentinel_url(settings.redis_url)
        sentinel = sentinel_for(target)
        stack.push_async_callback(sentinel.aclose)

        async def primary() -> tuple[str, int]:
            host, port = await sentinel.discover_master(target.service_name)
            return str(host), int(port)

        pipeline = AutoPipeline(
            db=target.db,
            username=target.username,
            password=target.password,
            resolve=primary,
            timeout_s=timeout_s,
            connect_timeout_s=timeout_s,
            client_name=SCRIPTS_CLIENT_NAME,
            on_connect=on_connect,
        )
    elif supports_url(settings.redis_url):
        pipeline = AutoPipeline.from_url(
            settings.redis_url,
            timeout_s=timeout_s,
            connect_timeout_s=timeout_s,
            client_name=SCRIPTS_CLIENT_NAME,
            on_connect=on_connect,
        )
    else:
        return None
    stack.push_async_callback(pipeline.aclose)
    await pipeline.connect()
    return pipeline


async def _refresh_policies(catalogue: PgCatalogue) -> None:
    while True:
        with contextlib.suppress(DatabaseUnavailableError, DatabaseBusyError):
            await catalogue.load_policies()
        await asyncio.sleep(POLICY_REFRESH_S)


def create_app(settings: Settings) -> web.Application:
    """The booking API for ``settings``."""
    gate = AdmissionGate(
        settings.max_in_flight,
        retry_after_s=settings.retry_after_s,
        retry_after_max_s=settings.retry_after_max_s,
    )
    app = web.Application(
        # The one middleware; idempotency wraps only the handlers that record a key
        # (inside the edge, so its refusals are problem+json like every other).
        middlewares=[edge_middleware(gate, access_log=settings.access_log)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    app[VERIFIER] = TokenVerifier(settings)
    app[GATE] = gate
    app.cleanup_ctx.append(services_context)
    app.cleanup_ctx.append(payment_routes.payment_context)
    app.cleanup_ctx.append(login_routes.login_context)
    app.cleanup_ctx.append(observability.sample_process)
    app[docs.DOCUMENT] = openapi.document
    app[webapp.APP_CONFIG] = webapp.AppConfig(pay_simulator_url=settings.app_pay_simulator_url)
    for table in TABLES:
        # Audit inside the Idempotency-Key wrapper: a replayed answer ran nothing again.
        app.add_routes(recording(auditing(table)))
    return app
