"""`inventory his-sim`: the HIS simulator, a FHIR R4 server with its own state.

    inventory his-sim [--state PATH] [--host H] [--port P] [--seed demo|none]
                      [--seed-rng N] [fault flags] [--suspend ID[:REASON]]...
                      [--add-capacity SLOT:N]... [--book-other SLOT:CHANNEL[:COUNT]]...

It seeds the demo hospital into an empty state, applies the schedule changes given on
the command line, prints one line naming its FHIR base, and serves until SIGINT or
SIGTERM. Faults set here are the starting point; ``/$admin/faults`` changes them at run
time (docs/his.md).

``--hospitals FILE`` serves several hospitals instead, each under ``/h/<id>/`` with a
state file of its own (next to ``--state``), its own faults and its own credentials
(a token endpoint at ``/h/<id>/auth/token``). ``--tls-cert``/``--tls-key`` serve HTTPS;
``--tls-client-ca`` then requires a client certificate signed by that CA (mutual TLS).
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
    several = parser.add_argument_group("several hospitals, credentials, TLS")
    several.add_argument(
        "--hospitals",
        help="JSON file of hospitals to serve under /h/<id>/, each with its credentials",
    )
    several.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    several.add_argument("--tls-key", help="its private key (PEM)")
    several.add_argument(
        "--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)"
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
    if args.hospitals:
        return _run_several(args, faults, rng)
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


def _run_several(args: argparse.Namespace, faults: Any, rng: random.Random) -> int:
    from inventory.simulators.his.auth import load_hospitals
    from inventory.simulators.his.seed import seed_demo
    from inventory.simulators.his.state import SimState

    if args.suspend or args.add_capacity or args.book_other:
        print(
            "inventory his-sim: with --hospitals, change schedules through each "
            "hospital's /h/<id>/$admin",
            file=sys.stderr,
        )
        return 2
    try:
        hospitals = load_hospitals(Path(args.hospitals))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"inventory his-sim: --hospitals: {error}", file=sys.stderr)
        return 2
    state_path = Path(args.state)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    opened = []
    try:
        for hospital in hospitals:
            state = SimState(state_path.with_name(f"{state_path.stem}-{hospital.id}.sqlite3"))
            opened.append((hospital, state))
            if state.is_empty() and args.seed == "demo":
                seed_demo(
                    state,
                    rng,
                    days=args.days,
                    hospital_id=hospital.id,
                    hospital_name=hospital.name,
                    prefix=hospital.prefix,
                )
        asyncio.run(_serve(args, opened, faults, rng))
    except OSError as error:
        print(
            f"inventory his-sim: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr
        )
        return 1
    finally:
        for _, state in opened:
            state.close()
    return 0


def _tls(args: argparse.Namespace) -> Any:
    """The server's SSL context, or None for plain HTTP."""
    if not args.tls_cert:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls_client_ca:
        context.load_verify_locations(args.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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

    from inventory.simulators.his.app import FHIR_BASE, create_multi_app, create_sim_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.access_log:
        logging.basicConfig(level=logging.INFO)
    several = isinstance(state, list)
    app = create_multi_app(state, faults, rng) if several else create_sim_app(state, faults, rng)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        shutdown_timeout=args.shutdown_timeout,
    )
    await runner.setup()
    try:
        tls = _tls(args)
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls)
        await site.start()
        origin = f"{'https' if tls else 'http'}://{args.host}:{args.port}"
        for hospital, one in state if several else [(None, state)]:
            summary = one.summary()
            base = hospital.base if hospital is not None else ""
            print(
                f"his-sim: FHIR R4 at {origin}{base}{FHIR_BASE} "
                f"(state {one.path}: {summary['schedules']} schedules, "
                f"{summary['appointments']} appointments)",
                flush=True,
            )
        await stop.wait()
    finally:
        await runner.cleanup()
