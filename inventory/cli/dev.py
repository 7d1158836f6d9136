"""`inventory dev`: the whole stack on one machine, with no set-up.

Uses ``INVENTORY_REDIS_URL`` and ``INVENTORY_DATABASE_URL`` when given; otherwise starts
a private Redis and Postgres (system binaries when present, else the ones the
``servers`` extra ships) in a temporary folder. Starts the HIS simulator with its demo
hospital and syncs its catalogue and schedules (``--no-his``: seeds inventory/devtools/demo.py
instead), starts the WeChat Pay simulator and turns payments on (``--no-payments``: off,
and confirm books on any payment reference), starts the WeChat subscribe-message and SMS
simulators (``--no-notify``: none), starts the WeChat login simulator and turns both
patients' logins on, their codes sent through the same SMS simulator (unless the
environment configures a login; every SMS the simulator sends is printed, the phone
masked), migrates, runs the worker (persister, expirer, fence monitor, the notifier, and
the HIS sync, submitter and reconciler) and the API.

Once the API answers ready it prints the banner: where everything is (the API, its docs,
health and ``/metrics``, the worker's metrics and health, the servers, the simulators)
with ready-made tokens; again on SIGUSR1. It writes its settings (URLs, keys) with the
banner as comments to ``--env-file`` (``.inventory-dev.env``, readable by its owner
only, removed at exit), which the other commands read with ``--env-file``. Logs go to
stdout, or to ``--log-file``.

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

from inventory.cli import envfile
from inventory.devtools.servers import ServerError, start_postgres, start_redis

if TYPE_CHECKING:
    from inventory.ops.config import Settings


def register(subparsers: Any) -> None:
    """Add the ``dev`` command."""
    parser = subparsers.add_parser("dev", help="run the whole stack locally (Ctrl-C stops it)")
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    parser.add_argument("--no-demo", action="store_true", help="do not seed the demo hospital")
    parser.add_argument(
        "--no-his",
        action="store_true",
        help="no HIS simulator: seed the demo hospital from inventory/devtools/demo.py instead",
    )
    parser.add_argument(
        "--no-payments",
        action="store_true",
        help="no WeChat Pay simulator: payments off, confirm books on any payment reference",
    )
    parser.add_argument(
        "--no-notify",
        action="store_true",
        help="no WeChat and SMS simulators: the worker sends no notifications",
    )
    parser.add_argument(
        "--env-file",
        default=DEFAULT_ENV_FILE,
        metavar="PATH",
        help=f"where to write the settings for other commands (default {DEFAULT_ENV_FILE}; "
        "'' writes none)",
    )
    parser.add_argument(
        "--log-file", metavar="PATH", help="write the logs there instead of to stdout"
    )
    parser.set_defaults(handler=run)


#: Where dev writes its settings unless told otherwise (the current directory).
DEFAULT_ENV_FILE = ".inventory-dev.env"
#: How long the banner waits for the API's /readyz to answer 200.
READY_WAIT_S = 30.0


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def run(args: argparse.Namespace) -> int:
    """Start the stack and block until Ctrl-C or SIGTERM."""
    from inventory.ops.logs import configure_logging

    if not args.log_file:
        configure_logging()
        return _run(args)
    try:
        log = open(args.log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    except OSError as error:
        print(f"inventory dev: --log-file: {error}", file=sys.stderr)
        return 2
    with log:
        configure_logging(stream=log)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import uvloop

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
    from inventory.simulators.his.process import SimProcess, SimStartError

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

    from inventory.ops.backoff import Backoff, sleep_unless_stopped

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

    from inventory.ops.backoff import Backoff, sleep_unless_stopped
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


async def sync_his(settings: Settings, redis_url: str, database_url: str) -> dict[str, Any]:
    """One sync of the HIS's window into Postgres and Redis (before dev's API opens; the
    load test's schedule at once)."""
    from inventory.his.flows import open_flows
    from inventory.record.pool import create_pool
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    async with contextlib.AsyncExitStack() as resources:
        client = await connect_redis(redis_url)
        resources.push_async_callback(client.aclose)
        pool = await create_pool(database_url, min_size=1, max_size=6)
        resources.push_async_callback(pool.close)
        flows = await open_flows(settings, await SlotStore.connect_scripts(client), pool=pool)
        resources.push_async_callback(flows.client.close)
        report = await flows.sync.sync()
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
    from inventory.store.connection import connect_redis

    env = os.environ
    # Refuse an unsupported Redis (INVENTORY_REDIS_URL) before touching Postgres.
    await (await connect_redis(redis_url)).aclose()
    base = f"http://{args.host}:{args.port}"
    dev_env = {
        "INVENTORY_REDIS_URL": redis_url,
        "INVENTORY_DATABASE_URL": database_url,
        "INVENTORY_HIS_URL": his_url,
        "INVENTORY_JWT_KEYS": env.get("INVENTORY_JWT_KEYS") or f"dev:{_key()}",
        "INVENTORY_FIELD_KEYS": env.get("INVENTORY_FIELD_KEYS") or f"dev:{_key()}",
        "INVENTORY_FIELD_CURRENT_KEY": env.get("INVENTORY_FIELD_CURRENT_KEY") or "dev",
        "INVENTORY_BLIND_INDEX_KEY": env.get("INVENTORY_BLIND_INDEX_KEY") or f"dev-index:{_key()}",
        "INVENTORY_HOST": args.host,
        "INVENTORY_PORT": str(args.port),
    }
    paysim: PaySimSite | None = None
    if not args.no_payments and not env.get("INVENTORY_WECHAT_MCHID"):
        paysim = await PaySimSite.start(notify_url=f"{_local(base)}/v1/payments/wechat/notify")
        dev_env |= paysim.service_env
        # The patient app sends the payer to the simulator's cashier page.
        dev_env["INVENTORY_APP_PAY_SIMULATOR_URL"] = paysim.url
    messages: MessageSimsSite | None = None
    if not args.no_notify and not (
        env.get("INVENTORY_NOTIFY_WECHAT_URL") or env.get("INVENTORY_NOTIFY_SMS_URL")
    ):
        messages = await MessageSimsSite.start()
        dev_env |= messages.service_env
    login_sims: LoginSims | None = None
    if not env.get("INVENTORY_WECHAT_APP_SECRET") and not env.get("INVENTORY_SMS_URL"):
        appid = dev_env.get("INVENTORY_WECHAT_APPID") or env.get("INVENTORY_WECHAT_APPID")
        login_sims = await LoginSims.start(
            appid=appid or DEV_APPID, sms=None if messages is None else messages.sms
        )
        dev_env |= login_sims.service_env
    try:
        await _run_stack(args, dev_env, paysim, children or {}, messages, login_sims)
    finally:
        if login_sims is not None:
            await login_sims.stop()
        if messages is not None:
            await messages.stop()
        if paysim is not None:
            await paysim.stop()


async def _run_stack(
    args: argparse.Namespace,
    dev_env: dict[str, str],
    paysim: PaySimSite | None,
    children: dict[str, Child],
    messages: MessageSimsSite | None = None,
    login_sims: LoginSims | None = None,
) -> None:
    from aiohttp import web

    from inventory.api.server import ApiRunner, connection_cap
    from inventory.app import create_app
    from inventory.devtools.demo import seed_demo
    from inventory.ops.config import Settings
    from inventory.record.catalogue import PgCatalogue
    from inventory.record.migrate import migrate_database
    from inventory.record.pool import create_pool
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    env = os.environ
    settings = Settings.from_env(
        {**{k: v for k, v in env.items() if k.startswith("INVENTORY_")}, **dev_env}
    )
    redis_url, database_url = dev_env["INVENTORY_REDIS_URL"], dev_env["INVENTORY_DATABASE_URL"]
    his_url = dev_env["INVENTORY_HIS_URL"]
    applied = await migrate_database(database_url)
    staff_password = await dev_staff_account(database_url)
    demo: dict[str, Any] | None = None
    if his_url:
        demo = await sync_his(settings, redis_url, database_url)
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
    supervisor = asyncio.create_task(supervise_children(children, stop))
    runner = ApiRunner(
        create_app(settings),
        max_connections=connection_cap(settings.max_connections),
        access_log=None,
        shutdown_timeout=10,
    )
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    base = f"http://{args.host}:{args.port}"
    port = settings.worker_metrics_port
    env_file = Path(args.env_file) if args.env_file else None
    try:
        # The banner comes last, once the API answers ready (the worker has verified the
        # store): start-up's log lines are above it, not after it.
        ready = await _ready(_local(base))
        worker_answers = bool(port) and await _answers(settings.host, port)
        lines = banner(
            settings,
            base=base,
            redis_url=redis_url,
            database_url=database_url,
            applied=len(applied),
            his_url=his_url,
            demo=demo,
            worker_answers=worker_answers,
            supervised=sorted(children),
            paysim_url=None if paysim is None else paysim.url,
            message_sim_urls=None if messages is None else messages.urls,
            login_sims=None if login_sims is None else (login_sims.wechat_url, login_sims.sms_url),
            env_file=env_file,
            log_file=args.log_file,
            ready=ready,
            staff_password=staff_password,
        )
        if env_file is not None:
            written = {name: value for name, value in dev_env.items() if value}
            try:
                envfile.write(env_file, written, comments=_env_file_header(env_file, lines))
            except OSError as error:
                # A read-only working directory: the stack still runs; say so once.
                print(f"inventory dev: cannot write {env_file}: {error}", file=sys.stderr)
                env_file = None

        def show() -> None:
            print("\n".join(lines), flush=True)

        show()
        loop.add_signal_handler(signal.SIGUSR1, show)
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGUSR1)
        if env_file is not None:
            env_file.unlink(missing_ok=True)
        await runner.cleanup()
        stop.set()
        with contextlib.suppress(Exception):
            await worker
        with contextlib.suppress(Exception):
            await supervisor


#: The staff account `inventory dev` signs the console in with (a platform operator).
DEV_STAFF_USERNAME = "ops"


async def dev_staff_account(database_url: str) -> str:
    """Make (or give a new password to) the dev staff account; its fresh password,
    printed in the banner, so the console's real sign-in works out of the box."""
    import secrets

    from inventory.login.passwords import hash_password
    from inventory.record.pool import create_pool
    from inventory.record.staff import StaffRecord

    password = secrets.token_urlsafe(12)
    password_hash = await asyncio.to_thread(hash_password, password)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        record = StaffRecord(pool)
        if not await record.add(DEV_STAFF_USERNAME, password_hash, hospitals=None):
            await record.set_password(DEV_STAFF_USERNAME, password_hash)
    finally:
        await pool.close()
    return password


def _local(url: str) -> str:
    """``url`` with a wildcard listen address replaced by loopback (for our own calls)."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://127.0.0.1:")


async def _ready(base: str, *, wait_s: float = READY_WAIT_S) -> bool:
    """Whether the API's ``/readyz`` answers 200 within ``wait_s``."""
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while loop.time() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{base}/readyz") as answer:
                    if answer.status == 200:
                        return True
            await asyncio.sleep(0.2)
    return False


def _env_file_header(path: Path, lines: list[str]) -> list[str]:
    return [
        "inventory dev's settings, while it runs (removed when it stops). Use them with",
        f"  inventory token --env-file {path} --sub demo-account",
        f"  inventory loadtest --env-file {path} --host <api>",
        f"  set -a; . {path if path.is_absolute() else './' + str(path)}; set +a",
        "",
        *lines,
        "",
    ]


class PaySimSite:
    """The WeChat Pay simulator (inventory/simulators/paysim.py) served in this process on
    a free loopback port, with fresh test keys for both sides."""

    def __init__(self, runner: Any, url: str, service_env: dict[str, str]) -> None:
        self._runner = runner
        self.url = url
        #: ``INVENTORY_WECHAT_*`` for the service talking to this simulator.
        self.service_env = service_env

    @classmethod
    async def start(cls, *, notify_url: str) -> PaySimSite:
        """Generate keys, serve the simulator, and say how the service reaches it."""
        from aiohttp import web

        from inventory.devtools.servers import LOOPBACK, free_port
        from inventory.simulators.paysim import KeySet, SimConfig, create_sim_app

        # Two RSA key pairs: a fraction of a second, off the event loop.
        keys = await asyncio.to_thread(KeySet.generate)
        runner = web.AppRunner(create_sim_app(SimConfig.from_keys(keys)), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, LOOPBACK, port).start()
        url = f"http://{LOOPBACK}:{port}"
        return cls(runner, url, keys.service_env(api_url=url, notify_url=notify_url))

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()


class MessageSimsSite:
    """The WeChat subscribe-message and SMS simulators (inventory/simulators/messages.py)
    served in this process on free loopback ports, and the notifier's settings for them
    (every kind with a template id, so a subscribed account gets WeChat messages)."""

    def __init__(self, runners: list[Any], urls: dict[str, str]) -> None:
        self._runners = runners
        #: The simulators' base URLs by channel.
        self.urls = urls
        #: ``INVENTORY_NOTIFY_*`` for the worker talking to them.
        self.service_env = {
            "INVENTORY_NOTIFY_WECHAT_URL": urls["wechat"],
            "INVENTORY_NOTIFY_WECHAT_APPID": "wx-sim-appid",
            "INVENTORY_NOTIFY_WECHAT_SECRET": "sim-secret",
            "INVENTORY_NOTIFY_WECHAT_TEMPLATES": _dev_templates(),
            "INVENTORY_NOTIFY_SMS_URL": urls["sms"],
            "INVENTORY_NOTIFY_SMS_API_KEY": "sim-sms-key",
        }

    @classmethod
    async def start(cls) -> MessageSimsSite:
        """Serve both simulators."""
        from aiohttp import web

        from inventory.devtools.servers import LOOPBACK, free_port
        from inventory.simulators.messages import (
            DEFAULT_APPID,
            DEFAULT_SECRET,
            DEFAULT_SMS_KEY,
            create_wechat_app,
        )

        apps = {
            "wechat": create_wechat_app(DEFAULT_APPID, DEFAULT_SECRET),
            # Every SMS it "sends" is printed: a patient's login code is read there.
            "sms": printing_sms_app(DEFAULT_SMS_KEY),
        }
        runners: list[Any] = []
        urls: dict[str, str] = {}
        for channel, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, LOOPBACK, port).start()
            runners.append(runner)
            urls[channel] = f"http://{LOOPBACK}:{port}"
        return cls(runners, urls)

    @property
    def sms(self) -> tuple[str, str]:
        """The SMS simulator's URL and API key (login codes go through it too)."""
        from inventory.simulators.messages import DEFAULT_SMS_KEY

        return self.urls["sms"], DEFAULT_SMS_KEY

    async def stop(self) -> None:
        """Stop serving."""
        for runner in self._runners:
            await runner.cleanup()


def _dev_templates() -> str:
    """Dev's template ids: one per kind, named after it."""
    from inventory.notify.kinds import KINDS

    return ",".join(f"{kind}:dev-{kind.replace('_', '-')}" for kind in KINDS)


#: The mini-program's app id in dev when neither payments nor the environment give one.
DEV_APPID = "wxdev0000000000001"


def printing_sms_app(api_key: str) -> Any:
    """The SMS simulator (inventory/simulators/messages.py) as an aiohttp application
    that also prints every message it takes for the first time (see :func:`print_sms`)."""
    from aiohttp import web

    from inventory.simulators.messages import SIM_STATE, SmsSim

    class PrintingSmsSim(SmsSim):
        async def take(self, key: str, address: str, content: dict[str, Any]) -> Any:
            first = not key or key not in self.messages
            found = await super().take(key, address, content)
            if first:
                print_sms(address, str(content.get("text", "")))
            return found

    sim = PrintingSmsSim(api_key)
    app = web.Application()
    app[SIM_STATE] = sim
    app.add_routes(sim.routes())
    return app


def print_sms(phone: str, text: str) -> None:
    """Show an SMS the simulator "sent" (it plays the phone): on stdout, beside the
    banner, never in the logs; the phone masked."""
    from inventory.privacy.identity import mask_mobile

    print(f"sms        {mask_mobile(phone)}  {text}", flush=True)


class LoginSims:
    """The WeChat login simulator (inventory/simulators/wxsim.py) served in this process on
    a free loopback port, and the SMS simulator the login codes go through (the
    notifications' when dev runs it, else one of its own), with fresh test credentials."""

    def __init__(
        self, runners: list[Any], wechat_url: str, sms_url: str, service_env: dict[str, str]
    ) -> None:
        self._runners = runners
        self.wechat_url = wechat_url
        self.sms_url = sms_url
        #: ``INVENTORY_WECHAT_*`` and ``INVENTORY_SMS_*`` for the service.
        self.service_env = service_env

    @classmethod
    async def start(cls, *, appid: str, sms: tuple[str, str] | None) -> LoginSims:
        """Serve the simulators and say how the service reaches them; ``sms`` is a
        running SMS simulator's (URL, API key)."""
        from aiohttp import web

        from inventory.devtools.servers import LOOPBACK, free_port
        from inventory.simulators import wxsim

        secret = secrets.token_hex(16)
        apps = [wxsim.create_sim_app(appid, secret)]
        sms_key = sms[1] if sms is not None else secrets.token_hex(16)
        if sms is None:
            apps.append(printing_sms_app(sms_key))
        runners: list[Any] = []
        urls: list[str] = []
        for app in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, LOOPBACK, port).start()
            runners.append(runner)
            urls.append(f"http://{LOOPBACK}:{port}")
        wechat_url = urls[0]
        sms_url = sms[0] if sms is not None else urls[1]
        return cls(
            runners,
            wechat_url,
            sms_url,
            {
                "INVENTORY_WECHAT_APPID": appid,
                "INVENTORY_WECHAT_APP_SECRET": secret,
                "INVENTORY_WECHAT_LOGIN_URL": wechat_url,
                "INVENTORY_SMS_URL": sms_url,
                "INVENTORY_SMS_API_KEY": sms_key,
                "INVENTORY_SMS_CODE_KEY": f"dev-sms:{_key()}",
            },
        )

    async def stop(self) -> None:
        """Stop serving."""
        for runner in self._runners:
            await runner.cleanup()


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
    paysim_url: str | None = None,
    message_sim_urls: dict[str, str] | None = None,
    login_sims: tuple[str, str] | None = None,
    env_file: Path | None = None,
    log_file: str | None = None,
    ready: bool = True,
    staff_password: str | None = None,
) -> list[str]:
    """The lines `inventory dev` prints: where everything is (the metrics of the API and
    of the worker included), whether payments are on, where its settings and logs are,
    and ready-made tokens."""
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
    if paysim_url is not None:
        lines.append(
            f"payments   on: WeChat Pay simulator {paysim_url}  (the payer pays with "
            f"POST {paysim_url}/sim/orders/<payment_id>/pay; --no-payments turns them off)"
        )
    elif settings.payments.enabled:
        lines.append(f"payments   on: WeChat Pay at {settings.payments.api_url}")
    else:
        lines.append("payments   off: confirm books a hold on any payment reference")
    if message_sim_urls is not None:
        lines.append(
            f"notify     on: WeChat simulator {message_sim_urls['wechat']}, SMS simulator "
            f"{message_sim_urls['sms']}  (what was sent: GET <simulator>/sim/messages; "
            "--no-notify turns them off)"
        )
    elif settings.notify.enabled:
        lines.append(f"notify     on: {', '.join(settings.notify.channels)}")
    else:
        lines.append("notify     off: no WeChat or SMS channel configured")
    if login_sims is not None:
        wechat_url, sms_url = login_sims
        lines += [
            f"login      WeChat simulator {wechat_url}  (a device's wx.login: POST "
            f"{wechat_url}/sim/login, then POST {base}/v1/auth/wechat {{code}})",
            f"           SMS simulator {sms_url}  (POST {base}/v1/auth/sms/code {{phone}}; "
            "each SMS sent is printed here)",
        ]
    else:
        methods = [
            name
            for name, on in (
                ("WeChat", settings.login.wechat_enabled),
                ("SMS", settings.login.sms_enabled),
            )
            if on
        ]
        lines.append(f"login      {' and '.join(methods) or 'off'} (from the environment)")
    if demo:
        lines.append(
            f"demo       hospital {demo['hospital_id']}: {demo['schedules']} schedules from "
            f"{demo['first_day']}; try {base}/v1/hospitals/{demo['hospital_id']}/departments"
        )
    if env_file is not None:
        lines.append(
            f"settings   {env_file}  (inventory token|loadtest|check ... --env-file {env_file})"
        )
    again = f"this banner again: kill -USR1 {os.getpid()}"
    lines.append(f"logs       {log_file or 'stdout'}  ({again})")
    restarted = ", ".join(["worker", *(supervised or [])])
    token = mint_token(settings, "demo-account", ttl_s=24 * 3600)
    operator = mint_token(settings, "demo-operator", operator=True, ttl_s=24 * 3600)
    lines += [
        f"supervised {restarted}: restarted when they die (back-off "
        f"{RESTART_INITIAL_S:g}-{RESTART_MAX_S:g} s, see the log)",
        # The fragment never reaches a server; the app keeps the token and drops it
        # from the address bar.
        f"app        {base}/app/#dev-token={token}  (the patient app, signed in as "
        "demo-account: a dev-only sign-in)",
        f"token      {token}",
        f"operator   {operator}",
        f"console    {base}/console/#dev-token={operator}  (the staff console, signed in as "
        "demo-operator, a platform operator: a dev-only sign-in)",
    ]
    if staff_password is not None:
        lines.append(
            f"staff      {base}/console/ sign-in: username {DEV_STAFF_USERNAME}, password "
            f"{staff_password}  (a platform operator; more with `inventory staff add`)"
        )
    lines += [
        "ready: Ctrl-C stops everything"
        if ready
        else f"ready: NOT YET ({_local(base)}/readyz does not answer 200; see the log)",
    ]
    return lines
