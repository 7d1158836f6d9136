"""`inventory bench`: the project's code measured against bare stand-ins in the same run.

    inventory bench reserve [--redis-url URL] [--seconds S] [--rounds N] [--concurrency C]
                            [--warmup S] [--aof off|everysec|always] [--loop uvloop|asyncio]
                            [--json]
    inventory bench http [--workers N] [--seconds S] [--rounds N] [--connections C] [--json]
                         (and more: see --help and inventory/bench/http.py)
    inventory bench http --sweep [--plot PATH.png] [--fractions F,...] [--api-fractions F,...]
                         (throughput and latency against offered load: inventory/bench/sweep.py)

Without ``--redis-url`` a private redis-server is started in a temporary folder and stopped
at the end. With it, only the benchmark's own keys are written, and deleted at the end.
Progress goes to stderr, the report to stdout (JSON with ``--json``); see
docs/benchmarks.md.

Exit status: 0 when every call created a hold; 1 when some did not (the report says why),
or Redis could not be started or reached; 2 for command-line errors.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import redis.exceptions

from inventory.bench import http as http_bench
from inventory.bench import persister as persister_bench
from inventory.bench.reserve import BenchConfig, ReserveBenchReport, run_reserve_bench
from inventory.devtools.servers import ServerError, start_redis
from inventory.errors import InventoryError

_PROG = "inventory bench reserve"
_T = TypeVar("_T")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _default_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `inventory bench` and its benchmarks to the top-level command line."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks: the project's code against bare stand-ins, in the same run",
        description="Benchmarks that report ratios taken inside each round.",
    )
    benches = parser.add_subparsers(dest="bench", metavar="<benchmark>", required=True)
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
        "--seconds", type=_positive_float, default=5.0, help="per side per round (default 5)"
    )
    reserve.add_argument("--rounds", type=_positive_int, default=3, help="(default 3)")
    reserve.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="concurrent workers per side, each with its own connection (default 64)",
    )
    reserve.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=1.0,
        help="untimed seconds per side before round 1 (default 1; 0 = none)",
    )
    reserve.add_argument(
        "--aof",
        choices=("off", "everysec", "always"),
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
    http_bench.register(benches)
    persister_bench.register(benches)


def _run(coroutine: Coroutine[Any, Any, _T], loop: str) -> _T:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


def _progress(line: str) -> None:
    print(f"{_PROG}: {line}", file=sys.stderr, flush=True)


def _reserve(args: argparse.Namespace) -> int:
    if args.redis_url and args.aof is not None:
        args._parser.error("--aof applies to the private server only, not with --redis-url")
    config = BenchConfig(
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        warmup_seconds=args.warmup,
    )
    try:
        if args.redis_url:
            report = _run(
                run_reserve_bench(args.redis_url, config, loop_name=args.loop, progress=_progress),
                args.loop,
            )
        else:
            report = _with_private_redis(config, args.aof or "off", args.loop)
    except ServerError as error:
        print(f"{_PROG}: cannot start a private Redis: {error}", file=sys.stderr)
        return 1
    except (redis.exceptions.RedisError, InventoryError, OSError) as error:
        print(f"{_PROG}: Redis failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format_text())
    return 1 if report.failures else 0


def _with_private_redis(config: BenchConfig, aof: str, loop: str) -> ReserveBenchReport:
    with tempfile.TemporaryDirectory(prefix="inventory-bench-") as tmp:
        _progress("starting a private redis-server")
        with start_redis(
            Path(tmp),
            appendonly=aof != "off",
            appendfsync=aof if aof != "off" else "everysec",
        ) as server:
            where = f"private redis-server on {server.host}:{server.port}, AOF {aof}"
            return _run(
                run_reserve_bench(
                    server.url,
                    config,
                    redis_where=where,
                    loop_name=loop,
                    progress=_progress,
                ),
                loop,
            )
