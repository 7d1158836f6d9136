"""`python -m bench`: the project's code measured against bare stand-ins in the same run.

    python -m bench reserve [--redis-url URL] [--seconds S] [--rounds N] [--concurrency C]
                            [--warmup S] [--aof off|everysec|always] [--loop uvloop|asyncio]
                            [--json]
    python -m bench http [--workers N] [--seconds S] [--rounds N] [--connections C] [--json]
                         (and more: see --help and bench/http/)
    python -m bench http --sweep [--plot PATH.png] [--fractions F,...] [--api-fractions F,...]
                         (throughput and latency against offered load: bench/http/sweep.py)
    python -m bench persister [--redis-url URL] [--postgres-url URL] [--rate R] [--json]
    python -m bench replot FIGURES.json [PLOT.png]
    python -m bench room [--patients N] [--units U] [--processes P] [--json]

Every argument parser of the benchmarks is here (the http benchmark's child processes'
too); the modules beside it measure and report. Without ``--redis-url`` (and ``--database-url`` or
``--postgres-url``) private servers are started in a temporary folder and stopped at the
end. Progress goes to stderr, the report to stdout (JSON with ``--json``); see
docs/benchmarks.md.

Exit status: 0 when every request did what it should; 1 when some did not (the report
says why), or a server could not be started or reached; 2 for command-line errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.http.config import GENERATORS, MODES
from inventory.cli.arguments import positive_float, positive_int

PROG = "python -m bench"


# -- argument types -------------------------------------------------------------------------


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number, 0 or above."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def fractions(text: str) -> tuple[float, ...]:
    """Comma-separated positive numbers ('' for none)."""
    return tuple(positive_float(part) for part in text.split(",") if part.strip())


def _default_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


# -- the parsers ----------------------------------------------------------------------------

AOF_CHOICES: tuple[str, ...] = ("off", "everysec", "always")


def build_parser() -> argparse.ArgumentParser:
    """``python -m bench`` with every benchmark as a subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmarks that report ratios taken inside each round, against bare "
        "stand-ins measured in the same run (docs/benchmarks.md).",
    )
    benches = parser.add_subparsers(dest="bench", metavar="<benchmark>", required=True)
    _add_reserve(benches)
    _add_http(benches)
    _add_persister(benches)
    _add_replot(benches)
    _add_room(benches)
    return parser


def _add_room(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "room",
        help="a release day through the waiting room, from several client processes",
        description=(
            "N patients join a queued release's waiting room before T0 and follow their "
            "tickets by Server-Sent Events; the admitted reserve with their tokens. Prints "
            "T0 to sold out, T0 to every patient's final answer, requests per patient "
            "after joining, 429/503 counts, oversold units, the status path's p50/p99 "
            "against a bare aiohttp handler, and the draw's fairness; then the same crowd "
            "on the previous design (no room, bench/crowd.py) side by side (bench/room.py)."
        ),
    )
    parser.add_argument("--patients", type=positive_int, default=2_000, help="(default 2000)")
    parser.add_argument("--units", type=positive_int, default=500, help="(default 500)")
    parser.add_argument(
        "--processes", type=positive_int, default=4, help="client processes (default 4)"
    )
    parser.add_argument(
        "--lead",
        type=positive_float,
        default=None,
        help="seconds from seeding to T0 (default 30 + 1 per 500 patients)",
    )
    parser.add_argument(
        "--deadline", type=positive_float, default=60.0, help="seconds after T0 (default 60)"
    )
    parser.add_argument(
        "--postgres-url", help="create (and drop) the run's database there (default: private)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for the run (INVENTORY_...); repeatable",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="do not run the same crowd on the previous design (no room) afterwards",
    )
    parser.add_argument(
        "--compare-deadline",
        type=positive_float,
        default=60.0,
        help="seconds after which the previous design's crowd gives up (default 60)",
    )
    parser.add_argument(
        "--results",
        metavar="FILE",
        help="write each patient's run there (JSON lines, instants as seconds after T0)",
    )
    parser.add_argument(
        "--keep-logs",
        metavar="DIR",
        help="copy the API's and the worker's logs into DIR when the run ends",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_room, _parser=parser)


def _room(args: argparse.Namespace) -> int:
    from bench.room import RoomConfig, format_text, ok, run_room

    settings = []
    for text in args.set:
        name, sep, value = text.partition("=")
        if not sep or not name.startswith("INVENTORY_"):
            args._parser.error(f"--set takes INVENTORY_NAME=VALUE, not {text!r}")
        settings.append((name, value))
    config = RoomConfig(
        patients=args.patients,
        units=args.units,
        processes=args.processes,
        lead_s=args.lead,
        deadline_s=args.deadline,
        postgres_url=args.postgres_url,
        settings=tuple(settings),
        compare=not args.no_compare,
        compare_deadline_s=args.compare_deadline,
        results_path=args.results,
        keep_logs=args.keep_logs,
    )
    try:
        report = run_room(config, say=_say("room"))
    except RuntimeError as error:
        print(f"{PROG} room: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_text(report))
    return 0 if ok(report) else 1


def _add_reserve(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reserve = benches.add_parser(
        "reserve",
        help="reserve steps/s through SlotStore vs bare EVALSHA of the same script",
        description=(
            "Reserve steps per second through the Python store (SlotStore.reserve) against "
            "EVALSHA of the same reserve script from a bare redis-py client, same arguments "
            "and concurrency, interleaved in rounds. Prints both throughputs, p50/p99 "
            "latencies and the ratio store/bare (median [min-max] over rounds)."
        ),
    )
    reserve.add_argument(
        "--redis-url",
        help="use this Redis (only the benchmark's own keys are touched, then deleted); "
        "default: start a private redis-server in a temporary folder",
    )
    reserve.add_argument(
        "--seconds", type=positive_float, default=5.0, help="per side per round (default 5)"
    )
    reserve.add_argument("--rounds", type=positive_int, default=3, help="(default 3)")
    reserve.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        help="concurrent workers per side, each with its own connection (default 64)",
    )
    reserve.add_argument(
        "--warmup",
        type=non_negative_float,
        default=1.0,
        help="untimed seconds per side before round 1 (default 1; 0 = none)",
    )
    reserve.add_argument(
        "--aof",
        choices=AOF_CHOICES,
        default=None,
        help="append-only file of the private server (default off; not with --redis-url)",
    )
    reserve.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=_default_loop(),
        help="event loop of the client (default uvloop when installed, as the service uses)",
    )
    reserve.add_argument("--json", action="store_true", help="print the report as JSON")
    reserve.set_defaults(handler=_reserve, _parser=reserve)


def _add_http(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "http",
        help="POST /v1/holds through the API vs a bare aiohttp JSON POST handler",
        description=(
            "Reserve throughput and latency of the real API (POST /v1/holds) against a bare "
            "aiohttp JSON POST handler: same process count, uvloop, orjson, request size, "
            "machine and run, interleaved rounds. Prints both throughputs and their ratio, "
            "and p50/p99 of both at the same paced rate (a fraction of the bare maximum)."
        ),
    )
    parser.add_argument(
        "--workers", type=positive_int, default=1, help="server processes per side (default 1)"
    )
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        help="per phase (default 10; with --sweep 4, per point and side)",
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="(default 3)")
    parser.add_argument(
        "--connections", type=positive_int, default=64, help="keep-alive connections (default 64)"
    )
    parser.add_argument(
        "--warmup", type=non_negative_float, default=3.0, help="untimed seconds per side"
    )
    parser.add_argument(
        "--paced-fraction",
        type=positive_float,
        default=0.5,
        help="paced rate as a fraction of the bare maximum of the round (default 0.5)",
    )
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="auto",
        help="closed-loop generator: wrk when installed (auto), or the Python one",
    )
    parser.add_argument(
        "--pin",
        choices=("auto", "on", "off"),
        default="auto",
        help="servers on the last CPU, the rest elsewhere (auto: with 1 worker, >= 2 CPUs)",
    )
    parser.add_argument("--patients", type=positive_int, default=10_000)
    parser.add_argument("--departments", type=positive_int, default=20)
    parser.add_argument("--days", type=positive_int, default=7)
    parser.add_argument(
        "--aof",
        choices=AOF_CHOICES,
        default="off",
        help="append-only file of the private Redis (default off)",
    )
    parser.add_argument("--redis-url", help="use this Redis (only the run's own tags touched)")
    parser.add_argument(
        "--database-url",
        help="create (and drop) a fresh database on this Postgres server; default: private",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor each round: the bare handler plus the API's reserve "
        "call and nothing else (bench/http/floor.py), closed loop",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    sweep = parser.add_argument_group(
        "offered-load sweep",
        "instead of rounds: both maxima, then both sides open loop at a series of offered "
        "rates (see bench/http/sweep.py); --rounds and --paced-fraction do not apply",
    )
    sweep.add_argument("--sweep", action="store_true", help="run the sweep")
    sweep.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="write the sweep's plot (PNG) to PATH and its figures beside it (.json; implies "
        "--sweep; needs matplotlib: the bench extra)",
    )
    sweep.add_argument(
        "--fractions",
        type=fractions,
        default=None,
        metavar="F,F,...",
        help="offered rates as fractions of the bare max (default "
        "0.1,0.25,0.5,0.75,1,1.2; '' for none)",
    )
    sweep.add_argument(
        "--api-fractions",
        type=fractions,
        default=None,
        metavar="F,F,...",
        help="... and of the api max (default 0.5,0.8,1,1.25; '' for none)",
    )
    parser.set_defaults(handler=_http, _parser=parser)


def _add_persister(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "persister",
        help="persister events/s vs the offered rate, and drain time after an outage",
        description=(
            "Offers store steps at a steady rate while `inventory persist` runs as its own "
            "process; prints events offered and persisted per second, then freezes the "
            "persister for --outage seconds under the same load and prints how long the "
            "backlog takes to drain (and drain/outage). See docs/benchmarks.md."
        ),
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis (only the run's own keys, deleted at the end); default: a "
        "private redis-server in a temporary folder",
    )
    parser.add_argument(
        "--postgres-url",
        help="a Postgres server on which the run may create (and then drop) a scratch "
        "database; default: a private Postgres in a temporary folder",
    )
    parser.add_argument("--rate", type=positive_float, default=1500.0, help="steps/s (1500)")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="steady phase (10)")
    parser.add_argument("--outage", type=positive_float, default=10.0, help="seconds stopped (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds (2)")
    parser.add_argument("--batch-size", type=positive_int, default=500, help="(default 500)")
    parser.add_argument("--tags", type=positive_int, default=4, help="outbox streams (default 4)")
    parser.add_argument("--concurrency", type=positive_int, default=16, help="callers (16)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_persister, _parser=parser)


def _add_replot(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = benches.add_parser(
        "replot",
        help="draw an offered-load sweep's PNG again from its figures (.json)",
        description="Draw the plot of `http --plot` again from the JSON written beside it.",
    )
    parser.add_argument("figures", type=Path)
    parser.add_argument("png", type=Path, nargs="?", help="default: FIGURES with .png")
    parser.set_defaults(handler=_replot, _parser=parser)


def build_child_parser() -> argparse.ArgumentParser:
    """The http benchmark's child processes (``python -m bench.http.child``): ``bare`` (the
    bare server), ``floor`` (the floor server) and ``load`` (the Python generator)."""
    parser = argparse.ArgumentParser(prog="python -m bench.http.child")
    roles = parser.add_subparsers(dest="role", required=True)
    for role in ("bare", "floor"):
        server = roles.add_parser(role)
        server.add_argument("--host", default="127.0.0.1")
        server.add_argument("--port", type=int, required=True)
        server.add_argument("--reuse-port", action="store_true")
    load = roles.add_parser("load")
    load.add_argument("--plan", required=True)
    load.add_argument("--host", default="127.0.0.1")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--mode", choices=MODES, required=True)
    load.add_argument("--connections", type=int, required=True)
    load.add_argument("--seconds", type=float, required=True)
    load.add_argument("--rate", type=float, default=0.0)
    load.add_argument("--start", type=int, default=0)
    return parser


# -- running them ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen benchmark; return its exit status."""
    from inventory.store.connection import UnsupportedRedisError

    args = build_parser().parse_args(argv)
    _stop_on_sigterm()
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the servers and child processes were stopped on the way out.
        print(f"{PROG} {args.bench}: interrupted", file=sys.stderr)
        return 130
    except UnsupportedRedisError as error:
        # Refused at start-up, as every `inventory` command refuses an old server.
        print(f"{PROG} {args.bench}: {error}", file=sys.stderr)
        return 2
    except _outage_errors() as error:
        # A server out of reach: one line and a non-zero exit, not a traceback.
        print(f"{PROG} {args.bench}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return status


def _stop_on_sigterm() -> None:
    """SIGTERM stops a benchmark the way Ctrl-C does. Python's default for SIGTERM ends
    the process at once, skipping every ``finally``: the private Redis and Postgres, the
    servers under test and the load generators it started would be left running.

    It is passed on as SIGINT rather than raised as KeyboardInterrupt here: inside an
    event loop asyncio's own SIGINT handler cancels the main task at its next await, so
    every coroutine unwinds through its ``finally``. A KeyboardInterrupt raised at
    whatever line the loop was running could land inside a Redis client's bookkeeping,
    after which the load workers kept running to their deadline (minutes) instead of
    stopping. Outside a loop SIGINT's default handler raises KeyboardInterrupt, as
    before."""

    def interrupt(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, interrupt)


def _outage_errors() -> tuple[type[BaseException], ...]:
    """A server out of reach (what `inventory`'s commands report in one line too)."""
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
    import redis.exceptions

    return (
        OSError,
        TimeoutError,
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
    )


def _say(bench: str) -> Any:
    def progress(line: str) -> None:
        print(f"{PROG} {bench}: {line}", file=sys.stderr, flush=True)

    return progress


class _Report(Protocol):
    def as_dict(self) -> dict[str, Any]: ...

    def format_text(self) -> str: ...


def _print(report: _Report, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text())


def _reserve(args: argparse.Namespace) -> int:
    import redis.exceptions

    from bench.reserve import BenchConfig, run_reserve
    from inventory.devtools.servers import ServerError
    from inventory.errors import InventoryError

    if args.redis_url and args.aof is not None:
        args._parser.error("--aof applies to the private server only, not with --redis-url")
    config = BenchConfig(
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        warmup_seconds=args.warmup,
    )
    try:
        report = run_reserve(
            config,
            redis_url=args.redis_url,
            aof=args.aof or "off",
            loop=args.loop,
            progress=_say("reserve"),
        )
    except ServerError as error:
        print(f"{PROG} reserve: cannot start a private Redis: {error}", file=sys.stderr)
        return 1
    except (redis.exceptions.RedisError, InventoryError, OSError) as error:
        print(f"{PROG} reserve: Redis failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    _print(report, as_json=args.json)
    return 1 if report.failures else 0


def _http_errors() -> tuple[type[BaseException], ...]:
    """What an http run can fail with that is the environment's fault, not a bug."""
    import subprocess

    import redis.exceptions

    from inventory.errors import InventoryError

    return (
        RuntimeError,
        OSError,
        subprocess.SubprocessError,
        redis.exceptions.RedisError,
        InventoryError,
    )


def _http(args: argparse.Namespace) -> int:
    from bench.http.config import HttpBenchConfig
    from bench.http.run import run_http_bench
    from bench.http.sweep import SWEEP_SECONDS

    if args.redis_url and args.aof != "off":
        args._parser.error("--aof applies to the private Redis only, not with --redis-url")
    sweeping = args.sweep or args.plot is not None
    if not sweeping and (args.fractions is not None or args.api_fractions is not None):
        args._parser.error("--fractions and --api-fractions apply to --sweep only")
    if sweeping and args.floor:
        args._parser.error("--floor applies to the rounds only, not to --sweep")
    if args.seconds is None:
        args.seconds = SWEEP_SECONDS if sweeping else 10.0
    try:
        config = HttpBenchConfig(
            workers=args.workers,
            seconds=args.seconds,
            rounds=args.rounds,
            connections=args.connections,
            warmup_seconds=args.warmup,
            paced_fraction=args.paced_fraction,
            generator=args.generator,
            pin={"auto": None, "on": True, "off": False}[args.pin],
            patients=args.patients,
            departments=args.departments,
            days=args.days,
            aof=args.aof,
            floor=args.floor,
        )
    except ValueError as error:
        args._parser.error(str(error))
    if sweeping:
        return _sweep(args, config)
    try:
        report = run_http_bench(
            config,
            redis_url=args.redis_url,
            database_url=args.database_url,
            progress=_say("http"),
        )
    except _http_errors() as error:
        print(f"{PROG} http: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    _print(report, as_json=args.json)
    return 1 if report.errors else 0


def _sweep(args: argparse.Namespace, config: Any) -> int:
    from bench.http import sweep

    try:
        sweep_config = sweep.SweepConfig(
            config,
            bare_fractions=sweep.BARE_FRACTIONS if args.fractions is None else args.fractions,
            api_fractions=sweep.API_FRACTIONS if args.api_fractions is None else args.api_fractions,
        )
    except ValueError as error:
        args._parser.error(str(error))
    if args.plot is not None:
        # Fail before minutes of measuring, not after.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                f"{PROG} http: --plot needs matplotlib: pip install 'slot-inventory[bench]'",
                file=sys.stderr,
            )
            return 1
    progress = _say("http")
    try:
        report = sweep.run_sweep(
            sweep_config,
            redis_url=args.redis_url,
            database_url=args.database_url,
            progress=progress,
        )
        if args.plot is not None:
            figures = sweep.write_sweep(report, args.plot)
            progress(f"wrote {args.plot} and {figures}")
    except _http_errors() as error:
        print(f"{PROG} http: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    _print(report, as_json=args.json)
    return 1 if report.errors else 0


def _persister(args: argparse.Namespace) -> int:
    import asyncio
    import tempfile

    from bench.persister import PersisterBenchConfig, offered_default_note, run_with_servers
    from inventory.devtools.servers import ServerError
    from inventory.errors import InventoryError

    try:
        config = PersisterBenchConfig(
            rate=args.rate,
            seconds=args.seconds,
            outage_s=args.outage,
            warmup_s=max(0.0, args.warmup),
            batch_size=args.batch_size,
            tags=args.tags,
            concurrency=args.concurrency,
        )
    except ValueError as error:
        print(f"{PROG} persister: {error}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="inventory-bench-persister-") as tmp:
            report = asyncio.run(
                run_with_servers(
                    config,
                    redis_url=args.redis_url,
                    postgres_url=args.postgres_url,
                    work_dir=Path(tmp),
                    progress=_say("persister"),
                )
            )
    except ServerError as error:
        print(f"{PROG} persister: cannot start a private server: {error}", file=sys.stderr)
        return 1
    except (OSError, InventoryError, RuntimeError) as error:
        print(f"{PROG} persister: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    offered_default_note(report, config.rate)
    _print(report, as_json=args.json)
    return 1 if report.lost or report.steps_failed else 0


def _replot(args: argparse.Namespace) -> int:
    from bench.http.sweep import write_plot

    data = json.loads(args.figures.read_text(encoding="utf-8"))
    write_plot(data, args.png or args.figures.with_suffix(".png"))
    return 0
