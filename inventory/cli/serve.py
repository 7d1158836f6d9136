"""`inventory serve`: the booking API on uvloop, N processes sharing one port.

Each process runs its own event loop and pools; the kernel spreads connections over
them (SO_REUSEPORT). SIGINT/SIGTERM shut down gracefully: stop accepting, finish
what is in flight (up to --shutdown-timeout), close the pools.

With N > 1 the processes share a prometheus-client multiprocess directory, so each
one's /metrics answers for all of them: ``PROMETHEUS_MULTIPROC_DIR`` when set (it must
be empty at start), else a fresh temporary one removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from inventory.cli.arguments import positive_int
from inventory.ops.config import Settings


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser("serve", help="run the booking API")
    parser.add_argument("--host", help="address to listen on (default INVENTORY_HOST)")
    parser.add_argument("--port", type=int, help="port (default INVENTORY_PORT)")
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="processes sharing the port"
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to finish in-flight work"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until a signal."""
    settings = Settings.from_env()
    host = args.host or settings.host
    port = args.port or settings.port
    if args.workers == 1:
        serve_process(settings, host, port, args.shutdown_timeout, reuse_port=False)
        return 0
    return _supervise(settings, host, port, args.workers, args.shutdown_timeout)


def serve_process(
    settings: Settings, host: str, port: int, shutdown_timeout: float, *, reuse_port: bool
) -> None:
    """Run one API process until SIGINT or SIGTERM."""
    import structlog
    import uvloop

    from inventory.app import create_app
    from inventory.ops.gc_tuning import tune_garbage_collector
    from inventory.ops.logs import configure_logging
    from inventory.ops.open_files import raise_soft_limit
    from inventory.store.connection import UnsupportedRedisError

    configure_logging()
    # One file per connection: a waiting room's crowd holds one each until its answer.
    open_files, _ = raise_soft_limit()

    async def main() -> None:
        from aiohttp import web

        from inventory.api.server import ApiRunner, connection_cap

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        max_connections = connection_cap(settings.max_connections, open_files)
        runner = ApiRunner(
            create_app(settings),
            max_connections=max_connections,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
        await site.start()
        tune_garbage_collector()
        url = f"http://{host}:{port}"
        # The event text is what scripts and tests wait for; one line per process.
        structlog.get_logger("inventory.serve").info(
            f"serving on {url}",
            url=url,
            open_files_limit=open_files,
            max_connections=max_connections,
        )
        await stop.wait()
        await runner.cleanup()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except UnsupportedRedisError as error:
        # Said once, plainly (a --workers child has no command line above it to say it).
        print(f"inventory serve: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve_child(settings: Settings, host: str, port: int, shutdown_timeout: float) -> None:
    """One of N processes: Redis or Postgres out of reach at start-up ends it with one
    line (the supervisor then exits non-zero), not a traceback per process."""
    from inventory.cli.failures import OUTAGE_ERRORS, report

    try:
        serve_process(settings, host, port, shutdown_timeout, reuse_port=True)
    except OUTAGE_ERRORS as error:
        sys.exit(report("serve", error))


def _supervise(
    settings: Settings, host: str, port: int, workers: int, shutdown_timeout: float
) -> int:
    # Set before the children start: prometheus-client reads it when first imported.
    scratch = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        scratch = tempfile.mkdtemp(prefix="inventory-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
    try:
        return _run_children(settings, host, port, workers, shutdown_timeout)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_children(
    settings: Settings, host: str, port: int, workers: int, shutdown_timeout: float
) -> int:
    from prometheus_client import multiprocess

    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_serve_child,
            args=(settings, host, port, shutdown_timeout),
            name=f"inventory-api-{i}",
        )
        for i in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: each child shuts down gracefully

    # Before any child starts, so a signal during start-up is forwarded, not fatal.
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        child.start()
    # The supervisor serves nothing, but importing the command line may have created
    # metric files under its own pid (modules that import inventory.ops.metrics): drop them,
    # or its never-verified gauge would hold the "every live process" minimum at 0.
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        for own in Path(multiproc_dir).glob(f"*_{os.getpid()}.db"):
            own.unlink(missing_ok=True)

    running = {child.sentinel: child for child in children}
    while running:
        ready = multiprocessing.connection.wait(list(running))
        for child in [running.pop(s) for s in list(running) if s in ready]:
            child.join()
            # A process that is gone must not hold down "live" gauges (store_verified).
            if child.pid is not None:
                multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
    # A child stopped by our SIGTERM before its loop took over the signal stopped cleanly.
    clean = (0, -signal.SIGTERM)
    if all(child.exitcode in clean for child in children):
        return 0
    # Every process refused to start (e.g. a Redis below the minimum): the command did.
    return 2 if all(child.exitcode == 2 for child in children) else 1
