"""`inventory dev`: the whole stack on one machine, with no set-up.

Uses ``INVENTORY_REDIS_URL`` when given, otherwise starts a private Redis (system
binary, else the one the ``servers`` extra ships) in a temporary folder. Runs the
expirer and prints where everything is; Ctrl-C stops all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from inventory.expirer import run_expirer
from inventory.redis_client import connect_redis
from inventory.servers import ServerError, start_redis
from inventory.store import SlotStore


def register(subparsers: Any) -> None:
    """Add the ``dev`` command."""
    parser = subparsers.add_parser("dev", help="run the whole stack locally (Ctrl-C stops it)")
    parser.add_argument(
        "--expire-interval", type=float, default=1.0, help="seconds between expirer sweeps"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start the stack and block until Ctrl-C or SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="inventory-dev-") as scratch:
        url = os.environ.get("INVENTORY_REDIS_URL")
        server = None
        if url is None:
            try:
                server = start_redis(Path(scratch) / "redis")
            except ServerError as error:
                print(f"inventory dev: {error}", file=sys.stderr)
                return 1
            url = server.url
        try:
            asyncio.run(_serve(url, args.expire_interval))
        finally:
            if server is not None:
                server.close()
    return 0


async def _serve(redis_url: str, expire_interval_s: float) -> None:
    client = await connect_redis(redis_url)
    store = await SlotStore.connect_scripts(client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"redis    {redis_url}", flush=True)
    print(f"expirer  sweeping every {expire_interval_s:g} s", flush=True)
    print("ready (Ctrl-C stops everything)", flush=True)
    try:
        await run_expirer(store, interval_s=expire_interval_s, stop=stop)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
