"""`inventory persist`: run only the persister (outbox streams -> Postgres).

    inventory persist [--redis-url URL] [--cluster] [--database-url URL] [--consumer NAME]
                      [--match PATTERN ...] [--batch-size N] [--writers N] [--block S]
                      [--min-idle S]
                      [--scan-interval S] [--max-attempts N] [--stats-interval S]

``inventory worker`` runs the persister beside the expirer and the fence monitor; this
command runs it alone, for operations and for the fault tests, which SIGKILL it. URLs
default to ``INVENTORY_REDIS_URL`` / ``INVENTORY_DATABASE_URL`` (and ``--cluster`` to
``INVENTORY_REDIS_CLUSTER``), read through ``Settings.from_env(for_api=False)``, so the
API's keys are not needed. It starts while Postgres is down and waits for it.

Without the fence it has no ``on_diverged`` hook of its own: a diverged event is still not
applied, and is logged, counted and kept in ``dead_letters``; the worker fences the tag.

Stops on SIGINT/SIGTERM after the batch in hand; logs JSON lines on stdout, with a
summary every ``--stats-interval`` seconds while something changed. Exit status: 0 after
a stop; 1 when Redis cannot be reached at start; 2 for configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from inventory.cli.arguments import positive_float, positive_int
from inventory.ops.config import Settings

_PROG = "inventory persist"


def register(subparsers: Any) -> None:
    """Add the ``persist`` command."""
    parser = subparsers.add_parser(
        "persist",
        help="run only the persister: outbox streams -> Postgres (Ctrl-C stops it)",
        description="Persist every outbox stream's events to Postgres, at least once and "
        "idempotently, until SIGINT or SIGTERM. See docs/durability.md.",
    )
    parser.add_argument("--redis-url", help="default: $INVENTORY_REDIS_URL")
    parser.add_argument(
        "--cluster",
        action="store_true",
        default=None,
        help="Redis is a Cluster (default: $INVENTORY_REDIS_CLUSTER)",
    )
    parser.add_argument("--database-url", help="default: $INVENTORY_DATABASE_URL")
    parser.add_argument(
        "--consumer",
        help="consumer name in the group (default: <host>-<pid>; a stable name lets a "
        "restart read its own pending entries at once)",
    )
    parser.add_argument(
        "--match",
        action="append",
        metavar="PATTERN",
        help="SCAN pattern of the streams to persist (repeatable; default inv:{*}:outbox)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=500)
    parser.add_argument(
        "--writers",
        type=positive_int,
        default=2,
        help="transactions written at once over disjoint streams (default 2)",
    )
    parser.add_argument(
        "--block", type=positive_float, default=1.0, help="seconds a read blocks (default 1)"
    )
    parser.add_argument(
        "--min-idle",
        type=positive_float,
        default=30.0,
        help="take over entries pending this many seconds on another consumer (default 30)",
    )
    parser.add_argument(
        "--scan-interval",
        type=positive_float,
        default=2.0,
        help="seconds between SCANs for new streams (default 2)",
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        default=5,
        help="deliveries before a failing entry goes to dead_letters (default 5)",
    )
    parser.add_argument(
        "--stats-interval",
        type=positive_float,
        default=5.0,
        help="seconds between lag samples and summary lines (default 5)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the persister until SIGINT/SIGTERM."""
    from inventory.ops.logs import configure_logging

    settings = Settings.from_env(for_api=False)
    configure_logging()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(_persist(args, settings))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_persist(args, settings))


async def _persist(args: argparse.Namespace, settings: Settings) -> int:
    import redis.exceptions
    import structlog

    from inventory.record.persister import PersisterConfig, PersisterStats, run_persister
    from inventory.record.pool import create_pool
    from inventory.store.connection import connect_redis

    log = structlog.get_logger("inventory.cli.persist")
    cluster = settings.redis_cluster if args.cluster is None else args.cluster
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "writers": args.writers,
        "block_s": args.block,
        "claim_min_idle_s": args.min_idle,
        "scan_interval_s": args.scan_interval,
        "max_attempts": args.max_attempts,
        "stats_interval_s": args.stats_interval,
    }
    if args.consumer:
        options["consumer"] = args.consumer
    if args.match:
        options["match"] = tuple(args.match)
    try:
        config = PersisterConfig(**options)
    except ValueError as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 2
    try:
        client = await connect_redis(args.redis_url or settings.redis_url, cluster=cluster)
    except (redis.exceptions.RedisError, OSError) as error:
        print(f"{_PROG}: cannot reach Redis: {error}", file=sys.stderr)
        return 1
    pool = await create_pool(
        args.database_url or settings.database_url,
        min_size=0,
        max_size=config.writers + 1,
        init_size=0,
        application_name="slot-inventory-persister",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stats = PersisterStats()

    async def report() -> None:
        last: dict[str, Any] = {}
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.stats_interval_s)
            figures = stats.as_dict()
            figures.pop("lag")
            figures.pop("pending")
            changed = {k: v for k, v in figures.items() if k not in ("sampled_at",)}
            if changed != last:
                log.info("outbox.stats", **figures)
                last = changed

    reporter = asyncio.create_task(report())
    try:
        await run_persister(client, pool, stop=stop, config=config, stats=stats)
    finally:
        stop.set()
        await reporter
        await pool.close()
        await client.aclose()
    return 0
