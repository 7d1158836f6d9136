"""Reserves through the real HTTP API against a bare aiohttp JSON POST handler, same run.

``python -m bench http`` answers: what fraction of a bare aiohttp handler's throughput
does ``POST /v1/holds`` keep, and how much worse is its p99 at the same offered rate?

Both servers run side by side for the whole run, as the same number of processes, on
uvloop with orjson, and get byte-for-byte the same kind of request (bearer token,
Idempotency-Key, an ~80-byte JSON body) from the same generator:

- **api**: ``inventory serve --workers N`` on a freshly migrated database: JWT check,
  Idempotency-Key, body validation, the slot's location and the patient's ownership
  (both cached after first use), ``SlotStore.reserve`` with the rate-limit buckets in
  the same script call;
- **bare**: N aiohttp processes whose ``POST /v1/holds`` parses the JSON body with
  orjson and answers 201 with a JSON object of about the API's size; nothing else;
- **floor** (with ``--floor``): the bare handler plus the API's own ``SlotStore.reserve``
  and nothing else (:mod:`bench.floor`): what any handler reserving through
  this store can reach here; measured closed loop only, right after the two maxima.

The load is realistic rather than a single hot key: a hospital with ``departments`` x
``days`` department-days of released schedules (slots of capacity 10**9: nothing sells
out), ``patients`` accounts with one real-name patient each (registered through
:class:`~inventory.record.patients.PatientRegistry`), pre-minted tokens, rate limits set far
above the load (but still checked). Request ``i`` books patient ``i mod P`` on
department-day ``(i div P) mod D``: every patient appears once per P requests (so the
warm-up fills the API's caches) and no patient asks twice for the same department-day
(the one-open-hold-per-day rule) until ``P x D`` requests, which the run stays under.

Each round runs, sides interleaved (api first in odd rounds, bare first in even ones):

1. **max**: closed loop, ``connections`` keep-alive connections, each sending its next
   request as soon as the answer arrives (wrk when installed, else the Python generator);
2. **paced**: open loop at ``paced_fraction`` of the bare side's max of *this* round, for
   both sides (the Python generator: each connection sends at exponential intervals and
   catches up at once when an answer came late; latency is measured from the write);
   this p99 ratio is the one the target is stated in;
3. **paced_api**: the same at ``paced_fraction`` of the *api's* max of this round, a rate
   both sides sustain: the latency the API adds when it is not queueing (informational,
   since the api cannot keep up with phase 2 while its throughput ratio is below 0.5).

Ratios (api/bare) are taken inside each round and reported as median [min-max]. A
non-2xx answer or socket error counts as an error, not as throughput.

``--sweep`` (or ``--plot PATH``) runs, on the same servers, data and generator, both sides
at a series of offered rates instead of rounds, and draws throughput and latency against
offered load (:mod:`bench.sweep`).

The generator is a separate process; it must never be the bottleneck: its CPU per
request is reported, and a generator above 90 % of a core is flagged. With one server
process on a machine of at least two CPUs, the servers are pinned to the last CPU and
the generator, Redis, Postgres and this process to the others (``--pin``).

Nothing outside the run is touched: Redis and Postgres are private (temporary folders)
unless URLs are given; with URLs, a fresh database is created on that Postgres server
and dropped at the end, the benchmark's Redis keys (its own department-day tags) are
deleted, and the API runs with the verified-store gate off instead of marking a server
verified that only the benchmark compared.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from bench.reserve import Spread

SIDES: tuple[str, str] = ("api", "bare")
#: Sides whose requests make holds, so each of their phases takes fresh request indices
#: (the floor, with ``--floor``, is the third side: measured closed loop only).
BOOKING_SIDES: frozenset[str] = frozenset({"api", "floor"})
#: Phases of a round: closed loop; paced at a fraction of the bare max; paced at the same
#: fraction of the api max (a rate both sides sustain, for the latency overhead alone).
PHASES: tuple[str, str, str] = ("max", "paced", "paced_api")
#: How the generator drives a phase.
MODES: tuple[str, str] = ("max", "paced")
GENERATORS: tuple[str, ...] = ("auto", "wrk", "python")

#: Slot capacity: no request is ever refused for lack of units.
BENCH_CAPACITY = 10**9
#: The targets this benchmark was written for (see docs/benchmarks.md).
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_P99_RATIO = 3.0
#: A generator using more of a core than this may have limited the server.
GENERATOR_BUSY_PCT = 90.0
#: Other processes using more than this (% of one core) during a phase: disturbed.
DISTURBED_PCT = 5.0
#: A paced phase that reached less than this fraction of its target rate was overloaded.
PACED_SHORTFALL = 0.95
#: The longest the api's warm-up goes on (after the timed one) to fill its caches.
WARMUP_EXTRA_S = 60.0

_CHINA = ZoneInfo("Asia/Shanghai")
_PATH = "/v1/holds"
_CHANNEL = "wechat"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ----------------------------------------------------------------------------------------
# Configuration and report
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpBenchConfig:
    """How long, how hard, and on what data to run."""

    workers: int = 1
    seconds: float = 10.0
    rounds: int = 3
    connections: int = 64
    #: Untimed closed-loop run of each side before round 1 (connections, caches).
    warmup_seconds: float = 3.0
    #: The paced phase offers this fraction of the bare side's max of the same round.
    paced_fraction: float = 0.5
    #: "auto" (wrk when installed), "wrk" or "python"; paced phases always use Python.
    generator: str = "auto"
    #: None: pin when there is one server process and at least two CPUs.
    pin: bool | None = None
    patients: int = 10_000
    departments: int = 20
    days: int = 7
    slots_per_schedule: int = 8
    #: Append-only file of the private Redis: off, everysec or always.
    aof: str = "off"
    #: Also measure the floor (bench/floor.py: the bare handler plus the API's
    #: reserve call and nothing else) in a closed-loop phase of each round.
    floor: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError("seconds must be a positive number")
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if not (self.warmup_seconds >= 0 and math.isfinite(self.warmup_seconds)):
            raise ValueError("warmup_seconds must not be negative")
        if not 0 < self.paced_fraction <= 1:
            raise ValueError("paced_fraction must be in (0, 1]")
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}")
        if min(self.patients, self.departments, self.days, self.slots_per_schedule) < 1:
            raise ValueError("patients, departments, days and slots must be at least 1")
        if self.aof not in ("off", "everysec", "always"):
            raise ValueError("aof must be off, everysec or always")

    @property
    def department_days(self) -> int:
        """Distinct department-days (tags) of the catalogue."""
        return self.departments * self.days

    @property
    def request_budget(self) -> int:
        """Reserves before some patient asks twice for the same department-day."""
        return self.patients * self.department_days


@dataclass(frozen=True, slots=True)
class Phase:
    """One side's figures in one phase of one round."""

    side: str
    mode: str
    generator: str
    #: Answers received within the timed window.
    requests: int
    #: Of those, 2xx answers.
    ok: int
    #: Non-2xx answers, socket errors and timeouts.
    errors: int
    first_error: str | None
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    #: The paced phase's offered rate (None for max phases).
    target_rps: float | None
    #: Paced phases: writes that left more than 1 ms after they were due.
    late: int
    server_cpu_us: float
    generator_cpu_us: float
    redis_cpu_us: float
    #: The generator's CPU in % of one core; above 90 % it may have been the limit.
    generator_busy_pct: float
    #: CPU of processes outside the benchmark, in % of one core (None: not measurable).
    other_cpu_pct: float | None

    @property
    def rps(self) -> float:
        """Successful answers per second."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Machine-readable figures."""
        return {
            "generator": self.generator,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.rps, 1),
            "target_rps": None if self.target_rps is None else round(self.target_rps, 1),
            "late": self.late,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "server_cpu_us_per_req": round(self.server_cpu_us, 1),
            "generator_cpu_us_per_req": round(self.generator_cpu_us, 1),
            "redis_cpu_us_per_req": round(self.redis_cpu_us, 1),
            "generator_busy_pct": round(self.generator_busy_pct, 1),
            "other_cpu_pct": None if self.other_cpu_pct is None else round(self.other_cpu_pct, 1),
        }


@dataclass(frozen=True, slots=True)
class HttpRound:
    """Both sides, both phases, in one round."""

    index: int
    order: tuple[str, str]
    max: dict[str, Phase]
    paced: dict[str, Phase]
    paced_api: dict[str, Phase]
    #: The floor's closed-loop phase (with ``--floor``), run right after the two maxima.
    floor_max: Phase | None = None

    @property
    def throughput_ratio(self) -> float:
        """api/bare successful answers per second, closed loop."""
        bare = self.max["bare"].rps
        return self.max["api"].rps / bare if bare else 0.0

    @property
    def paced_p99_ratio(self) -> float:
        """api/bare p99 at the same offered rate."""
        bare = self.paced["bare"].p99_ms
        return self.paced["api"].p99_ms / bare if bare else math.inf

    @property
    def paced_p50_ratio(self) -> float:
        """api/bare p50 at the same offered rate."""
        bare = self.paced["bare"].p50_ms
        return self.paced["api"].p50_ms / bare if bare else math.inf

    @property
    def paced_api_p99_ratio(self) -> float:
        """api/bare p99 at a fraction of the api's own max (informational)."""
        bare = self.paced_api["bare"].p99_ms
        return self.paced_api["api"].p99_ms / bare if bare else math.inf

    @property
    def cpu_ratio(self) -> float:
        """api/bare server CPU per request, closed loop."""
        bare = self.max["bare"].server_cpu_us
        return self.max["api"].server_cpu_us / bare if bare else math.inf

    @property
    def floor_ratio(self) -> float | None:
        """floor/bare successful answers per second, closed loop (None without a floor)."""
        bare = self.max["bare"].rps
        if self.floor_max is None:
            return None
        return self.floor_max.rps / bare if bare else 0.0

    @property
    def api_to_floor_ratio(self) -> float | None:
        """api/floor successful answers per second, closed loop (None without a floor)."""
        if self.floor_max is None:
            return None
        floor = self.floor_max.rps
        return self.max["api"].rps / floor if floor else 0.0

    def phases(self) -> Iterator[Phase]:
        """Every phase (the floor's last: it ran right after the maxima)."""
        for phase in PHASES:
            for side in self.order:
                yield getattr(self, phase)[side]
        if self.floor_max is not None:
            yield self.floor_max


@dataclass(frozen=True, slots=True)
class Setting:
    """Where and how the run happened (for the report's header)."""

    generator: str
    paced_generator: str
    processes: dict[str, int]
    pinned: str | None
    redis: str
    postgres: str
    api_settings: dict[str, Any]
    request_budget: int
    requests_used: int


@dataclass(frozen=True, slots=True)
class HttpBenchReport:
    """Everything one run measured."""

    config: HttpBenchConfig
    setting: Setting
    rounds: tuple[HttpRound, ...]

    @property
    def throughput_ratio(self) -> Spread:
        """api/bare max throughput over the rounds."""
        return Spread.of([r.throughput_ratio for r in self.rounds])

    @property
    def paced_p99_ratio(self) -> Spread:
        """api/bare paced p99 over the rounds."""
        return Spread.of([r.paced_p99_ratio for r in self.rounds])

    @property
    def paced_p50_ratio(self) -> Spread:
        """api/bare paced p50 over the rounds."""
        return Spread.of([r.paced_p50_ratio for r in self.rounds])

    @property
    def paced_api_p99_ratio(self) -> Spread:
        """api/bare p99 at a fraction of the api max, over the rounds."""
        return Spread.of([r.paced_api_p99_ratio for r in self.rounds])

    @property
    def cpu_ratio(self) -> Spread:
        """api/bare server CPU per request over the rounds."""
        return Spread.of([r.cpu_ratio for r in self.rounds])

    @property
    def floor_ratio(self) -> Spread | None:
        """floor/bare max throughput over the rounds (None without a floor)."""
        ratios = [r.floor_ratio for r in self.rounds]
        return Spread.of([x for x in ratios if x is not None]) if self.config.floor else None

    @property
    def api_to_floor_ratio(self) -> Spread | None:
        """api/floor max throughput over the rounds (None without a floor)."""
        ratios = [r.api_to_floor_ratio for r in self.rounds]
        return Spread.of([x for x in ratios if x is not None]) if self.config.floor else None

    def floor_spreads(self) -> dict[str, Spread] | None:
        """The floor's closed-loop figures over the rounds (None without a floor)."""
        phases = [r.floor_max for r in self.rounds if r.floor_max is not None]
        if not phases:
            return None
        return _spreads(phases)

    @property
    def errors(self) -> int:
        """Errors of every phase."""
        return sum(p.errors for r in self.rounds for p in r.phases())

    @property
    def flags(self) -> list[str]:
        """What makes the figures less trustworthy."""
        return phase_flags([p for r in self.rounds for p in r.phases()], self.setting)

    def side_spreads(self, mode: str, side: str) -> dict[str, Spread]:
        """One side's figures in one mode over the rounds."""
        return _spreads([getattr(r, mode)[side] for r in self.rounds])

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (what ``--json`` prints)."""
        c, s = self.config, self.setting
        floor, api_to_floor, floor_max = (
            self.floor_ratio,
            self.api_to_floor_ratio,
            self.floor_spreads(),
        )
        return {
            "benchmark": "http",
            "throughput_ratio": _spread_dict(self.throughput_ratio, 4),
            "paced_p99_ratio": _spread_dict(self.paced_p99_ratio, 3),
            "paced_p50_ratio": _spread_dict(self.paced_p50_ratio, 3),
            "paced_api_p99_ratio": _spread_dict(self.paced_api_p99_ratio, 3),
            "server_cpu_ratio": _spread_dict(self.cpu_ratio, 3),
            "targets": {
                "throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
                "paced_p99_ratio_max": TARGET_P99_RATIO,
                "throughput_met": self.throughput_ratio.median >= TARGET_THROUGHPUT_RATIO,
                "p99_met": self.paced_p99_ratio.median <= TARGET_P99_RATIO,
            },
            "floor": (
                None
                if floor is None or api_to_floor is None or floor_max is None
                else {
                    "throughput_ratio": _spread_dict(floor, 4),
                    "api_to_floor_ratio": _spread_dict(api_to_floor, 4),
                    "max": {k: v.as_dict() for k, v in floor_max.items()},
                }
            ),
            "errors": self.errors,
            "flags": self.flags,
            "config": {
                "workers": c.workers,
                "seconds": c.seconds,
                "rounds": c.rounds,
                "connections": c.connections,
                "warmup_seconds": c.warmup_seconds,
                "paced_fraction": c.paced_fraction,
                "patients": c.patients,
                "departments": c.departments,
                "days": c.days,
                "slots_per_schedule": c.slots_per_schedule,
                "aof": c.aof,
                "floor": c.floor,
            },
            "setting": {
                "generator": s.generator,
                "paced_generator": s.paced_generator,
                "processes": s.processes,
                "pinned": s.pinned,
                "redis": s.redis,
                "postgres": s.postgres,
                "api_settings": s.api_settings,
                "request_budget": s.request_budget,
                "requests_used": s.requests_used,
            },
            "summary": {
                mode: {
                    side: {k: v.as_dict() for k, v in self.side_spreads(mode, side).items()}
                    for side in SIDES
                }
                for mode in PHASES
            },
            "rounds": [
                {
                    "round": r.index,
                    "order": list(r.order),
                    "throughput_ratio": round(r.throughput_ratio, 4),
                    "paced_p99_ratio": round(r.paced_p99_ratio, 3),
                    "paced_p50_ratio": round(r.paced_p50_ratio, 3),
                    "paced_api_p99_ratio": round(r.paced_api_p99_ratio, 3),
                    "max": {side: r.max[side].as_dict() for side in SIDES},
                    "paced": {side: r.paced[side].as_dict() for side in SIDES},
                    "paced_api": {side: r.paced_api[side].as_dict() for side in SIDES},
                    "floor_max": None if r.floor_max is None else r.floor_max.as_dict(),
                }
                for r in self.rounds
            ],
        }

    def format_text(self) -> str:
        """The human-readable report."""
        c, s = self.config, self.setting
        procs = ", ".join(f"{name} {count}" for name, count in s.processes.items())
        api = ", ".join(f"{k}={v}" for k, v in s.api_settings.items())
        lines = [
            f"POST {_PATH} through the API vs a bare aiohttp JSON POST handler: "
            f"{c.rounds} round(s) x {c.seconds:g} s per phase, {c.connections} connections",
            f"processes: {procs}; "
            + (f"pinned: {s.pinned}" if s.pinned else "not pinned")
            + f"; generator: {s.generator} (max), {s.paced_generator} (paced)",
            f"Redis: {s.redis}; Postgres: {s.postgres}",
            f"API: {api}",
            f"data: {c.patients:,} patients, {c.department_days} department-days x "
            f"{2 * c.slots_per_schedule} slots; reserves used {s.requests_used:,} of "
            f"{s.request_budget:,}",
            "",
            f"{'round':>5}  {'phase':<9}  {'side':<5}  {'offered/s':>9}  {'ok/s':>8}  "
            f"{'errors':>6}  {'p50 ms':>7}  {'p99 ms':>7}  {'server µs/req':>13}  "
            f"{'Redis µs/req':>12}  {'gen µs/req':>10}  {'gen %':>5}  {'other %':>7}",
        ]
        for r in self.rounds:
            for p in r.phases():
                offered = f"{p.target_rps:,.0f}" if p.target_rps else "-"
                lines.append(
                    f"{r.index:>5}  {p.mode:<9}  {p.side:<5}  {offered:>9}  {p.rps:>8,.0f}  "
                    f"{p.errors:>6}  {p.p50_ms:>7.2f}  {p.p99_ms:>7.2f}  "
                    f"{p.server_cpu_us:>13.1f}  {p.redis_cpu_us:>12.1f}  "
                    f"{p.generator_cpu_us:>10.1f}  {p.generator_busy_pct:>5.0f}  "
                    f"{_pct(p.other_cpu_pct):>7}"
                )
        lines += ["", "median [min-max] over rounds:"]
        lines.append(f"{'':<26}{'bare':>26}  {'api':>26}  {'api/bare':>22}")
        rows: list[tuple[str, str, str, str, Spread | None]] = [
            ("max req/s", "max", "rps", "{:,.0f}", self.throughput_ratio),
            ("max p50 ms", "max", "p50_ms", "{:.2f}", None),
            ("max p99 ms", "max", "p99_ms", "{:.2f}", None),
            ("max server CPU µs/req", "max", "server_cpu_us_per_req", "{:.1f}", self.cpu_ratio),
            ("paced req/s", "paced", "rps", "{:,.0f}", None),
            ("paced p50 ms", "paced", "p50_ms", "{:.2f}", self.paced_p50_ratio),
            ("paced p99 ms", "paced", "p99_ms", "{:.2f}", self.paced_p99_ratio),
            ("paced_api req/s", "paced_api", "rps", "{:,.0f}", None),
            ("paced_api p50 ms", "paced_api", "p50_ms", "{:.2f}", None),
            ("paced_api p99 ms", "paced_api", "p99_ms", "{:.2f}", self.paced_api_p99_ratio),
        ]
        for label, mode, key, pattern, ratio in rows:
            bare = self.side_spreads(mode, "bare")[key]
            api_ = self.side_spreads(mode, "api")[key]
            lines.append(
                f"{label:<26}{_fmt(bare, pattern):>26}  {_fmt(api_, pattern):>26}  "
                + (f"{_fmt(ratio, '{:.3f}'):>22}" if ratio is not None else f"{'':>22}")
            )
        floor, api_to_floor, floor_max = (
            self.floor_ratio,
            self.api_to_floor_ratio,
            self.floor_spreads(),
        )
        if floor is not None and api_to_floor is not None and floor_max is not None:
            lines += [
                "",
                "floor (the bare handler plus the API's reserve call, nothing else), max:",
                f"  req/s {_fmt(floor_max['rps'], '{:,.0f}')}, server CPU µs/req "
                f"{_fmt(floor_max['server_cpu_us_per_req'], '{:.1f}')}, Redis CPU µs/req "
                f"{_fmt(floor_max['redis_cpu_us_per_req'], '{:.1f}')}",
                f"  floor/bare {_fmt(floor, '{:.3f}')}; api/floor {_fmt(api_to_floor, '{:.3f}')}",
            ]
        throughput = self.throughput_ratio.median
        p99 = self.paced_p99_ratio.median
        lines += [
            "",
            f"throughput api/bare {throughput:.3f} (target >= {TARGET_THROUGHPUT_RATIO}): "
            + ("met" if throughput >= TARGET_THROUGHPUT_RATIO else "NOT met"),
            f"p99 api/bare at {c.paced_fraction:.0%} of the bare max {p99:.2f} "
            f"(target <= {TARGET_P99_RATIO:g}): "
            + ("met" if p99 <= TARGET_P99_RATIO else "NOT met"),
        ]
        lines += self.flags
        return "\n".join(lines)


def _spreads(phases: Sequence[Phase]) -> dict[str, Spread]:
    """Figures of like phases (one per round) as median [min-max]."""
    return {
        "rps": Spread.of([p.rps for p in phases]),
        "p50_ms": Spread.of([p.p50_ms for p in phases]),
        "p99_ms": Spread.of([p.p99_ms for p in phases]),
        "server_cpu_us_per_req": Spread.of([p.server_cpu_us for p in phases]),
        "redis_cpu_us_per_req": Spread.of([p.redis_cpu_us for p in phases]),
        "generator_cpu_us_per_req": Spread.of([p.generator_cpu_us for p in phases]),
    }


def phase_flags(phases: Sequence[Phase], setting: Setting, *, overloaded: bool = True) -> list[str]:
    """What makes the figures of these phases less trustworthy: a busy generator, other
    processes, paced phases that fell short of their rate (unless ``overloaded`` is
    False: a sweep past saturation falls short on purpose), errors, an exhausted plan."""
    found: list[str] = []
    busy = [p for p in phases if p.generator_busy_pct > GENERATOR_BUSY_PCT]
    if busy:
        worst = max(p.generator_busy_pct for p in busy)
        found.append(
            f"GENERATOR-BOUND?: the generator used up to {worst:.0f} % of a core in "
            f"{len(busy)} phase(s)"
        )
    others = [p.other_cpu_pct for p in phases if p.other_cpu_pct is not None]
    if others and max(others) > DISTURBED_PCT:
        found.append(
            f"DISTURBED: other processes used up to {max(others):.0f} % of a core "
            "during a timed phase"
        )
    short = [p for p in phases if p.target_rps and p.rps < PACED_SHORTFALL * p.target_rps]
    if short and overloaded:
        sides = sorted({p.side for p in short})
        found.append(
            f"OVERLOADED: {len(short)} paced phase(s) ({', '.join(sides)}) reached less "
            f"than {PACED_SHORTFALL:.0%} of the offered rate: their p99 is queueing"
        )
    errors = sum(p.errors for p in phases)
    if errors:
        first = next(p.first_error for p in phases if p.first_error)
        found.append(f"ERRORS: {errors} request(s) failed (first: {first})")
    if setting.requests_used > setting.request_budget:
        found.append(
            "BUDGET: more reserves than patients x department-days; some were refused "
            "by the one-hold-per-day rule (raise --patients)"
        )
    return found


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _fmt(spread: Spread, pattern: str) -> str:
    return (
        f"{pattern.format(spread.median)} "
        f"[{pattern.format(spread.min)}-{pattern.format(spread.max)}]"
    )


def _spread_dict(spread: Spread, digits: int) -> dict[str, float]:
    return {k: round(v, digits) for k, v in spread.as_dict().items()}


def _percentile_ms(sorted_ns: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanosecond durations, in ms."""
    if not sorted_ns:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


# ----------------------------------------------------------------------------------------
# The request stream (shared by the Python generator and the wrk script)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What every generator needs to build request ``i``: tokens, patients, slots."""

    #: (token, patient id) per account, account ``p`` at index ``p``.
    accounts: list[tuple[str, str]]
    #: Slot ids per department-day.
    slots: list[list[str]]
    #: Idempotency-Key prefix, unique per run (a rerun on the same Redis is no replay).
    key_prefix: str

    def request_parts(self, index: int) -> tuple[str, str, str]:
        """(token, patient id, slot id) of request ``index``."""
        patient = index % len(self.accounts)
        turn = index // len(self.accounts)
        day = self.slots[turn % len(self.slots)]
        token, patient_id = self.accounts[patient]
        return token, patient_id, day[(patient + turn) % len(day)]

    def dump(self, path: Path) -> None:
        """Write the plan as JSON for the Python generator."""
        path.write_text(
            json.dumps(
                {"accounts": self.accounts, "slots": self.slots, "key_prefix": self.key_prefix}
            ),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, path: Path) -> Plan:
        """Read a plan written by :meth:`dump`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            accounts=[(str(t), str(p)) for t, p in data["accounts"]],
            slots=[[str(s) for s in day] for day in data["slots"]],
            key_prefix=str(data["key_prefix"]),
        )

    def dump_for_wrk(self, path: Path) -> None:
        """Write the plan as the tab-separated lines the wrk script reads."""
        with path.open("w", encoding="utf-8") as out:
            out.write(f"k\t{self.key_prefix}\n")
            for token, patient in self.accounts:
                out.write(f"a\tBearer {token}\t{patient}\n")
            for day in self.slots:
                out.write("s\t" + "\t".join(day) + "\n")


_BODY = b'{"slot_id":"%s","patient_id":"%s","channel":"' + _CHANNEL.encode() + b'"}'
_HEAD = (
    b"POST "
    + _PATH.encode()
    + b" HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s-%d\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)

#: The same stream as Plan.request_parts, in wrk's LuaJIT.
_WRK_SCRIPT = """
local accounts, slots, prefix = {}, {}, ""
local start = 0
-- A global, so that done() can read it from the thread (thread:get): how many request
-- indices the run took. That is more than it answered: the requests still in flight
-- at the end, and (measured with wrk 4.1) one more that wrk builds but never sends.
counter = 0
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do
    local kind = line:sub(1, 1)
    local fields = {}
    for f in line:sub(3):gmatch("[^\\t]+") do fields[#fields + 1] = f end
    if kind == "k" then prefix = fields[1]
    elseif kind == "a" then accounts[#accounts + 1] = fields
    elseif kind == "s" then slots[#slots + 1] = fields end
  end
  start = tonumber(args[2])
end

function request()
  local i = start + counter
  counter = counter + 1
  local p = i % #accounts
  local turn = math.floor(i / #accounts)
  local day = slots[turn % #slots + 1]
  local account = accounts[p + 1]
  local body = '{"slot_id":"' .. day[(p + turn) % #day + 1] .. '","patient_id":"'
    .. account[2] .. '","channel":"@CHANNEL@"}'
  return wrk.format("POST", "@PATH@", {
    ["Authorization"] = account[1],
    ["Idempotency-Key"] = prefix .. "-" .. string.format("%d", i),
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local generated = 0
  for _, thread in ipairs(threads) do
    generated = generated + (thread:get("counter") or 0)
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"generated":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), generated))
end
""".replace("@CHANNEL@", _CHANNEL).replace("@PATH@", _PATH)


class _RequestMaker:
    """Builds request ``i`` of a plan as bytes, the next index each call."""

    def __init__(self, plan: Plan, host: str, start: int) -> None:
        self._host = host.encode()
        self._accounts = [(t.encode(), p.encode()) for t, p in plan.accounts]
        self._slots = [[s.encode() for s in day] for day in plan.slots]
        self._prefix = plan.key_prefix.encode()
        self.next_index = start

    def next(self) -> bytes:
        i = self.next_index
        self.next_index = i + 1
        accounts = self._accounts
        patient = i % len(accounts)
        turn = i // len(accounts)
        day = self._slots[turn % len(self._slots)]
        token, patient_id = accounts[patient]
        body = _BODY % (day[(patient + turn) % len(day)], patient_id)
        return _HEAD % (self._host, token, self._prefix, i, len(body)) + body


# ----------------------------------------------------------------------------------------
# The Python load generator (runs in its own process: `python -m bench.http load`)
# ----------------------------------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\n[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]: *(\d+)")


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time (no pipelining)."""

    def __init__(self, run: _LoadRun) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_ns = 0
        self.due = 0.0
        self.busy = False
        self.alive = True
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) < end:
                break
            status = int(buffer[9:12])
            buffer = buffer[end:]
            self.run.answered(self, status)
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.run.lost(self, exc)


class _LoadRun:
    """Closed-loop ("max") or paced load over ``connections`` connections."""

    def __init__(
        self,
        plan: Plan,
        *,
        host: str,
        port: int,
        mode: str,
        connections: int,
        seconds: float,
        rate: float,
        start: int,
    ) -> None:
        self.maker = _RequestMaker(plan, f"{host}:{port}", start)
        self.host, self.port = host, port
        self.mode = mode
        self.connections = connections
        self.seconds = seconds
        self.mean_gap_s = connections / rate if rate > 0 else 0.0
        self.latencies = array.array("q")
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0
        self.first_error: str | None = None
        self.late = 0
        self.deadline = 0.0
        self.conns: list[_HttpConnection] = []
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.rng = random.Random()

    async def run(self) -> dict[str, Any]:
        for _ in range(self.connections):
            _, conn = await self.loop.create_connection(
                lambda: _HttpConnection(self), self.host, self.port
            )
            self.conns.append(conn)
        cpu_before = time.process_time()
        started = self.loop.time()
        self.deadline = started + self.seconds
        for conn in self.conns:
            if self.mode == "max":
                self._send(conn)
            else:
                conn.due = started + self.rng.uniform(0, self.mean_gap_s)
                conn.timer = self.loop.call_at(conn.due, self._send_due, conn)
        self.loop.call_at(self.deadline, self._check_done)
        # Answers to requests still in flight at the deadline are waited for, not counted.
        self.loop.call_at(self.deadline + 10.0, self._finish)
        await self.done
        elapsed = min(self.loop.time(), self.deadline) - started
        cpu = time.process_time() - cpu_before
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        latencies = sorted(self.latencies)
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        errors = sum(self.statuses.values()) - ok + self.socket_errors
        return {
            "requests": len(latencies),
            "ok": ok,
            "errors": errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_error": self.first_error,
            "elapsed_s": self.seconds if elapsed <= 0 else max(elapsed, self.seconds),
            "p50_ms": _percentile_ms(latencies, 0.50),
            "p99_ms": _percentile_ms(latencies, 0.99),
            "late": self.late,
            "used": self.maker.next_index,
            "cpu_s": cpu,
        }

    def _send(self, conn: _HttpConnection) -> None:
        if not conn.alive or conn.transport is None:
            return
        conn.busy = True
        conn.sent_ns = time.perf_counter_ns()
        conn.transport.write(self.maker.next())

    def _send_due(self, conn: _HttpConnection) -> None:
        conn.timer = None
        if self.loop.time() >= self.deadline:
            self._check_done()
            return
        self._send(conn)

    def answered(self, conn: _HttpConnection, status: int) -> None:
        now_ns = time.perf_counter_ns()
        conn.busy = False
        now = self.loop.time()
        if now > self.deadline:
            self._check_done()
            return
        self.latencies.append(now_ns - conn.sent_ns)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 300 and self.first_error is None:
            self.first_error = f"HTTP {status}"
        if self.mode == "max":
            self._send(conn)
            return
        conn.due += self.rng.expovariate(1.0 / self.mean_gap_s)
        if conn.due <= now:
            if now - conn.due > 0.001:
                self.late += 1
            self._send(conn)
        else:
            conn.timer = self.loop.call_at(conn.due, self._send_due, conn)

    def lost(self, conn: _HttpConnection, exc: Exception | None) -> None:
        if self.loop.time() < self.deadline:
            self.socket_errors += 1
            if self.first_error is None:
                self.first_error = f"connection lost: {exc}"
        conn.busy = False
        self._check_done()

    def _check_done(self) -> None:
        if self.loop.time() >= self.deadline and not any(c.busy and c.alive for c in self.conns):
            self._finish()

    def _finish(self) -> None:
        for conn in self.conns:
            if conn.timer is not None:
                conn.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.load(Path(args.plan))
    run = _LoadRun(
        plan,
        host=args.host,
        port=args.port,
        mode=args.mode,
        connections=args.connections,
        seconds=args.seconds,
        rate=args.rate,
        start=args.start,
    )
    return await run.run()


# ----------------------------------------------------------------------------------------
# The bare handler (runs in its own processes: `python -m bench.http bare`)
# ----------------------------------------------------------------------------------------


def serve_bare(host: str, port: int, *, reuse_port: bool) -> None:
    """Serve the bare ``POST /v1/holds`` (and ``GET /healthz``) until SIGTERM or SIGINT."""
    import orjson
    import uvloop
    from aiohttp import web

    async def hold(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        # About the size of the API's answer (a hold view).
        answer = {
            "hold_id": "bench-department-0000.20261126.abcdefghijklmnopqrstuvwx",
            "slot_id": body["slot_id"],
            "schedule_id": "bench-doctor-00-20261126-morning",
            "patient_id": body["patient_id"],
            "channel": body["channel"],
            "state": "held",
            "amount_fen": 5000,
            "created_at": "2026-11-25T08:00:00.123000Z",
            "deadline": "2026-11-25T08:15:00.123000Z",
            "extended": False,
        }
        return web.Response(status=201, body=orjson.dumps(answer), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app = web.Application()
        app.router.add_post(_PATH, hold)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096).start()
        await stop.wait()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def child_main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's child processes: ``bare`` (the bare server), ``floor``
    (bench/floor.py) and ``load``."""
    parser = argparse.ArgumentParser(prog="python -m bench.http")
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
    args = parser.parse_args(argv)
    if args.role == "bare":
        serve_bare(args.host, args.port, reuse_port=args.reuse_port)
        return 0
    if args.role == "floor":
        from bench.floor import serve_floor

        serve_floor(args.host, args.port, reuse_port=args.reuse_port)
        return 0
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_load(args))
    print(json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------
# CPU accounting from /proc (Linux; elsewhere the figures read 0 / None)
# ----------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _proc_cpu_s(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds of one process (plus its reaped children's with ``reaped_children``)."""
    fields = _proc_stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _CLK_TCK


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _proc_stat(int(entry))
                if fields is not None:
                    parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of a process tree, exited members included (through cutime)."""
    return sum(_proc_cpu_s(pid, reaped_children=True) for pid in _descendants(root))


def _host_busy_s() -> float | None:
    """Busy CPU-seconds of the whole machine since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------


@dataclass
class _Server:
    """One side's server processes."""

    side: str
    port: int
    processes: list[subprocess.Popen[bytes]]
    log_path: Path

    def cpu_s(self) -> float:
        return sum(_tree_cpu_s(p.pid) for p in self.processes)

    def pids(self) -> list[int]:
        return [pid for p in self.processes for pid in _descendants(p.pid)]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(server: _Server, timeout_s: float = 60.0) -> None:
    url = f"http://127.0.0.1:{server.port}/healthz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in server.processes:
            if process.poll() is not None:
                tail = server.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {server.side} server exited:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    tail = server.log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the {server.side} server did not start:\n{tail}")


def _start_api(env: dict[str, str], workers: int, log_path: Path) -> _Server:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inventory", "serve", "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return _Server("api", int(env["INVENTORY_PORT"]), [process], log_path)


def _start_child_servers(
    role: str, port: int, workers: int, log_path: Path, env: dict[str, str] | None = None
) -> _Server:
    """``workers`` processes of a child server role (bare, floor) sharing ``port``."""
    command = [sys.executable, "-m", "bench.http", role, "--port", str(port)]
    if workers > 1:
        command.append("--reuse-port")
    processes = []
    with log_path.open("ab") as log:
        for _ in range(workers):
            processes.append(
                subprocess.Popen(
                    command,
                    env=child_environment(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
    return _Server(role, port, processes, log_path)


#: The folder that holds the bench package: a checkout's root, not on the path of a
#: child started elsewhere than there (the benchmarks are not installed with the service).
_CHECKOUT = Path(__file__).resolve().parent.parent


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the checkout first on PYTHONPATH, so that
    ``python -m bench.http ...`` finds the package from any working directory."""
    child = dict(os.environ if env is None else env)
    path = child.get("PYTHONPATH")
    child["PYTHONPATH"] = str(_CHECKOUT) + (os.pathsep + path if path else "")
    return child


def _pin(pids: Sequence[int], cpus: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


# ----------------------------------------------------------------------------------------
# Seeding: catalogue, patients, tokens
# ----------------------------------------------------------------------------------------


def _key() -> str:
    import base64

    return base64.b64encode(secrets.token_bytes(32)).decode()


def api_environment(
    redis_url: str, database_url: str, port: int, *, connections: int, verified_gate: bool
) -> dict[str, str]:
    """The API's environment: this process's, with the benchmark's keys, servers and
    rate limits far above the load (still checked on every reserve)."""
    env = dict(os.environ)
    env.update(
        {
            "INVENTORY_REDIS_URL": redis_url,
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_HOST": "127.0.0.1",
            "INVENTORY_PORT": str(port),
            "INVENTORY_JWT_KEYS": f"k1:{_key()}",
            "INVENTORY_JWT_CURRENT_KEY": "k1",
            "INVENTORY_FIELD_KEYS": f"f1:{_key()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{_key()}",
            "INVENTORY_RESERVE_RATE_PER_ACCOUNT": "1000000/1",
            "INVENTORY_RESERVE_RATE_PER_IP": "1000000/1",
            "INVENTORY_MAX_IN_FLIGHT": str(max(512, 2 * connections)),
            "INVENTORY_REQUIRE_VERIFIED_STORE": "true" if verified_gate else "false",
        }
    )
    return env


@dataclass
class _Seeded:
    plan: Plan
    tags: list[str]


async def _seed(
    settings: Any, redis_url: str, database_url: str, config: HttpBenchConfig, *, verify: bool
) -> _Seeded:
    """Catalogue (Postgres + Redis), patients, tokens; the fence's comparison if asked."""
    from redis.asyncio import Redis

    from inventory.api.auth import mint_token
    from inventory.api.models import PatientCreate
    from inventory.privacy.identity import make_resident_id
    from inventory.record.catalogue import PgCatalogue
    from inventory.record.patients import PatientRegistry
    from inventory.record.pool import acquire, create_pool
    from inventory.record.queries import QUERIES
    from inventory.recovery.fence import verify_store
    from inventory.store import keys
    from inventory.store.slot_store import SlotStore

    client = Redis.from_url(redis_url, decode_responses=True)
    pool = await create_pool(database_url, min_size=1, max_size=16)
    try:
        store = await SlotStore.connect_scripts(client)
        catalogue = PgCatalogue(pool, store)
        hospital = "bench-hospital"
        departments = [f"bench-d{n:02d}" for n in range(config.departments)]
        async with acquire(pool, timeout_s=10.0) as connection:
            await connection.execute(
                QUERIES["upsert_hospital"], hospital, "Bench Hospital", "Asia/Shanghai", {}
            )
            for order, department in enumerate(departments):
                await connection.execute(
                    QUERIES["upsert_department"], department, hospital, None, department, order
                )
                await connection.execute(
                    QUERIES["upsert_doctor"],
                    f"{department}-dr",
                    hospital,
                    department,
                    f"Dr {department}",
                    "主任医师",
                    "general",
                )
        await catalogue.load_policies()
        today = datetime.now(tz=_CHINA).date()
        released = datetime.now(tz=UTC) - timedelta(hours=1)
        slots: list[list[str]] = []
        tags: list[str] = []
        for offset in range(1, config.days + 1):
            day = today + timedelta(days=offset)
            for department in departments:
                day_slots: list[str] = []
                for session, start in (("am", clock_time(8, 0)), ("pm", clock_time(13, 30))):
                    schedule, schedule_slots = _schedule(
                        hospital, department, day, session, start, released, config
                    )
                    await catalogue.put_schedule(schedule, schedule_slots)
                    day_slots += [s["slot_id"] for s in schedule_slots]
                slots.append(day_slots)
                tags.append(keys.department_day_tag(department, day))
        registry = PatientRegistry(pool, settings.keyring(), settings.blind_index())
        limit = asyncio.Semaphore(16)

        async def register(n: int) -> tuple[str, str]:
            account = f"bench-a{n}"
            born = date(1960, 1, 1) + timedelta(days=n // 500)
            body = PatientCreate.model_validate(
                {
                    "name": "测试患者",
                    "gender": "male",
                    "birth_date": born,
                    "phone": f"138{n % 10**8:08d}",
                    "resident_id": make_resident_id(born, "male", seq=n % 500),
                }
            )
            async with limit:
                view, _ = await registry.register(account, body)
            token = mint_token(settings, account, ttl_s=24 * 3600)
            return token, str(view["patient_id"])

        accounts = await asyncio.gather(*(register(n) for n in range(config.patients)))
        if verify:
            await verify_store(store, pool)
        return _Seeded(Plan(list(accounts), slots, f"b{secrets.token_hex(4)}"), tags)
    finally:
        await pool.close()
        await client.aclose()


def _schedule(
    hospital: str,
    department: str,
    day: date,
    session: str,
    start: clock_time,
    released: datetime,
    config: HttpBenchConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    starts_at = datetime.combine(day, start, _CHINA)
    schedule = {
        "schedule_id": f"{department}-{day:%Y%m%d}-{session}",
        "hospital_id": hospital,
        "department_id": department,
        "doctor_id": f"{department}-dr",
        "visit_date": day,
        "session": "morning" if session == "am" else "afternoon",
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=4),
        "release_at": released,
        "cancel_deadline": datetime.combine(day - timedelta(days=1), clock_time(16, 0), _CHINA),
        "fee_fen": 5000,
        "location": "Outpatient building",
    }
    slots = [
        {
            "slot_id": f"{department}-{day:%Y%m%d}-{session}-{i}",
            "starts_at": starts_at + timedelta(minutes=30 * i),
            "ends_at": starts_at + timedelta(minutes=30 * (i + 1)),
            "capacity": BENCH_CAPACITY,
        }
        for i in range(config.slots_per_schedule)
    ]
    return schedule, slots


async def _create_database(server_url: str) -> str:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    from inventory.record.migrate import migrate_database

    name = f"bench_http_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    await migrate_database(url)
    return url


async def _drop_database(server_url: str, database_url: str) -> None:
    import asyncpg

    name = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _delete_tags(redis_url: str, tags: Sequence[str]) -> None:
    from redis.asyncio import Redis

    from inventory.store import keys

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        for tag in tags:
            await client.delete(*keys.tag_keys(tag).as_list())
            await client.srem(keys.TAG_REGISTRY_KEY, tag)
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------------------
# Running phases
# ----------------------------------------------------------------------------------------


@dataclass
class LiveBench:
    """The live run: servers, generator, plan files and the request counter.

    :func:`running_bench` yields one with both sides serving; :meth:`phase` runs one
    timed phase of one side (the rounds of ``python -m bench http`` and the offered-load
    sweep of :mod:`bench.sweep` are both built from it)."""

    config: HttpBenchConfig
    servers: dict[str, _Server]
    plan_json: Path
    plan_wrk: Path
    wrk_script: Path
    wrk: str | None
    generator_cpus: set[int] | None
    redis_url: str
    redis_pid: int | None
    postgres_pid: int | None
    #: The run's own database (created for it, dropped at the end).
    database_url: str = ""
    #: Where the servers and the rest run (None: not pinned).
    pinned: str | None = None
    redis_where: str = ""
    postgres_where: str = ""
    api_settings: dict[str, Any] = field(default_factory=dict)
    next_index: int = 0
    say: Callable[[str], None] = field(default=lambda _line: None)

    def setting(self) -> Setting:
        """Where and how the run happened, requests used so far included."""
        config = self.config
        return Setting(
            generator=f"wrk ({self.wrk}), 1 thread" if self.wrk else "python (1 process)",
            paced_generator="python (1 process)",
            processes={
                "api": config.workers,
                "bare": config.workers,
                **({"floor": config.workers} if config.floor else {}),
                "generator": 1,
                "redis": 1,
            },
            pinned=self.pinned,
            redis=self.redis_where,
            postgres=self.postgres_where,
            api_settings=self.api_settings,
            request_budget=config.request_budget,
            requests_used=self.next_index,
        )

    def _redis_cpu_s(self) -> float:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            info: dict[str, Any] = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def _preexec(self) -> Callable[[], None] | None:
        cpus = self.generator_cpus
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def _generate(
        self, side: str, mode: str, seconds: float, rate: float, start: int
    ) -> tuple[dict[str, Any], str]:
        port = self.servers[side].port
        timeout = seconds + 120
        if mode == "max" and self.wrk is not None:
            whole = max(1, round(seconds))
            command = [
                self.wrk,
                "-t1",
                f"-c{self.config.connections}",
                f"-d{whole}s",
                "--timeout",
                "10s",
                "-s",
                str(self.wrk_script),
                f"http://127.0.0.1:{port}{_PATH}",
                "--",
                str(self.plan_wrk),
                str(start),
            ]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=self._preexec(),  # the parent is single-threaded
                check=False,
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
            raw = json.loads(line.split(" ", 1)[1])
            socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
            errors = raw["status"] + socket_errors
            return {
                "requests": raw["requests"],
                "ok": raw["requests"] - raw["status"],
                "errors": errors,
                "first_error": (
                    None
                    if not errors
                    else f"wrk: {raw['status']} non-2xx/3xx, {socket_errors} socket errors"
                ),
                "elapsed_s": raw["duration_us"] / 1e6,
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "late": 0,
                # Every index the script took, sent or not: the next phase starts past
                # them (an overlap replays requests, or, across the api and the floor,
                # books one patient twice in a department-day: a 409).
                "used": start + raw["generated"],
            }, "wrk"
        command = [
            sys.executable,
            "-m",
            "bench.http",
            "load",
            "--plan",
            str(self.plan_json),
            "--port",
            str(port),
            "--mode",
            mode,
            "--connections",
            str(self.config.connections),
            "--seconds",
            str(seconds),
            "--rate",
            str(rate),
            "--start",
            str(start),
        ]
        done = subprocess.run(
            command,
            env=child_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self._preexec(),  # the parent is single-threaded
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1]), "python"

    def phase(self, side: str, mode: str, seconds: float, rate: float = 0.0) -> Phase:
        """One timed phase (``mode`` is one of PHASES) of one side; the phases of the
        sides that book (the API and the floor) consume fresh request indices."""
        booking = side in BOOKING_SIDES
        start = self.next_index if booking else 0
        server = self.servers[side]
        server_before = server.cpu_s()
        redis_before = self._redis_cpu_s()
        host_before = _host_busy_s()
        own_before = time.process_time()
        children_before = _children_cpu_s()
        backing_before = self._backing_cpu_s()
        drive = "max" if mode == "max" else "paced"
        raw, generator = self._generate(side, drive, seconds, rate, start)
        generator_cpu = _children_cpu_s() - children_before
        backing_after = self._backing_cpu_s()
        host_after = _host_busy_s()
        own = time.process_time() - own_before
        redis_cpu = self._redis_cpu_s() - redis_before
        server_cpu = server.cpu_s() - server_before
        if booking:
            self.next_index = int(raw["used"])
        elapsed = float(raw["elapsed_s"])
        other: float | None = None
        if (
            host_before is not None
            and host_after is not None
            and backing_before is not None
            and backing_after is not None
        ):
            busy = host_after - host_before
            backing = backing_after - backing_before
            # The generator's CPU also counts the time it spent connecting and finishing.
            other = max(0.0, busy - own - generator_cpu - server_cpu - backing) / elapsed * 100
        answered = max(1, int(raw["requests"]))
        return Phase(
            side=side,
            mode=mode,
            generator=generator,
            requests=int(raw["requests"]),
            ok=int(raw["ok"]),
            errors=int(raw["errors"]),
            first_error=raw.get("first_error"),
            elapsed_s=elapsed,
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            target_rps=rate if mode != "max" else None,
            late=int(raw.get("late", 0)),
            server_cpu_us=server_cpu / answered * 1e6,
            generator_cpu_us=generator_cpu / answered * 1e6,
            redis_cpu_us=redis_cpu / answered * 1e6,
            generator_busy_pct=generator_cpu / elapsed * 100 if elapsed > 0 else 0.0,
            other_cpu_pct=other,
        )

    def _backing_cpu_s(self) -> float | None:
        """CPU of the private Redis and Postgres (None when either is not ours)."""
        if self.redis_pid is None or self.postgres_pid is None:
            return None
        return _proc_cpu_s(self.redis_pid) + _tree_cpu_s(self.postgres_pid)

    def warm_up(self) -> None:
        """Untimed closed loop, ``warmup_seconds`` per side; then more on the api until
        every patient of the plan has reserved once, so that the API's slot-location and
        patient-link caches are full as in production (at most WARMUP_EXTRA_S more).
        Nothing with a warm-up of 0."""
        seconds = self.config.warmup_seconds
        if seconds <= 0:
            return
        self.say(f"warming up: {seconds:g} s per side")
        for side in self.servers:
            self.phase(side, "max", seconds)
        deadline = time.monotonic() + WARMUP_EXTRA_S
        while self.next_index < self.config.patients and time.monotonic() < deadline:
            self.say(
                f"warming up the api until every patient has reserved once "
                f"({self.next_index:,} of {self.config.patients:,})"
            )
            self.phase("api", "max", seconds)

    def run_rounds(self) -> list[HttpRound]:
        c = self.config
        self.warm_up()
        rounds: list[HttpRound] = []
        for index in range(1, c.rounds + 1):
            order = SIDES if index % 2 else (SIDES[1], SIDES[0])
            maxed = {side: self.phase(side, "max", c.seconds) for side in order}
            floor = self.phase("floor", "max", c.seconds) if c.floor else None
            rate = c.paced_fraction * maxed["bare"].rps
            paced = {side: self.phase(side, "paced", c.seconds, rate) for side in order}
            low = c.paced_fraction * maxed["api"].rps
            paced_api = {side: self.phase(side, "paced_api", c.seconds, low) for side in order}
            result = HttpRound(index, order, maxed, paced, paced_api, floor)
            rounds.append(result)
            self.say(
                f"round {index}/{c.rounds}: bare {maxed['bare'].rps:,.0f}/s, "
                f"api {maxed['api'].rps:,.0f}/s (ratio {result.throughput_ratio:.3f}); "
                f"paced at {rate:,.0f}/s: p99 bare {paced['bare'].p99_ms:.2f} ms, "
                f"api {paced['api'].p99_ms:.2f} ms (ratio {result.paced_p99_ratio:.2f})"
                + (
                    f"; floor {floor.rps:,.0f}/s (floor/bare {result.floor_ratio:.3f})"
                    if floor is not None
                    else ""
                )
            )
        return rounds


def _choose_wrk(generator: str) -> str | None:
    found = shutil.which("wrk")
    if generator == "wrk" and found is None:
        raise RuntimeError("--generator wrk: wrk is not installed (apt-get install wrk)")
    return found if generator in ("auto", "wrk") else None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


def run_http_bench(
    config: HttpBenchConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> HttpBenchReport:
    """Run the whole benchmark: servers, seeding, warm-up, rounds; clean up after."""
    with running_bench(
        config, redis_url=redis_url, database_url=database_url, progress=progress
    ) as bench:
        rounds = bench.run_rounds()
        return HttpBenchReport(config=config, setting=bench.setting(), rounds=tuple(rounds))
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_bench(
    config: HttpBenchConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[LiveBench]:
    """Servers (private unless URLs are given), a seeded database, the API and the bare
    handler serving and pinned: everything but the timed phases. All of it is stopped,
    dropped or deleted on exit."""
    from inventory.devtools.servers import free_port, start_postgres, start_redis
    from inventory.ops.config import Settings

    say = progress or (lambda _line: None)
    wrk = _choose_wrk(config.generator)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = config.pin if config.pin is not None else (config.workers == 1 and len(cpus) >= 2)
    if pin and len(cpus) < 2:
        raise RuntimeError("--pin needs at least two CPUs")
    server_cpus = {cpus[-1]} if pin else None
    other_cpus = set(cpus[:-1]) if pin else None
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inventory-bench-")))
        redis_pid = postgres_pid = None
        if redis_url is None:
            say(f"starting a private redis-server (AOF {config.aof})")
            redis = stack.enter_context(
                start_redis(
                    tmp / "redis",
                    appendonly=config.aof != "off",
                    appendfsync=config.aof if config.aof != "off" else "everysec",
                )
            )
            redis_url, redis_pid = redis.url, redis.pid
            redis_where = f"private redis-server {redis.version} on {redis.port}, AOF {config.aof}"
        else:
            redis_where = _where(redis_url)
        if database_url is None:
            say("starting a private Postgres")
            postgres = stack.enter_context(start_postgres(tmp / "postgres"))
            server_url, postgres_pid = postgres.dsn, postgres.pid
            postgres_where = f"private Postgres {postgres.version} on {postgres.port}"
        else:
            server_url = database_url
            postgres_where = _where(database_url) + " (fresh database, dropped at the end)"
        if other_cpus is not None:
            _pin([os.getpid()], other_cpus)
            for pid in (redis_pid, postgres_pid):
                if pid is not None:
                    _pin(_descendants(pid), other_cpus)
        verified_gate = redis_pid is not None
        say("creating and migrating a database")
        db_url = asyncio.run(_create_database(server_url))
        stack.callback(lambda: asyncio.run(_drop_database(server_url, db_url)))
        api_port, bare_port = free_port(), free_port()
        env = api_environment(
            redis_url,
            db_url,
            api_port,
            connections=config.connections,
            verified_gate=verified_gate,
        )
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("INVENTORY_")})
        say(f"seeding {config.department_days} department-days and {config.patients:,} patients")
        seeded = asyncio.run(_seed(settings, redis_url, db_url, config, verify=verified_gate))
        if redis_pid is None:
            tags, url = seeded.tags, redis_url
            stack.callback(lambda: asyncio.run(_delete_tags(url, tags)))
        plan_json, plan_wrk, wrk_script = tmp / "plan.json", tmp / "plan.tsv", tmp / "plan.lua"
        seeded.plan.dump(plan_json)
        seeded.plan.dump_for_wrk(plan_wrk)
        wrk_script.write_text(_WRK_SCRIPT, encoding="utf-8")
        say(
            f"starting {config.workers} API and {config.workers} bare process(es)"
            + (f" and {config.workers} floor process(es)" if config.floor else "")
        )
        api = _start_api(env, config.workers, tmp / "api.log")
        stack.callback(api.stop)
        bare = _start_child_servers("bare", bare_port, config.workers, tmp / "bare.log")
        stack.callback(bare.stop)
        servers = {"api": api, "bare": bare}
        if config.floor:
            floor = _start_child_servers(
                "floor", free_port(), config.workers, tmp / "floor.log", env=env
            )
            stack.callback(floor.stop)
            servers["floor"] = floor
        for server in servers.values():
            _wait_healthy(server)
        if server_cpus is not None:
            _pin([pid for server in servers.values() for pid in server.pids()], server_cpus)
        pinned = (
            f"servers on CPU {sorted(server_cpus)[0]}, generator/Redis/Postgres on CPU "
            + ",".join(str(c) for c in sorted(other_cpus or ()))
            if server_cpus is not None
            else None
        )
        yield LiveBench(
            config=config,
            servers=servers,
            plan_json=plan_json,
            plan_wrk=plan_wrk,
            wrk_script=wrk_script,
            wrk=wrk,
            generator_cpus=other_cpus,
            redis_url=redis_url,
            redis_pid=redis_pid,
            postgres_pid=postgres_pid,
            database_url=db_url,
            pinned=pinned,
            redis_where=redis_where,
            postgres_where=postgres_where,
            api_settings={
                "redis_autopipeline": settings.redis_autopipeline,
                "verified_store_gate": verified_gate,
                "rate_limits": "on, far above the load",
            },
            say=say,
        )


if __name__ == "__main__":
    raise SystemExit(child_main())
