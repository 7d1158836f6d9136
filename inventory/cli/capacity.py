"""`inventory capacity`: M/M/s capacity planning for a clinic session.

Shapes (rates per hour, times as named; see docs/capacity.md):

    inventory capacity --arrival-rate L --service-rate M --servers S [--json]
    inventory capacity min-servers --arrival-rate L --service-rate M --max-wait-minutes W [--json]
    inventory capacity max-rate --service-rate M --servers S --max-wait-minutes W
                                [--session-hours H [--no-show-rate P]] [--json]
    inventory capacity simulate --arrival-rate L --service-rate M --servers S [...] [--json]
    inventory capacity simulate --slots N --session-hours H --service-rate M --servers S
                                [--no-show P] [--jitter-sd-minutes J] [--late-fraction Q]
                                [--late-mean-minutes D] [...] [--json]

Exit status: 0 on success; 1 when the model refuses the numbers (unstable system,
negative, zero or non-finite rates, unreachable target), with the reason on stderr; 2 for
command-line errors found by the parser (missing or malformed options, such as a
non-integer number of doctors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from inventory.capacity.errors import CapacityError, UnstableSystemError
from inventory.capacity.intervals import Estimate
from inventory.capacity.mms import MMsResult, mms_metrics
from inventory.capacity.planning import (
    max_arrival_rate_for_wait,
    min_servers_for_wait,
    slots_per_session,
)
from inventory.capacity.simulation import (
    SessionScenario,
    SimulationResult,
    simulate_mms,
    simulate_session,
)

_PROG = "inventory capacity"
_MINUTES_PER_HOUR = 60.0
_MODEL_KEYS = ("utilization", "p_wait", "wq_hours", "w_hours", "lq", "l")
_ROW_LABELS = {
    "utilization": "utilisation ρ = λ/(sμ)",
    "p_wait": "P(patient waits), Erlang C",
    "wq_hours": "mean wait in queue, Wq",
    "w_hours": "mean time in system, W",
    "lq": "mean queue length, Lq",
    "l": "mean number in system, L",
    "overtime_hours": "overtime past session end",
}
# Options of `simulate` that only make sense for one of its two arrival models.
_SESSION_ONLY = (
    "session_hours",
    "no_show",
    "jitter_sd_minutes",
    "late_fraction",
    "late_mean_minutes",
    "replications",
)
_POISSON_ONLY = ("patients", "warmup_patients", "batches")

Handler = Callable[[argparse.Namespace], int]
_T = TypeVar("_T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `inventory capacity` and its questions to the top-level command line."""
    parser = subparsers.add_parser(
        "capacity",
        help="M/M/s capacity planning: waits, doctors, slots per session",
        description=(
            "Exact M/M/s (Erlang C) figures for a clinic session: Poisson arrivals at "
            "--arrival-rate patients/hour, exponential consultations at --service-rate "
            "patients/hour per doctor, --servers doctors, first come first served. "
            "Options go after the question name when one is given."
        ),
        epilog=(
            "exit status: 0 ok; 1 the model refuses the numbers (unstable system, "
            "non-positive or non-finite rate, unreachable target); 2 command-line error"
        ),
    )
    _add_rates(parser, required=False)
    parser.add_argument("--servers", type=int, metavar="S", help="doctors working in parallel")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_guarded(_model_handler(parser)))

    questions = parser.add_subparsers(dest="question", metavar="<question>", title="questions")
    _register_min_servers(questions)
    _register_max_rate(questions)
    _register_simulate(questions)


def _register_min_servers(questions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = questions.add_parser(
        "min-servers",
        help="fewest doctors keeping the mean wait in queue within a target",
        description="Fewest doctors s with mean wait in queue Wq <= --max-wait-minutes.",
    )
    _add_rates(parser, required=True)
    _add_max_wait(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_guarded(_min_servers))


def _register_max_rate(questions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = questions.add_parser(
        "max-rate",
        help="most patients per hour a number of doctors takes within a wait target",
        description=(
            "Largest arrival rate λ with mean wait in queue Wq <= --max-wait-minutes; with "
            "--session-hours also the whole slots to release per session, scaled up by "
            "1/(1 - p) for a no-show rate p."
        ),
    )
    _add_service_rate(parser, required=True)
    parser.add_argument("--servers", type=int, required=True, metavar="S", help="doctors")
    _add_max_wait(parser)
    parser.add_argument("--session-hours", type=float, metavar="H", help="session length")
    parser.add_argument(
        "--no-show-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of booked patients who do not come (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_guarded(_max_rate))


def _register_simulate(questions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = questions.add_parser(
        "simulate",
        help="simulate the clinic and compare with the formulas",
        description=(
            "Discrete-event simulation, FCFS over --servers doctors. With --arrival-rate: "
            "Poisson arrivals in steady state, batch means. With --slots: patients booked "
            "into evenly spaced slots of one session, optional no-shows and lateness, "
            "independent sessions. Estimates are printed with confidence intervals next to "
            "the M/M/s formula values (for --slots, M/M/s at the same mean rate of patients "
            "who come, for comparison only)."
        ),
    )
    arrivals = parser.add_mutually_exclusive_group(required=True)
    arrivals.add_argument("--arrival-rate", type=float, metavar="L", help="Poisson λ per hour")
    arrivals.add_argument("--slots", type=int, metavar="N", help="booked slots per session")
    _add_service_rate(parser, required=True)
    parser.add_argument("--servers", type=int, required=True, metavar="S", help="doctors")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="default 0.95")
    poisson = parser.add_argument_group("Poisson arrivals (--arrival-rate)")
    poisson.add_argument("--patients", type=int, help="patients measured (default 200000)")
    poisson.add_argument("--warmup-patients", type=int, help="discarded first (default 20000)")
    poisson.add_argument("--batches", type=int, help="batch means (default 20)")
    session = parser.add_argument_group("booked session (--slots)")
    session.add_argument("--session-hours", type=float, metavar="H", help="session length")
    session.add_argument("--no-show", type=float, metavar="P", help="no-show probability")
    session.add_argument(
        "--jitter-sd-minutes", type=float, metavar="J", help="punctuality error s.d."
    )
    session.add_argument(
        "--late-fraction", type=float, metavar="Q", help="share of patients who come late"
    )
    session.add_argument(
        "--late-mean-minutes", type=float, metavar="D", help="mean delay of late patients"
    )
    session.add_argument("--replications", type=int, help="sessions simulated (default 2000)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_guarded(_simulate_handler(parser)))


def _add_rates(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--arrival-rate",
        type=float,
        required=required,
        metavar="L",
        help="λ: patients arriving per hour",
    )
    _add_service_rate(parser, required=required)


def _add_service_rate(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--service-rate",
        type=float,
        required=required,
        metavar="M",
        help="μ: patients one doctor sees per hour (60 / mean consultation minutes)",
    )


def _add_max_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-wait-minutes",
        type=float,
        required=True,
        metavar="W",
        help="target for the mean wait in queue (> 0)",
    )


def _guarded(handler: Handler) -> Handler:
    """Turn a refusal of the model into a message on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CapacityError as exc:
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return 1

    return run


def _model_handler(parser: argparse.ArgumentParser) -> Handler:
    def run(args: argparse.Namespace) -> int:
        missing = [
            option
            for option, value in (
                ("--arrival-rate", args.arrival_rate),
                ("--service-rate", args.service_rate),
                ("--servers", args.servers),
            )
            if value is None
        ]
        if missing:
            parser.error(
                "the following arguments are required: "
                + ", ".join(missing)
                + " (or name a question: min-servers, max-rate, simulate)"
            )
        result = mms_metrics(args.arrival_rate, args.service_rate, args.servers)
        if args.json:
            _print_json(_model_fields(result))
        else:
            print(_model_heading(result))
            print(_model_table(result))
        return 0

    return run


def _min_servers(args: argparse.Namespace) -> int:
    max_wq_hours = args.max_wait_minutes / _MINUTES_PER_HOUR
    servers = min_servers_for_wait(args.arrival_rate, args.service_rate, max_wq_hours)
    result = mms_metrics(args.arrival_rate, args.service_rate, servers)
    if args.json:
        _print_json({"servers": servers, **_model_fields(result)})
        return 0
    print(
        f"fewest doctors for a mean wait in queue of at most "
        f"{args.max_wait_minutes:g} min: {servers}"
    )
    print(_model_heading(result))
    print(_model_table(result))
    return 0


def _max_rate(args: argparse.Namespace) -> int:
    max_wq_hours = args.max_wait_minutes / _MINUTES_PER_HOUR
    rate = max_arrival_rate_for_wait(args.service_rate, args.servers, max_wq_hours)
    slots = None
    if args.session_hours is not None:
        slots = slots_per_session(rate, args.session_hours, no_show_rate=args.no_show_rate)
    if args.json:
        _print_json({"max_arrival_rate": rate, "slots_per_session": slots})
        return 0
    print(
        f"{args.servers} doctors at μ = {args.service_rate:g}/h, mean wait in queue at most "
        f"{args.max_wait_minutes:g} min:"
    )
    print(f"  {'most patients per hour':<30} {rate:.4f}")
    if slots is not None:
        label = f"slots per {args.session_hours:g} h session"
        no_show = f" (booked; no-show rate {args.no_show_rate:.0%})" if args.no_show_rate else ""
        print(f"  {label:<30} {slots}{no_show}")
    return 0


def _simulate_handler(parser: argparse.ArgumentParser) -> Handler:
    def run(args: argparse.Namespace) -> int:
        scheduled = args.slots is not None
        stray = _SESSION_ONLY if not scheduled else _POISSON_ONLY
        given = [_option(name) for name in stray if getattr(args, name) is not None]
        if given:
            mode = "--slots" if not scheduled else "--arrival-rate"
            parser.error(f"{', '.join(given)} only applies with {mode}")
        if scheduled and args.session_hours is None:
            parser.error("--slots needs --session-hours")
        if scheduled:
            scenario = SessionScenario(
                slots=args.slots,
                session_hours=args.session_hours,
                servers=args.servers,
                service_rate=args.service_rate,
                no_show_probability=_or(args.no_show, 0.0),
                jitter_sd_minutes=_or(args.jitter_sd_minutes, 0.0),
                late_probability=_or(args.late_fraction, 0.0),
                late_mean_minutes=_or(args.late_mean_minutes, 0.0),
            )
            simulated = simulate_session(
                scenario,
                seed=args.seed,
                replications=_or(args.replications, 2_000),
                confidence=args.confidence,
            )
            arrival_rate = scenario.expected_arrival_rate
            description = (
                f"{simulated.utilization.samples:,} sessions of {scenario.slots} booked slots "
                f"over {scenario.session_hours:g} h, {scenario.servers} doctors, no-show "
                f"{scenario.no_show_probability:.0%}, punctuality s.d. "
                f"{scenario.jitter_sd_minutes:g} min, late {scenario.late_probability:.0%} "
                f"by {scenario.late_mean_minutes:g} min on average"
            )
            formula_note = (
                f"M/M/s column: Poisson arrivals at the same mean rate "
                f"(1 - p)·N/H = {arrival_rate:.4g}/h, for comparison only"
            )
        else:
            simulated = simulate_mms(
                args.arrival_rate,
                args.service_rate,
                args.servers,
                seed=args.seed,
                patients=_or(args.patients, 200_000),
                warmup_patients=_or(args.warmup_patients, 20_000),
                batches=_or(args.batches, 20),
                confidence=args.confidence,
            )
            arrival_rate = args.arrival_rate
            description = (
                f"Poisson arrivals at {arrival_rate:g}/h, {args.servers} doctors, "
                f"{simulated.patients:,} patients in {simulated.utilization.samples} batches"
            )
            formula_note = "M/M/s column: exact formulas"
        formula = _formula_or_none(arrival_rate, args.service_rate, args.servers)
        if args.json:
            _print_json(_simulation_fields(simulated, formula, args.confidence))
            return 0
        print(f"simulation (seed {simulated.seed}): {description}")
        print(f"{formula_note}; intervals at {args.confidence:.0%} confidence")
        print(_simulation_table(simulated, formula))
        return 0

    return run


def _formula_or_none(arrival_rate: float, service_rate: float, servers: int) -> MMsResult | None:
    try:
        return mms_metrics(arrival_rate, service_rate, servers)
    except UnstableSystemError:
        return None


def _model_fields(result: MMsResult) -> dict[str, float]:
    return {key: float(getattr(result, key)) for key in _MODEL_KEYS}


def _model_heading(result: MMsResult) -> str:
    return (
        f"M/M/s: λ = {result.arrival_rate:g} patients/h, μ = {result.service_rate:g} "
        f"patients/h per doctor, s = {result.servers} doctors "
        f"(offered load {result.offered_load:.4g} Erlangs)"
    )


def _model_table(result: MMsResult) -> str:
    return "\n".join(
        f"  {_ROW_LABELS[key]:<30} {_format_value(key, getattr(result, key))}"
        for key in _MODEL_KEYS
    )


def _simulation_fields(
    simulated: SimulationResult, formula: MMsResult | None, confidence: float
) -> dict[str, Any]:
    estimates = {key: getattr(simulated, key) for key in _MODEL_KEYS}
    if simulated.overtime_hours is not None:
        estimates["overtime_hours"] = simulated.overtime_hours
    return {
        "method": simulated.method,
        "seed": simulated.seed,
        "confidence": confidence,
        "samples": simulated.utilization.samples,
        "patients": simulated.patients,
        "simulated": {key: _estimate_fields(value) for key, value in estimates.items()},
        "formula": _model_fields(formula) if formula is not None else None,
    }


def _estimate_fields(estimate: Estimate) -> dict[str, float]:
    return {
        "mean": estimate.mean,
        "low": estimate.low,
        "high": estimate.high,
        "half_width": estimate.half_width,
    }


def _simulation_table(simulated: SimulationResult, formula: MMsResult | None) -> str:
    rows = [f"  {'':<30} {'simulated [interval]':<34} M/M/s formula"]
    keys = list(_MODEL_KEYS)
    if simulated.overtime_hours is not None:
        keys.append("overtime_hours")
    for key in keys:
        estimate: Estimate = getattr(simulated, key)
        cell = (
            f"{_format_number(key, estimate.mean)} "
            f"[{_format_number(key, estimate.low)}, {_format_number(key, estimate.high)}]"
        )
        if key == "overtime_hours":
            exact = "-"
        elif formula is None:
            exact = "unstable (ρ >= 1)"
        else:
            exact = _format_number(key, getattr(formula, key))
        rows.append(f"  {_ROW_LABELS[key]:<30} {cell:<34} {exact}")
    return "\n".join(rows)


def _format_value(key: str, value: float) -> str:
    if key.endswith("_hours"):
        return f"{value * _MINUTES_PER_HOUR:.4g} min ({value:.4g} h)"
    if key in ("utilization", "p_wait"):
        return f"{value:.2%}"
    return f"{value:.4g} patients"


def _format_number(key: str, value: float) -> str:
    if key.endswith("_hours"):
        return f"{value * _MINUTES_PER_HOUR:.4g} min"
    return f"{value:.4g}"


def _print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=2, allow_nan=False))


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
