"""`inventory serve`: the booking API on uvloop, N processes sharing one port.

Each process runs its own event loop and pools; the kernel spreads connections over
them (SO_REUSEPORT). SIGINT/SIGTERM shut down gracefully: stop accepting, finish
what is in flight (up to --shutdown-timeout), close the pools.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal
import sys
from typing import Any

from inventory.config import ConfigError, Settings


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser("serve", help="run the booking API")
    parser.add_argument("--host", help="address to listen on (default INVENTORY_HOST)")
    parser.add_argument("--port", type=int, help="port (default INVENTORY_PORT)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to finish in-flight work"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until a signal."""
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"inventory serve: {error}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    if args.workers < 1:
        print("inventory serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers == 1:
        serve_process(settings, host, port, args.shutdown_timeout, reuse_port=False)
        return 0
    return _supervise(settings, host, port, args.workers, args.shutdown_timeout)


def serve_process(
    settings: Settings, host: str, port: int, shutdown_timeout: float, *, reuse_port: bool
) -> None:
    """Run one API process until SIGINT or SIGTERM."""
    import uvloop

    from inventory.app import create_app
    from inventory.logs import configure_logging

    configure_logging()

    async def main() -> None:
        from aiohttp import web

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(
            create_app(settings), access_log=None, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
        await site.start()
        print(f"serving on http://{host}:{port}", flush=True)
        await stop.wait()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _supervise(
    settings: Settings, host: str, port: int, workers: int, shutdown_timeout: float
) -> int:
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=serve_process,
            args=(settings, host, port, shutdown_timeout),
            kwargs={"reuse_port": True},
            name=f"inventory-api-{i}",
        )
        for i in range(workers)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: each child shuts down gracefully

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        child.join()
    return 0 if all(child.exitcode == 0 for child in children) else 1
