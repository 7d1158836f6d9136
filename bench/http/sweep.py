"""Throughput and latency of the API and the bare handler against offered load.

``python -m bench http --sweep [--plot PATH]`` runs the servers, data and generator of
:mod:`bench.http` (one :class:`~bench.http.live.LiveBench`, the same
phases) in a different order:

1. the warm-up of the rounds (:meth:`~bench.http.live.LiveBench.warm_up`: until every
   patient has reserved once) and one closed-loop **max** phase per side, as in a round;
2. **points**: open-loop paced phases of both sides at a series of offered rates, from
   fractions of the bare side's max (well below the API's ceiling up to past the bare
   handler's) and of the API's max (around its knee), lowest rate first, the side that
   goes first alternating from point to point. Rates within 10 % of a lower one are
   dropped, so the default is 8-10 points; while the bare side still answers 95 % of the
   offered rate at the highest point (its max was measured low, on a busy machine),
   up to 3 more follow, each 1.25 times the last.

Per point and side it records the offered rate, the successful answers per second, the
error rate, p50 and p99 (measured from the write, like every paced phase of
``bench http``: past saturation the generator's connections, one request in flight each,
bound the queue, so the latency there is that of a closed loop at ``connections``), and
the CPU figures of :class:`~bench.http.report.Phase`.

With ``--plot PATH`` it writes a PNG (matplotlib, Agg) of two panels, achieved throughput
and p50/p99 against offered rate, api and bare, with the date, the machine, the versions
and the processes in a footnote, and the figures as JSON beside it (``PATH`` with the
suffix ``.json``); ``python -m bench replot FILE.json [FILE.png]`` draws
the PNG again from the JSON alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.http.config import DISTURBED_PCT, PACED_SHORTFALL, SIDES, HttpBenchConfig
from bench.http.live import LiveBench
from bench.http.report import Phase, Setting, phase_flags
from bench.http.run import running_bench

#: Offered rates as fractions of the bare side's closed-loop max: from far below the
#: API's ceiling to past the bare handler's.
BARE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0, 1.2)
#: ... and of the API's closed-loop max: around its knee.
API_FRACTIONS: tuple[float, ...] = (0.5, 0.8, 1.0, 1.25)
#: Seconds per phase of a sweep (points and the max phases) unless given.
SWEEP_SECONDS = 4.0
#: A rate within this factor of a lower one adds little: dropped.
MERGE_FACTOR = 1.1
#: While the bare side keeps up at the highest point, points at this factor above it
#: follow, at most EXTRA_POINTS of them.
EXTRA_FACTOR = 1.25
EXTRA_POINTS = 3
#: The largest fraction accepted (of either max).
MAX_FRACTION = 5.0


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """The run (``http``: its ``seconds`` is the length of every timed phase; ``rounds``
    and ``paced_fraction`` do not apply) and the offered rates of the points."""

    http: HttpBenchConfig
    bare_fractions: tuple[float, ...] = BARE_FRACTIONS
    api_fractions: tuple[float, ...] = API_FRACTIONS

    def __post_init__(self) -> None:
        if not self.bare_fractions and not self.api_fractions:
            raise ValueError("a sweep needs at least one fraction")
        for fraction in (*self.bare_fractions, *self.api_fractions):
            if not (0 < fraction <= MAX_FRACTION and math.isfinite(fraction)):
                raise ValueError(f"fractions must be in (0, {MAX_FRACTION:g}]: {fraction}")


def offered_rates(
    bare_max: float,
    api_max: float,
    bare_fractions: Sequence[float] = BARE_FRACTIONS,
    api_fractions: Sequence[float] = API_FRACTIONS,
) -> list[float]:
    """The points' offered rates (req/s), ascending; a rate within ``MERGE_FACTOR`` of
    the last one kept is dropped, and rates under 1/s are never offered."""
    wanted = sorted({f * bare_max for f in bare_fractions} | {f * api_max for f in api_fractions})
    rates: list[float] = []
    for rate in wanted:
        if rate < 1.0:
            continue
        if rates and rate < rates[-1] * MERGE_FACTOR:
            continue
        rates.append(rate)
    return rates


def error_rate(phase: Phase) -> float:
    """Failed requests (non-2xx, socket errors) per request answered or failed."""
    attempts = phase.ok + phase.errors
    return phase.errors / attempts if attempts else 0.0


def overloaded(phase: Phase) -> bool:
    """The phase answered less than PACED_SHORTFALL of its offered rate."""
    return bool(phase.target_rps) and phase.rps < PACED_SHORTFALL * (phase.target_rps or 0.0)


def _point_dict(phase: Phase) -> dict[str, Any]:
    return {
        **phase.as_dict(),
        "error_rate": round(error_rate(phase), 6),
        "overloaded": overloaded(phase),
    }


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """Both sides at one offered rate."""

    offered_rps: float
    order: tuple[str, str]
    sides: dict[str, Phase]

    @property
    def achieved_ratio(self) -> float:
        """api/bare successful answers per second at this offered rate."""
        bare = self.sides["bare"].rps
        return self.sides["api"].rps / bare if bare else 0.0

    @property
    def p99_ratio(self) -> float:
        """api/bare p99 at this offered rate."""
        bare = self.sides["bare"].p99_ms
        return self.sides["api"].p99_ms / bare if bare else math.inf


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep measured, and where."""

    config: SweepConfig
    setting: Setting
    machine: dict[str, Any]
    maxima: dict[str, Phase]
    points: tuple[SweepPoint, ...]

    @property
    def throughput_ratio(self) -> float:
        """api/bare closed-loop max."""
        bare = self.maxima["bare"].rps
        return self.maxima["api"].rps / bare if bare else 0.0

    @property
    def phases(self) -> list[Phase]:
        """Every timed phase: the maxima, then the points."""
        return [*self.maxima.values(), *(p.sides[s] for p in self.points for s in p.order)]

    @property
    def errors(self) -> int:
        """Failed requests over the whole sweep."""
        return sum(p.errors for p in self.phases)

    @property
    def flags(self) -> list[str]:
        """What makes the figures less trustworthy (overloaded points are expected and
        marked per point instead)."""
        return phase_flags(self.phases, self.setting, overloaded=False)

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report: what ``--json`` prints and the plot's JSON."""
        c, s = self.config.http, self.setting
        return {
            "benchmark": "http-sweep",
            "machine": self.machine,
            "config": {
                "workers": c.workers,
                "seconds_per_point": c.seconds,
                "connections": c.connections,
                "warmup_seconds": c.warmup_seconds,
                "bare_fractions": list(self.config.bare_fractions),
                "api_fractions": list(self.config.api_fractions),
                "patients": c.patients,
                "departments": c.departments,
                "days": c.days,
                "aof": c.aof,
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
            "max": {side: self.maxima[side].as_dict() for side in SIDES},
            "throughput_ratio": round(self.throughput_ratio, 4),
            "points": [
                {
                    "offered_rps": round(p.offered_rps, 1),
                    "order": list(p.order),
                    "achieved_ratio": round(p.achieved_ratio, 4),
                    "p99_ratio": round(p.p99_ratio, 3),
                    **{side: _point_dict(p.sides[side]) for side in SIDES},
                }
                for p in self.points
            ],
            "errors": self.errors,
            "flags": self.flags,
        }

    def format_text(self) -> str:
        """The human-readable report."""
        c = self.config.http
        lines = [
            f"POST /v1/holds, API vs bare aiohttp handler, against offered load: "
            f"{len(self.points)} point(s) x {c.seconds:g} s per side, "
            f"{c.connections} connections",
            footnote(self.as_dict())[0],
            "",
            f"closed-loop max: bare {self.maxima['bare'].rps:,.0f}/s, "
            f"api {self.maxima['api'].rps:,.0f}/s, ratio api/bare {self.throughput_ratio:.3f}",
            "",
            f"{'offered/s':>9}  {'side':<4}  {'ok/s':>8}  {'ok/offered':>10}  "
            f"{'errors %':>8}  {'p50 ms':>7}  {'p99 ms':>8}  {'server µs/req':>13}  "
            f"{'gen %':>5}  {'other %':>7}",
        ]
        for point in self.points:
            for side in SIDES:
                p = point.sides[side]
                mark = "  overloaded" if overloaded(p) else ""
                other = "-" if p.other_cpu_pct is None else f"{p.other_cpu_pct:.1f}"
                lines.append(
                    f"{point.offered_rps:>9,.0f}  {side:<4}  {p.rps:>8,.0f}  "
                    f"{p.rps / point.offered_rps:>10.2f}  {100 * error_rate(p):>8.2f}  "
                    f"{p.p50_ms:>7.2f}  {p.p99_ms:>8.2f}  {p.server_cpu_us:>13.1f}  "
                    f"{p.generator_busy_pct:>5.0f}  {other:>7}{mark}"
                )
            lines.append(
                f"{'':>9}  api/bare: ok/s {point.achieved_ratio:.3f}, p99 {point.p99_ratio:.2f}"
            )
        return "\n".join([*lines, *self.flags])


# ----------------------------------------------------------------------------------------
# Where it ran
# ----------------------------------------------------------------------------------------


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, bool]:
    """The CPU's model name and whether it runs under a hypervisor (``/proc/cpuinfo``;
    ``platform.processor()`` elsewhere)."""
    model, virtual = "", False
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if not model and name in ("model name", "Hardware", "cpu model", "Model"):
                model = value
            elif name == "flags" and "hypervisor" in value.split():
                virtual = True
    return model or platform.processor() or platform.machine() or "unknown CPU", virtual


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _commit() -> dict[str, Any]:
    """The checkout the code ran from: commit and whether its code differs from it."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short=10", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", "inventory", "lua")
    return {"commit": commit, "dirty": bool(status)}


async def _postgres_version(database_url: str) -> str:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    connection = await asyncpg.connect(database_url)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def describe_machine(bench: LiveBench) -> dict[str, Any]:
    """Date, CPU, core count, load, versions and the code's commit, for the footnote."""
    import redis

    model, virtual = cpu_model()
    with redis.Redis.from_url(bench.redis_url) as client:
        redis_version = str(client.info("server").get("redis_version", "?"))
    postgres_version = "?"
    if bench.database_url:
        postgres_version = asyncio.run(_postgres_version(bench.database_url)).split()[0]
    return {
        "date": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "cpu_model": model,
        "virtual_machine": virtual,
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "redis_py": _version("redis"),
        "redis": redis_version,
        "postgres": postgres_version,
        **_commit(),
    }


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------


def measure_point(bench: LiveBench, number: int, rate: float, seconds: float) -> SweepPoint:
    """Both sides at ``rate``; api first at even point numbers, bare first at odd ones."""
    order = SIDES if number % 2 == 0 else (SIDES[1], SIDES[0])
    sides = {side: bench.phase(side, "sweep", seconds, rate) for side in order}
    return SweepPoint(rate, order, sides)


def run_sweep(
    config: SweepConfig,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepReport:
    """Warm up, measure both maxima, then both sides at every offered rate."""
    say = progress or (lambda _line: None)
    c = config.http
    with running_bench(c, redis_url=redis_url, database_url=database_url, progress=say) as bench:
        machine = describe_machine(bench)
        bench.warm_up()
        maxima = {side: bench.phase(side, "max", c.seconds) for side in SIDES}
        rates = offered_rates(
            maxima["bare"].rps, maxima["api"].rps, config.bare_fractions, config.api_fractions
        )
        say(
            f"max: bare {maxima['bare'].rps:,.0f}/s, api {maxima['api'].rps:,.0f}/s; "
            f"{len(rates)} points of {c.seconds:g} s per side"
        )
        planned = len(rates)
        points: list[SweepPoint] = []
        while rates:
            point = measure_point(bench, len(points), rates.pop(0), c.seconds)
            points.append(point)
            say(
                f"point {len(points)} at {point.offered_rps:,.0f}/s: "
                + ", ".join(
                    f"{side} {point.sides[side].rps:,.0f}/s p99 {point.sides[side].p99_ms:.2f} ms"
                    for side in SIDES
                )
            )
            # A max measured while the machine was busy places the bare knee too low: go
            # on past the last point while the bare side still keeps up.
            extra = len(points) - planned
            if (
                not rates
                and config.bare_fractions
                and extra < EXTRA_POINTS
                and not overloaded(point.sides["bare"])
            ):
                rates.append(point.offered_rps * EXTRA_FACTOR)
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        return SweepReport(config, bench.setting(), machine, maxima, tuple(points))
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------------------
# The plot (drawn from the JSON, so that the JSON alone reproduces it)
# ----------------------------------------------------------------------------------------

_COLOURS = {"api": "#c0392b", "bare": "#2471a3"}


def footnote(data: dict[str, Any]) -> list[str]:
    """The plot's footnote lines: date, machine, versions, processes, code, caveats."""
    m, c, s = data["machine"], data["config"], data["setting"]
    cpus = f"{m['cpu_count']} CPUs"
    vm = ", virtual machine" if m.get("virtual_machine") else ""
    code = "commit ?" if not m.get("commit") else f"commit {m['commit']}"
    if m.get("dirty"):
        code += " + uncommitted changes"
    processes = ", ".join(f"{k} {v}" for k, v in s["processes"].items())
    load = m.get("load_average_start")
    load_end = m.get("load_average_end")
    texts = [
        f"{m['date'][:10]}: {m['cpu_model']}, {cpus}{vm}; Python {m['python']}, "
        f"aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, Redis {m['redis']}, "
        f"Postgres {m['postgres']}; {code}",
        f"processes: {processes}, postgres; "
        + (s["pinned"] if s["pinned"] else "not pinned")
        + f"; {c['connections']} connections, open loop, {c['seconds_per_point']:g} s per "
        f"point; load average {load[0] if load else '?'} at start, "
        f"{load_end[0] if load_end else '?'} at end",
        f"hollow: less than {PACED_SHORTFALL:.0%} of the offered rate answered (overloaded; "
        f"latency from the write, so bounded by the {c['connections']} connections' queue); "
        "dotted: each side's closed-loop max; "
        f"x: other processes used more than {DISTURBED_PCT:g} % of a core meanwhile (disturbed)",
    ]
    return [line for text in [*texts, *data.get("flags", [])] for line in textwrap.wrap(text, 200)]


def write_plot(data: dict[str, Any], path: Path) -> None:
    """Draw the sweep of ``data`` (:meth:`SweepReport.as_dict`) as a PNG at ``path``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError as error:
        raise RuntimeError(
            "the plot needs matplotlib: pip install 'slot-inventory[bench]'"
        ) from error

    figure = Figure(figsize=(11.0, 5.4), dpi=100)
    FigureCanvasAgg(figure)
    rate_ax, latency_ax = figure.subplots(1, 2)
    points = data["points"]
    offered = [float(p["offered_rps"]) for p in points]
    for side in SIDES:
        colour = _COLOURS[side]
        label = "API (POST /v1/holds)" if side == "api" else "bare aiohttp handler"
        rows = [(x, p[side]) for x, p in zip(offered, points, strict=True)]
        _series(rate_ax, rows, "rps", colour, "-", label)
        for x, p in rows:
            if float(p["error_rate"]) > 0.001 and float(p["rps"]) > 0:
                rate_ax.annotate(
                    f"{float(p['error_rate']):.1%} errors",
                    (x, float(p["rps"])),
                    color=colour,
                    fontsize=6.5,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
        _series(latency_ax, rows, "p99_ms", colour, "-", f"{label}, p99")
        _series(latency_ax, rows, "p50_ms", colour, "--", f"{label}, p50")
        closed = float(data["max"][side]["rps"])
        if closed > 0:
            rate_ax.axhline(closed, color=colour, linestyle=":", linewidth=1)
            rate_ax.annotate(
                f"{side} closed-loop max {closed:,.0f}/s",
                (offered[0] if offered else closed, closed),
                color=colour,
                fontsize=7,
                xytext=(0, 3),
                textcoords="offset points",
            )
    if offered:
        reference = [min(offered), max(offered)]
        rate_ax.plot(reference, reference, color="grey", linestyle="--", linewidth=0.8)
        rate_ax.annotate(
            "answered = offered",
            (reference[0], reference[0]),
            color="grey",
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    rate_ax.set(
        xscale="log",
        yscale="log",
        xlabel="offered rate (requests/s)",
        ylabel="answered 2xx (requests/s)",
        title="throughput",
    )
    latency_ax.set(
        xscale="log",
        yscale="log",
        xlabel="offered rate (requests/s)",
        ylabel="latency (ms)",
        title="latency: p99 (solid), p50 (dashed)",
    )
    for axes in (rate_ax, latency_ax):
        axes.grid(True, which="both", linewidth=0.3, alpha=0.6)
        _ticks(axes.xaxis, LogLocator, FuncFormatter, NullFormatter)
        _ticks(axes.yaxis, LogLocator, FuncFormatter, NullFormatter)
    rate_ax.legend(fontsize=8, loc="lower right")
    latency_ax.legend(fontsize=7, loc="upper left")
    ratio = data.get("throughput_ratio")
    figure.suptitle(
        "Reserve (POST /v1/holds) vs a bare aiohttp handler against offered load"
        + (f": closed-loop throughput api/bare {ratio:.3f}" if ratio is not None else ""),
        fontsize=11,
    )
    notes = footnote(data)
    figure.text(0.01, 0.01, "\n".join(notes), fontsize=6.5, va="bottom", ha="left")
    figure.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.14 + 0.025 * len(notes))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})


def _ticks(axis: Any, locator: Any, formatter: Any, null: Any) -> None:
    """Labels at 1, 2, 3 and 5 of each decade, written plainly (2k, 0.5), none between."""
    axis.set_major_locator(locator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(formatter(_plain))
    axis.set_minor_formatter(null())


def _plain(value: float, _position: Any = None) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _series(
    axes: Any,
    rows: Sequence[tuple[float, dict[str, Any]]],
    key: str,
    colour: str,
    style: str,
    label: str,
) -> None:
    """One line; points overloaded hollow; points with no positive value left out (log)."""
    shown = [(x, float(p[key]), bool(p["overloaded"])) for x, p in rows if float(p[key]) > 0]
    if not shown:
        return
    axes.plot(
        [x for x, _, _ in shown],
        [y for _, y, _ in shown],
        color=colour,
        linestyle=style,
        linewidth=1.3,
        label=label,
    )
    for hollow in (False, True):
        part = [(x, y) for x, y, o in shown if o is hollow]
        if part:
            axes.scatter(
                [x for x, _ in part],
                [y for _, y in part],
                s=22,
                edgecolors=colour,
                facecolors="white" if hollow else colour,
                zorder=3,
            )
    disturbed = [
        (x, float(p[key]))
        for x, p in rows
        if float(p[key]) > 0 and (p.get("other_cpu_pct") or 0.0) > DISTURBED_PCT
    ]
    if disturbed:
        axes.scatter(
            [x for x, _ in disturbed],
            [y for _, y in disturbed],
            s=40,
            marker="x",
            color="black",
            linewidths=0.7,
            zorder=4,
        )


def write_sweep(report: SweepReport, png: Path) -> Path:
    """Write the plot at ``png`` and its figures beside it (``.json``); return the latter."""
    data = report.as_dict()
    figures = png.with_suffix(".json")
    png.parent.mkdir(parents=True, exist_ok=True)
    figures.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_plot(data, png)
    return figures
