"""`inventory dev`: the whole stack on one machine, with no set-up.

Uses ``INVENTORY_REDIS_URL`` and ``INVENTORY_DATABASE_URL`` when given; otherwise starts
a private Redis and Postgres (system binaries when present, else the ones the
``servers`` extra ships) in a temporary folder. Starts the HIS simulator with its demo
hospital and syncs its catalogue and schedules (``--no-his``: seeds inventory/demo.py
instead), migrates, runs the worker (persister, expirer, fence monitor, and the HIS
sync, submitter and reconciler) and the API, and prints where everything is (the API,
its docs, health and ``/metrics``, the worker's metrics and health on
``INVENTORY_WORKER_METRICS_PORT``, the servers, the simulator) with ready-made tokens.
Supervision: the worker, and each child process it started (Redis, Postgres, the
simulator), is started again when it dies, after a jittered back-off (logged as
``dev.worker_restarting`` / ``dev.child_restarted``); Redis comes back on its
append-only file. Ctrl-C stops all of it and removes the temporary servers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from inventory.servers import ServerError, start_postgres, start_redis

if TYPE_CHECKING:
    from inventory.config import Settings


def register(subparsers: Any) -> None:
    """Add the ``dev`` command."""
    parser = subparsers.add_parser("dev", help="run the whole stack locally (Ctrl-C stops it)")
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    parser.add_argument("--no-demo", action="store_true", help="do not seed the demo hospital")
    parser.add_argument(
        "--no-his",
        action="store_true",
        help="no HIS simulator: seed the demo hospital from inventory/demo.py instead",
    )
    parser.set_defaults(handler=run)


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def run(args: argparse.Namespace) -> int:
    """Start the stack and block until Ctrl-C or SIGTERM."""
    import uvloop

    from inventory.logs import configure_logging

    configure_logging()
    with tempfile.TemporaryDirectory(prefix="inventory-dev-") as scratch:
        started: list[Any] = []
        children: dict[str, Child] = {}
        try:
            redis_url = os.environ.get("INVENTORY_REDIS_URL")
            if not redis_url:
                redis = start_redis(Path(scratch) / "redis")
                started.append(redis)
                children["redis"] = redis
                redis_url = redis.url
            database_url = os.environ.get("INVENTORY_DATABASE_URL")
            if not database_url:
                postgres = start_postgres(Path(scratch) / "postgres")
                started.append(postgres)
                children["postgres"] = postgres
                database_url = postgres.create_database("inventory")
            his_url = "" if args.no_his else os.environ.get("INVENTORY_HIS_URL", "")
            if not his_url and not args.no_his:
                his_url = _start_his_sim(Path(scratch) / "his-sim", started, children)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_serve(args, redis_url, database_url, his_url, children))
        except ServerError as error:
            print(f"inventory dev: {error}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(started):
                server.close()
    return 0


def _start_his_sim(directory: Path, started: list[Any], children: dict[str, Child]) -> str:
    """The HIS simulator (demo hospital, 14 days) as a child process; its FHIR base."""
    from inventory.his.sim.process import SimProcess, SimStartError

    sim = SimProcess(directory, seed_rng=None)
    try:
        sim.start()
    except SimStartError as error:
        raise ServerError(f"the HIS simulator did not start: {error}") from error

    class _Stop:  # the cleanup below calls close()
        @staticmethod
        def close() -> None:
            sim.stop()

    started.append(_Stop())
    children["his-sim"] = sim
    return sim.fhir_url


class Child(Protocol):
    """A child process `inventory dev` started and restarts when it dies."""

    @property
    def running(self) -> bool: ...

    def restart(self) -> None: ...


#: Back-off between restarts of a child (or the worker) that keeps dying: first wait,
#: cap, and how long it must have run for the next death to start from the first wait.
RESTART_INITIAL_S = 0.5
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 60.0


async def supervise_children(
    children: dict[str, Child], stop: asyncio.Event, *, poll_s: float = 0.5
) -> None:
    """Restart each child that dies (Redis on its append-only file, Postgres on its data
    directory, the HIS simulator on its state), with a jittered back-off per child, until
    ``stop`` is set. A restart that fails is tried again after the next delay."""
    import structlog

    from inventory.backoff import Backoff, sleep_unless_stopped

    log = structlog.get_logger("inventory.dev")
    loop = asyncio.get_running_loop()
    backoffs = {name: Backoff(RESTART_INITIAL_S, RESTART_MAX_S) for name in children}
    started_at = dict.fromkeys(children, loop.time())
    while not stop.is_set():
        for name, child in children.items():
            if stop.is_set() or child.running:
                continue
            backoff = backoffs[name]
            if loop.time() - started_at[name] >= RESTART_STABLE_S:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning("dev.child_died", child=name, restart_in_s=round(delay, 2))
            await sleep_unless_stopped(stop, delay)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(child.restart)
            except Exception as error:  # the next round tries again, later
                log.error("dev.child_restart_failed", child=name, error=str(error))
                continue
            started_at[name] = loop.time()
            log.warning("dev.child_restarted", child=name, restarts=backoff.failures)
        await sleep_unless_stopped(stop, poll_s)


async def supervise_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run the worker until ``stop``; when it fails (a loop's unexpected error, or
    Redis away at its start) start it again after a jittered back-off."""
    import structlog

    from inventory.backoff import Backoff, sleep_unless_stopped
    from inventory.worker import run_worker

    log = structlog.get_logger("inventory.dev")
    loop = asyncio.get_running_loop()
    backoff = Backoff(RESTART_INITIAL_S, RESTART_MAX_S)
    while not stop.is_set():
        # run_worker sets its stop event when it ends: give it one of its own per run.
        own_stop = asyncio.Event()
        relay = asyncio.create_task(_relay(stop, own_stop))
        started = loop.time()
        try:
            await run_worker(settings, stop=own_stop, handle_signals=False)
        except Exception as error:
            if stop.is_set():
                return
            if loop.time() - started >= RESTART_STABLE_S:
                backoff.reset()
            delay = backoff.next_delay()
            log.error(
                "dev.worker_restarting",
                error=f"{type(error).__name__}: {error}",
                restart_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
        finally:
            relay.cancel()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _sync_his(settings: Any, redis_url: str, database_url: str) -> dict[str, Any]:
    """One sync of the HIS's window into Postgres and Redis, before the API opens."""
    from inventory.db.pool import create_pool
    from inventory.his.flows import open_flows
    from inventory.redis_client import connect_redis
    from inventory.store import SlotStore

    client = await connect_redis(redis_url)
    pool = await create_pool(database_url, min_size=1, max_size=6)
    flows = await open_flows(settings, await SlotStore.connect_scripts(client), pool=pool)
    try:
        report = await flows.sync.sync()
    finally:
        await flows.client.close()
        await pool.close()
        await client.aclose()
    return {
        "hospital_id": flows.sync.hospital_id,
        "schedules": report.schedules,
        "first_day": report.first_day,
    }


async def _serve(
    args: argparse.Namespace,
    redis_url: str,
    database_url: str,
    his_url: str = "",
    children: dict[str, Child] | None = None,
) -> None:
    from aiohttp import web

    from inventory.api.malformed import ApiRunner
    from inventory.app import create_app
    from inventory.catalogue import PgCatalogue
    from inventory.config import Settings
    from inventory.db.migrate import migrate_database
    from inventory.db.pool import create_pool
    from inventory.demo import seed_demo
    from inventory.redis_client import connect_redis
    from inventory.store import SlotStore

    env = os.environ
    settings = Settings.from_env(
        {
            **{k: v for k, v in env.items() if k.startswith("INVENTORY_")},
            "INVENTORY_REDIS_URL": redis_url,
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_JWT_KEYS": env.get("INVENTORY_JWT_KEYS") or f"dev:{_key()}",
            "INVENTORY_FIELD_KEYS": env.get("INVENTORY_FIELD_KEYS") or f"dev:{_key()}",
            "INVENTORY_FIELD_CURRENT_KEY": env.get("INVENTORY_FIELD_CURRENT_KEY") or "dev",
            "INVENTORY_BLIND_INDEX_KEY": env.get("INVENTORY_BLIND_INDEX_KEY")
            or f"dev-index:{_key()}",
            "INVENTORY_HOST": args.host,
            "INVENTORY_PORT": str(args.port),
            "INVENTORY_HIS_URL": his_url,
        }
    )
    # Refuse an unsupported Redis (INVENTORY_REDIS_URL) before touching Postgres.
    await (await connect_redis(redis_url)).aclose()
    applied = await migrate_database(database_url)
    demo: dict[str, Any] | None = None
    if his_url:
        demo = await _sync_his(settings, redis_url, database_url)
    elif not args.no_demo:
        client = await connect_redis(redis_url)
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            demo = await seed_demo(PgCatalogue(pool, await SlotStore.connect_scripts(client)), pool)
        finally:
            await pool.close()
            await client.aclose()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = asyncio.create_task(supervise_worker(settings, stop))
    supervisor = asyncio.create_task(supervise_children(children or {}, stop))
    runner = ApiRunner(create_app(settings), access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    base = f"http://{args.host}:{args.port}"
    port = settings.worker_metrics_port
    lines = banner(
        settings,
        base=base,
        redis_url=redis_url,
        database_url=database_url,
        applied=len(applied),
        his_url=his_url,
        demo=demo,
        worker_answers=bool(port) and await _answers(settings.host, port),
        supervised=sorted(children or {}),
    )
    print("\n".join(lines), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        stop.set()
        with contextlib.suppress(Exception):
            await worker
        with contextlib.suppress(Exception):
            await supervisor


#: How long the banner waits for the worker's metrics port to answer.
WORKER_METRICS_WAIT_S = 5.0


async def _answers(host: str, port: int, *, wait_s: float = WORKER_METRICS_WAIT_S) -> bool:
    """Whether something accepts connections on ``host:port`` within ``wait_s`` (the
    worker starts beside the API; it logs it and goes on when its port is taken)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


def banner(
    settings: Settings,
    *,
    base: str,
    redis_url: str,
    database_url: str,
    applied: int,
    his_url: str,
    demo: dict[str, Any] | None,
    worker_answers: bool,
    supervised: list[str] | None = None,
) -> list[str]:
    """The lines `inventory dev` prints: where everything is (the metrics of the API and
    of the worker included), and ready-made tokens."""
    from inventory.api.auth import mint_token

    port = settings.worker_metrics_port
    worker = f"http://{settings.host}:{port}"
    if not port:
        worker_metrics = "off (INVENTORY_WORKER_METRICS_PORT=0)"
    elif worker_answers:
        worker_metrics = f"{worker}/metrics  (health {worker}/healthz  {worker}/readyz)"
    else:
        worker_metrics = f"{worker}/metrics  (not answering: is the port taken? see the log)"
    lines = [
        f"api        {base}  (docs {base}/docs, contract {base}/openapi.json)",
        f"health     {base}/healthz  {base}/readyz",
        f"metrics    api {base}/metrics",
        f"           worker {worker_metrics}",
        f"redis      {redis_url}",
        f"postgres   {database_url}",
        f"migrations {applied} applied",
    ]
    if his_url:
        lines.append(f"his        {his_url}  (admin {his_url.removesuffix('/fhir')}/$admin)")
    if demo:
        lines.append(
            f"demo       hospital {demo['hospital_id']}: {demo['schedules']} schedules from "
            f"{demo['first_day']}; try {base}/v1/hospitals/{demo['hospital_id']}/departments"
        )
    restarted = ", ".join(["worker", *(supervised or [])])
    lines += [
        f"supervised {restarted}: restarted when they die (back-off "
        f"{RESTART_INITIAL_S:g}-{RESTART_MAX_S:g} s, see the log)",
        f"token      {mint_token(settings, 'demo-account', ttl_s=24 * 3600)}",
        f"operator   {mint_token(settings, 'demo-operator', operator=True, ttl_s=24 * 3600)}",
        "ready: Ctrl-C stops everything",
    ]
    return lines
