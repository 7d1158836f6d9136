"""What a run of the http benchmark measured, as figures, JSON and text."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.http.config import (
    DISTURBED_PCT,
    GENERATOR_BUSY_PCT,
    PACED_SHORTFALL,
    PHASES,
    SIDES,
    TARGET_API_TO_FLOOR,
    TARGET_CPU_RATIO,
    TARGET_FLOOR_P99_RATIO,
    TARGET_P99_RATIO,
    TARGET_THROUGHPUT_RATIO,
    HttpBenchConfig,
)
from bench.http.plan import PATH
from bench.stats import Spread


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
    #: The floor at the paced_api rate (with ``--floor``), run after the other phases.
    floor_paced_api: Phase | None = None

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

    @property
    def paced_api_floor_p99_ratio(self) -> float | None:
        """api/floor p99 at a fraction of the api's own max (None without a floor)."""
        if self.floor_paced_api is None:
            return None
        floor = self.floor_paced_api.p99_ms
        return self.paced_api["api"].p99_ms / floor if floor else math.inf

    def phases(self) -> Iterator[Phase]:
        """Every phase (the floor's last)."""
        for phase in PHASES:
            for side in self.order:
                yield getattr(self, phase)[side]
        if self.floor_max is not None:
            yield self.floor_max
        if self.floor_paced_api is not None:
            yield self.floor_paced_api


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

    @property
    def paced_api_floor_p99_ratio(self) -> Spread | None:
        """api/floor p99 at a fraction of the api max, over the rounds (None without a
        floor)."""
        ratios = [r.paced_api_floor_p99_ratio for r in self.rounds]
        return Spread.of([x for x in ratios if x is not None]) if self.config.floor else None

    def floor_spreads(self, mode: str = "max") -> dict[str, Spread] | None:
        """The floor's figures in ``mode`` (max or paced_api) over the rounds (None
        without a floor)."""
        phases = [
            p
            for p in (r.floor_max if mode == "max" else r.floor_paced_api for r in self.rounds)
            if p is not None
        ]
        if not phases:
            return None
        return _spreads(phases)

    def floor_targets(self) -> dict[str, Any] | None:
        """The targets against the floor and whether the medians meet them (None
        without a floor)."""
        api_to_floor, p99 = self.api_to_floor_ratio, self.paced_api_floor_p99_ratio
        if api_to_floor is None or p99 is None:
            return None
        cpu = self.cpu_ratio.median
        return {
            "api_to_floor_min": TARGET_API_TO_FLOOR,
            "server_cpu_ratio_max": TARGET_CPU_RATIO,
            "paced_api_p99_to_floor_max": TARGET_FLOOR_P99_RATIO,
            "api_to_floor_met": api_to_floor.median >= TARGET_API_TO_FLOOR,
            "server_cpu_met": cpu <= TARGET_CPU_RATIO,
            "p99_met": p99.median <= TARGET_FLOOR_P99_RATIO,
        }

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
        floor_paced, floor_p99 = self.floor_spreads("paced_api"), self.paced_api_floor_p99_ratio
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
                    "paced_api": (
                        None
                        if floor_paced is None
                        else {k: v.as_dict() for k, v in floor_paced.items()}
                    ),
                    "paced_api_p99_ratio": (
                        None if floor_p99 is None else _spread_dict(floor_p99, 3)
                    ),
                    "targets": self.floor_targets(),
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
                    "floor_paced_api": (
                        None if r.floor_paced_api is None else r.floor_paced_api.as_dict()
                    ),
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
            f"POST {PATH} through the API vs a bare aiohttp JSON POST handler: "
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
            floor_paced = self.floor_spreads("paced_api")
            floor_p99 = self.paced_api_floor_p99_ratio
            targets = self.floor_targets()
            if floor_paced is not None and floor_p99 is not None and targets is not None:
                cpu = self.cpu_ratio.median
                lines += [
                    f"  at the paced_api rate: p50 {_fmt(floor_paced['p50_ms'], '{:.2f}')} ms, "
                    f"p99 {_fmt(floor_paced['p99_ms'], '{:.2f}')} ms; "
                    f"p99 api/floor {_fmt(floor_p99, '{:.2f}')}",
                    f"  api/floor {api_to_floor.median:.3f} (target >= {TARGET_API_TO_FLOOR}): "
                    + ("met" if targets["api_to_floor_met"] else "NOT met"),
                    f"  server CPU api/bare {cpu:.2f} (target <= {TARGET_CPU_RATIO}): "
                    + ("met" if targets["server_cpu_met"] else "NOT met"),
                    f"  p99 api/floor at {c.paced_fraction:.0%} of the api max "
                    f"{floor_p99.median:.2f} (target <= {TARGET_FLOOR_P99_RATIO:g}): "
                    + ("met" if targets["p99_met"] else "NOT met"),
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
