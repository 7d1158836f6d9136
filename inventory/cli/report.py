"""`inventory report`: a hospital's figures per department over a range of visit dates,
from the durable record (JSON, CSV, or a plot written to a file)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson

from inventory.ops.config import Settings

#: The longest range of visit dates one report covers (as the API's).
MAX_DAYS = 366


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def register(subparsers: Any) -> None:
    """Add the ``report`` command."""
    parser = subparsers.add_parser(
        "report",
        help="a hospital's figures per department over visit dates (JSON, CSV, plot)",
    )
    parser.add_argument("--hospital", required=True, help="the hospital id")
    parser.add_argument("--from", dest="first", type=_day, required=True, help="YYYY-MM-DD")
    parser.add_argument("--to", dest="last", type=_day, required=True, help="YYYY-MM-DD")
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument(
        "--plot", type=Path, metavar="PATH", help="also draw it to PATH (.png or .svg)"
    )
    parser.add_argument(
        "--kind",
        choices=("rates", "cancellations"),
        default="rates",
        help="what --plot draws (default rates)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0, 1 when Postgres cannot be reached or the hospital is
    unknown, 2 for bad arguments."""
    if args.last < args.first or (args.last - args.first).days >= MAX_DAYS:
        print(
            f"inventory report: --to must be from --from to {MAX_DAYS - 1} days after it",
            file=sys.stderr,
        )
        return 2
    image: Literal["png", "svg"] = "png"
    if args.plot is not None:
        suffix = args.plot.suffix.lower()
        if suffix not in (".png", ".svg"):
            print("inventory report: --plot must name a .png or .svg file", file=sys.stderr)
            return 2
        image = "svg" if suffix == ".svg" else "png"
    settings = Settings.from_env(for_api=False)
    report = asyncio.run(_report(settings, args.hospital, args.first, args.last))
    if report is None:
        print(f"inventory report: no hospital {args.hospital!r}", file=sys.stderr)
        return 1
    from inventory.reports.render import report_csv, report_plot

    if args.format == "csv":
        sys.stdout.write(report_csv(report).decode())
    else:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    if args.plot is not None:
        args.plot.write_bytes(report_plot(report, args.kind, image))
    return 0


async def _report(settings: Settings, hospital_id: str, first: date, last: date) -> Any:
    from inventory.record.pool import create_pool
    from inventory.record.reports import hospital_exists
    from inventory.reports.build import hospital_report

    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        if not await hospital_exists(pool, hospital_id):
            return None
        return await hospital_report(pool, hospital_id, first, last)
    finally:
        await pool.close()
