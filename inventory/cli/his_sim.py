"""`inventory his-sim`: the HIS simulator, a FHIR R4 server with its own state.

    inventory his-sim [--state PATH] [--host H] [--port P] [--seed demo|none]
                      [--seed-rng N] [fault flags] [--suspend ID[:REASON]]...
                      [--add-capacity SLOT:N]... [--book-other SLOT:CHANNEL[:COUNT]]...

It seeds the demo hospital into an empty state, applies the schedule changes given on
the command line, prints one line naming its FHIR base, and serves until SIGINT or
SIGTERM. Faults set here are the starting point; ``/$admin/faults`` changes them at run
time (docs/his.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``his-sim`` command."""
    parser = subparsers.add_parser(
        "his-sim",
        help="run the HIS simulator (FHIR R4 over HTTP, with fault injection)",
        description=(
            "A stand-in for the hospital's HIS: FHIR R4 JSON under /fhir, an admin API "
            "under /$admin, state in a SQLite file that survives restarts."
        ),
    )
    parser.add_argument("--state", default="his-sim.sqlite3", help="state file (SQLite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on")
    parser.add_argument(
        "--seed",
        choices=("demo", "none"),
        default="demo",
        help="what to put into an empty state (default: the demo hospital)",
    )
    parser.add_argument("--days", type=int, default=14, help="days of schedules to seed")
    parser.add_argument(
        "--seed-rng", type=int, default=None, help="seed of the RNG (seed data, faults, jitter)"
    )
    faults = parser.add_argument_group("faults (change them at run time via /$admin/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency")
    faults.add_argument("--jitter-ms", type=float, default=0.0, help="plus uniform jitter")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    faults.add_argument("--error-status", type=int, default=503, help="status of those answers")
    faults.add_argument("--timeout-rate", type=float, default=0.0, help="share that hang")
    faults.add_argument("--hang-s", type=float, default=30.0, help="how long a timeout hangs")
    faults.add_argument(
        "--drop-rate", type=float, default=0.0, help="share handled, then connection closed"
    )
    faults.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="share handled twice (replayed)"
    )
    faults.add_argument(
        "--fault-methods", default="", help="comma-separated methods faults apply to (all)"
    )
    faults.add_argument(
        "--fault-resources", default="", help="comma-separated resource types (all)"
    )
    changes = parser.add_argument_group("schedule changes applied at start")
    changes.add_argument(
        "--suspend", action="append", default=[], metavar="SCHEDULE[:REASON]", help="停诊"
    )
    changes.add_argument(
        "--add-capacity", action="append", default=[], metavar="SLOT:N", help="加号"
    )
    changes.add_argument(
        "--book-other",
        action="append",
        default=[],
        metavar="SLOT:CHANNEL[:COUNT]",
        help="bookings through the window or phone",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=2.0, help="seconds")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Open the state, seed it, apply changes, serve until a signal."""
    from inventory.simulators.his.faults import FaultConfig

    try:
        faults = FaultConfig(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            error_rate=args.error_rate,
            error_status=args.error_status,
            timeout_rate=args.timeout_rate,
            hang_s=args.hang_s,
            drop_rate=args.drop_rate,
            duplicate_rate=args.duplicate_rate,
            methods=tuple(m.upper() for m in args.fault_methods.split(",") if m),
            resources=tuple(r for r in args.fault_resources.split(",") if r),
        )
    except ValueError as error:
        print(f"inventory his-sim: {error}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed_rng)
    try:
        state = _open_state(args, rng)
    except (ValueError, LookupError) as error:
        print(f"inventory his-sim: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, state, faults, rng))
    except OSError as error:
        print(
            f"inventory his-sim: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr
        )
        return 1
    finally:
        state.close()
    return 0


def _open_state(args: argparse.Namespace, rng: random.Random) -> Any:
    from inventory.his.fhir import SYSTEMS
    from inventory.simulators.his.seed import seed_demo
    from inventory.simulators.his.state import SimNotFound, SimRefusal, SimState

    Path(args.state).parent.mkdir(parents=True, exist_ok=True)
    state = SimState(args.state)
    try:
        if state.is_empty() and args.seed == "demo":
            seed_demo(state, rng, days=args.days)
        for item in args.suspend:
            schedule_id, _, reason = item.partition(":")
            state.set_schedule_active(
                schedule_id, False, reason or "停诊", cancel_appointments=False
            )
        for item in args.add_capacity:
            slot_id, _, count = item.rpartition(":")
            state.change_capacity(slot_id, add=int(count))
        for item in args.book_other:
            slot_id, channel, *rest = item.split(":")
            if channel not in ("window", "phone"):
                raise ValueError("--book-other channel must be window or phone")
            for _ in range(int(rest[0]) if rest else 1):
                state.create_appointment(
                    system=SYSTEMS.channel_identifier(channel),
                    value=state.next_external_id(channel),
                    slot_id=slot_id,
                    channel=channel,
                    patient_name="窗口患者",
                )
    except SimNotFound as error:
        state.close()
        raise LookupError(f"no {error} in the simulator's state") from error
    except SimRefusal as error:
        state.close()
        raise LookupError(f"refused ({error.reason}): {error.message}") from error
    except ValueError:
        state.close()
        raise
    return state


async def _serve(args: argparse.Namespace, state: Any, faults: Any, rng: random.Random) -> None:
    import logging

    from aiohttp import web

    from inventory.simulators.his.app import FHIR_BASE, create_sim_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.access_log:
        logging.basicConfig(level=logging.INFO)
    runner = web.AppRunner(
        create_sim_app(state, faults, rng),
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        shutdown_timeout=args.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        summary = state.summary()
        print(
            f"his-sim: FHIR R4 at http://{args.host}:{args.port}{FHIR_BASE} "
            f"(state {args.state}: {summary['schedules']} schedules, "
            f"{summary['appointments']} appointments)",
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
