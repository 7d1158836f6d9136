"""`inventory rebuild` and `inventory check`: the durable record's tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from inventory.ops.config import Settings

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    from inventory.recovery.check import CheckReport
    from inventory.store.slot_store import SlotStore


def register(subparsers: Any) -> None:
    """Add the ``rebuild`` and ``check`` commands."""
    rebuild = subparsers.add_parser(
        "rebuild", help="restore Redis state (counts, holds, bookings, rules) from Postgres"
    )
    rebuild.add_argument("--tag", action="append", help="only this tag (repeatable)")
    rebuild.add_argument("--fenced", action="store_true", help="only tags that are fenced")
    rebuild.add_argument(
        "--raise-oversold",
        action="store_true",
        help="rebuild a tag Postgres records as oversold by raising each oversold slot's "
        "capacity (in Postgres and Redis) to the units already sold; reported per slot",
    )
    rebuild.add_argument(
        "--lookups",
        action="store_true",
        help="only copy account-patient links and slot locations to Redis (safe while live)",
    )
    rebuild.set_defaults(handler=run_rebuild)
    check = subparsers.add_parser(
        "check",
        help="compare Redis and Postgres for every slot; non-zero exit on drift, lag, an "
        "invariant violation (oversold included) or a fenced tag",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="also write the findings as Prometheus metrics (node exporter textfile format)",
    )
    check.set_defaults(handler=run_check)


#: What a command does with the store and the Postgres pool; returns the exit status.
Action = Callable[["SlotStore", "asyncpg.Pool"], Awaitable[int]]


async def _with_store(action: Action) -> int:
    from inventory.record.pool import create_pool
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    settings = Settings.from_env(for_api=False)
    async with contextlib.AsyncExitStack() as resources:
        client = await connect_redis(settings.redis_url, cluster=settings.redis_cluster)
        resources.push_async_callback(client.aclose)
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
        resources.push_async_callback(pool.close)
        return await action(await SlotStore.connect_scripts(client), pool)


def _run(action: Action) -> int:
    # A bad configuration or a server out of reach is reported by inventory.cli.main.
    return asyncio.run(_with_store(action))


def run_rebuild(args: argparse.Namespace) -> int:
    """Rebuild and print what was restored, raised and not rebuilt; exit 1 if a tag
    could not be rebuilt (the others are rebuilt all the same). ``--lookups`` only copies
    the account-patient links and slot locations."""
    from inventory.recovery.rebuild import copy_lookups, rebuild
    from inventory.release.restore import restore_rooms

    async def action(store: SlotStore, pool: asyncpg.Pool) -> int:
        if args.lookups:
            links, slots = await copy_lookups(store, pool)
            print(f"copied {links} account-patient links and {slots} slot locations")
            return 0
        report = await rebuild(
            store,
            pool,
            tags=args.tag,
            only_fenced=args.fenced,
            raise_oversold=args.raise_oversold,
            # The tag's rebuild dropped its schedules' rooms: a room not sold out
            # governs them again (from Redis when it still has it, else the record).
            after_tag=lambda tag: restore_rooms(store, pool, tag),
        )
        print(
            f"rebuilt {len(report.tags)} tags, {report.holds} open holds and bookings, "
            f"{report.rooms} waiting rooms from the record, "
            f"{report.patients} patients' tokens, {report.links} account-patient links and "
            f"{report.slot_locations} slot locations; {len(report.failed)} failed"
        )
        for raised in report.raised:
            print(
                f"  {raised.tag} {raised.slot}: OVERSOLD, capacity raised from "
                f"{raised.capacity} to {raised.raised_to}"
            )
        for failure in report.failed:
            print(f"  {failure.tag}: not rebuilt: {failure.reason}", file=sys.stderr)
        return 0 if report.ok else 1

    return _run(action)


def _write_check_metrics(report: CheckReport, path: str) -> None:
    import time

    from inventory.ops import metrics

    metrics.observe_check(
        violations=len(report.violations),
        drift_kinds=[d.kind for d in report.drift],
        lagging=len(report.lagging),
        fenced=len(report.fenced),
        at=time.time(),
    )
    metrics.write_textfile("check", path)


def run_check(args: argparse.Namespace) -> int:
    """Check and print a report; exit 1 on drift, an invariant violation, a fenced
    tag or a tag still lagging (neither compared)."""
    from inventory.recovery.check import check

    async def action(store: SlotStore, pool: asyncpg.Pool) -> int:
        report = await check(store, pool)
        if args.metrics_file:
            _write_check_metrics(report, args.metrics_file)
        if args.json:
            print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            print(
                f"{report.tags} tags, {report.slots} slots: "
                f"{len(report.violations)} invariant violations, {len(report.drift)} drifts, "
                f"{len(report.lagging)} lagging, {len(report.fenced)} fenced"
            )
            for item in report.violations + report.drift:
                print(
                    f"  {item.tag} {item.slot} {item.kind}: redis={item.redis} "
                    f"postgres={item.postgres}"
                )
            for tag in report.lagging:
                print(f"  {tag} lagging: {report.lag_reasons.get(tag, '')}")
            for tag in report.fenced:
                print(f"  {tag} fenced: not compared; rebuild it (inventory rebuild --fenced)")
        # A lagging or fenced tag is not compared: nothing vouches for it yet.
        return 0 if report.settled else 1

    return _run(action)
