"""Fault injection: what can go wrong between us and a HIS, on demand.

Each fault has a ``*_rate`` (probability per request, from the seeded RNG) and a
``*_next`` (the next N matching requests get it for sure: what tests use). Faults apply
to FHIR requests whose method is in ``methods`` and whose resource type is in
``resources`` (empty = all); never to the admin API.

- latency: ``latency_ms`` plus uniform ``[0, jitter_ms]`` before the request is handled.
- error: answer ``error_status`` (503 or 500) with an OperationOutcome; nothing handled.
- timeout: hang ``hang_s`` before handling (longer than the client waits); nothing is
  committed while it hangs, then it answers 503.
- drop: handle the request (commit), then close the connection without answering.
- duplicate: handle the request twice, as a replaying proxy would, and answer the
  second result (a conditional create then answers 200 with the first's appointment).
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

_RATES = ("error_rate", "timeout_rate", "drop_rate", "duplicate_rate")
_COUNTS = ("error_next", "timeout_next", "drop_next", "duplicate_next")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """The faults in force. Rates are probabilities in [0, 1]."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_next: int = 0
    error_status: int = 503
    timeout_rate: float = 0.0
    timeout_next: int = 0
    hang_s: float = 30.0
    drop_rate: float = 0.0
    drop_next: int = 0
    duplicate_rate: float = 0.0
    duplicate_next: int = 0
    methods: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for name in (*_COUNTS, "latency_ms", "jitter_ms", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.error_status not in (500, 502, 503, 504):
            raise ValueError("error_status must be 500, 502, 503 or 504")

    def updated(self, changes: dict[str, Any]) -> FaultConfig:
        """A copy with ``changes`` (JSON values) applied; unknown keys are refused."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault setting {key!r}")
            if key in ("methods", "resources"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key} must be a list of strings")
                clean[key] = tuple(v.upper() if key == "methods" else v for v in value)
            elif key in (*_COUNTS, "error_status"):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"{key} must be an integer")
                clean[key] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"{key} must be a number")
                clean[key] = float(value)
        return replace(self, **clean)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON."""
        data = asdict(self)
        data["methods"] = list(self.methods)
        data["resources"] = list(self.resources)
        return data


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one request."""

    delay_s: float = 0.0
    timeout: bool = False
    error: bool = False
    drop: bool = False
    duplicate: bool = False


@dataclass(slots=True)
class RequestStats:
    """What the simulator saw: totals, concurrency, arrival times, faults injected."""

    total: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    #: Arrival times (monotonic seconds) of the latest requests.
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def enter(self, method: str, resource: str) -> None:
        """A FHIR request arrived."""
        self.total += 1
        self.by_method[method] += 1
        self.by_resource[resource] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.arrivals.append(time.monotonic())

    def leave(self) -> None:
        """A FHIR request was answered (or dropped, or abandoned)."""
        self.in_flight -= 1

    def to_json(self, *, with_arrivals: bool) -> dict[str, Any]:
        """The counters as JSON; arrival times on request."""
        data: dict[str, Any] = {
            "total": self.total,
            "by_method": dict(self.by_method),
            "by_resource": dict(self.by_resource),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "injected": dict(self.injected),
        }
        if with_arrivals:
            data["arrivals"] = list(self.arrivals)
        return data


class FaultInjector:
    """Decides each request's fate from the config and a seeded RNG."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.stats = RequestStats()

    def reset_stats(self) -> None:
        """Forget what was seen (keeps in-flight requests counted)."""
        in_flight = self.stats.in_flight
        self.stats = RequestStats(in_flight=in_flight, max_in_flight=in_flight)

    def decide(self, method: str, resource: str) -> Decision:
        """The faults for one request (consuming ``*_next`` counters)."""
        config = self.config
        if (config.methods and method not in config.methods) or (
            config.resources and resource not in config.resources
        ):
            return Decision()
        delay_s = config.latency_ms / 1000.0
        if config.jitter_ms:
            delay_s += self.rng.uniform(0.0, config.jitter_ms / 1000.0)
        # A request that times out or fails is never handled: it cannot also be dropped
        # or duplicated (and their counters are kept for the next request).
        timeout = self._pick("timeout")
        error = not timeout and self._pick("error")
        handled = not (timeout or error)
        picked = {
            "timeout": timeout,
            "error": error,
            "drop": handled and self._pick("drop"),
            "duplicate": handled and self._pick("duplicate"),
        }
        for name, chosen in picked.items():
            if chosen:
                self.stats.injected[name] += 1
        return Decision(delay_s=delay_s, **picked)

    def _pick(self, name: str) -> bool:
        counter = f"{name}_next"
        remaining = getattr(self.config, counter)
        if remaining > 0:
            self.config = replace(self.config, **{counter: remaining - 1})
            return True
        rate: float = getattr(self.config, f"{name}_rate")
        return rate > 0 and self.rng.random() < rate
