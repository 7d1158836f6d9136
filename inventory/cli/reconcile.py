"""`inventory reconcile`: compare the HIS, Postgres and Redis now, and fix what the policy
allows (``--fix``) or only report (``--report-only``, the default)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from inventory.cli.arguments import positive_int
from inventory.ops.config import Settings


def register(subparsers: Any) -> None:
    """Add the ``reconcile`` command."""
    parser = subparsers.add_parser(
        "reconcile",
        help="compare HIS, Postgres and Redis; fix what the policy allows (--fix)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--fix",
        dest="fix",
        action="store_true",
        help="fix the kinds the policy names (INVENTORY_RECONCILE_POLICY or --policy)",
    )
    mode.add_argument(
        "--report-only",
        dest="fix",
        action="store_false",
        help="change nothing, report every difference (the default)",
    )
    parser.add_argument(
        "--policy",
        help="kinds to fix, e.g. default,-other_channel,status_mismatch (docs/his.md)",
    )
    parser.add_argument(
        "--days", type=positive_int, help="visit dates from today (default: the window)"
    )
    parser.add_argument(
        "--hospital",
        help="reconcile this hospital's HIS connection (default: the default connection)",
    )
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(handler=run, fix=False)


def run(args: argparse.Namespace) -> int:
    """Run one reconciliation; exit 0 when nothing is left unresolved, 1 when differences
    remain, 2 on a configuration problem."""
    from inventory.errors import InventoryError
    from inventory.his.connections import ConnectionsError
    from inventory.his.flows import connections_of
    from inventory.his.reconcile import ReconcilePolicy

    settings = Settings.from_env(for_api=False)
    try:
        policy = ReconcilePolicy.parse(args.policy or settings.reconcile_policy)
    except ValueError as error:
        print(f"inventory reconcile: {error}", file=sys.stderr)
        return 2
    try:
        connections = connections_of(settings)
    except ConnectionsError as error:
        print(f"inventory reconcile: INVENTORY_HIS_CONNECTIONS: {error}", file=sys.stderr)
        return 2
    connection = connections.for_hospital(args.hospital) if args.hospital else connections.default
    if connection is None:
        print(
            "inventory reconcile: INVENTORY_HIS_URL is not set"
            + (f" and {args.hospital} has no connection of its own" if args.hospital else ""),
            file=sys.stderr,
        )
        return 2
    _log_to_stderr()
    try:
        report = asyncio.run(
            _reconcile(
                settings,
                policy,
                fix=args.fix,
                days=args.days,
                connection=connection,
                scope=connections.scope(connection),
            )
        )
    except (InventoryError, OSError) as error:
        print(f"inventory reconcile: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(report)
    return 0 if report.ok else 1


async def _reconcile(
    settings: Settings,
    policy: Any,
    *,
    fix: bool,
    days: int | None,
    connection: Any,
    scope: Any,
) -> Any:
    from datetime import timedelta

    from inventory.his.flows import open_flows
    from inventory.record.pool import create_pool
    from inventory.store.connection import connect_redis
    from inventory.store.slot_store import SlotStore

    client = await connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    flows = await open_flows(
        settings,
        await SlotStore.connect_scripts(client),
        pool=pool,
        connection=connection,
        scope=scope,
    )
    flows.reconciler.policy = policy
    try:
        first, last = flows.sync.window()
        if days is not None:
            last = first + timedelta(days=days - 1)
        return await flows.reconciler.reconcile(fix=fix, first_day=first, last_day=last)
    finally:
        await flows.client.close()
        await pool.close()
        await client.aclose()


def _log_to_stderr() -> None:
    """JSON logs as everywhere, but on stderr: stdout is the report."""
    from inventory.ops.logs import configure_logging

    configure_logging(stream=sys.stderr)


def _print_table(report: Any) -> None:
    print(
        f"reconciliation {report.run_id} ({report.mode}) {report.first_day}..{report.last_day}: "
        f"{report.total} differences, {sum(report.fixed.values())} fixed"
    )
    print(f"  {'kind':<20} {'found':>6} {'fixed':>6} {'failed':>6}")
    for kind, found in report.counts.items():
        print(f"  {kind:<20} {found:>6} {report.fixed[kind]:>6} {report.failed[kind]:>6}")
    for item in report.items:
        if item.action != "fixed":
            print(f"  {item.action:<10} {item.kind:<20} {item.subject} {item.error}".rstrip())
