"""`inventory worker`: persister, expirer and fence monitor in one process."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from inventory.ops.config import ConfigError, Settings


def register(subparsers: Any) -> None:
    """Add the ``worker`` command."""
    parser = subparsers.add_parser(
        "worker", help="run the persister, expirer and fence monitor (Ctrl-C stops it)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (exit 0); 1 when a loop failed, 2 on bad configuration."""
    import uvloop

    from inventory.ops.logs import configure_logging
    from inventory.worker import WorkerLoopFailedError, run_worker

    settings = Settings.from_env(for_api=False)
    check_his_connections(settings)
    configure_logging()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            runner.run(run_worker(settings))
        except WorkerLoopFailedError as error:
            # Non-zero, so that systemd's Restart=on-failure (or compose) starts it again.
            print(f"inventory worker: {error}; exiting", file=sys.stderr)
            return 1
    return 0


def check_his_connections(settings: Settings) -> None:
    """Refuse a wrong HIS connections file at start-up (exit 2), secrets missing included."""
    if not settings.his_connections:
        return
    from inventory.his.connections import ConnectionsError
    from inventory.his.flows import connections_of

    try:
        connections_of(settings)
    except ConnectionsError as error:
        raise ConfigError([f"INVENTORY_HIS_CONNECTIONS: {error}"]) from None
