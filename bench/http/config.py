"""What a run of the http benchmark is: its sides, phases, thresholds and settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
#: The targets against the floor (``--floor``): api/floor closed-loop throughput at
#: least this, server CPU per reserve at most this many times the bare handler's, and
#: p99 at half the API's own maximum at most this many times the floor's at that rate.
TARGET_API_TO_FLOOR = 0.8
TARGET_CPU_RATIO = 2.5
TARGET_FLOOR_P99_RATIO = 3.0
#: A generator using more of a core than this may have limited the server.
GENERATOR_BUSY_PCT = 90.0
#: Other processes using more than this (% of one core) during a phase: disturbed.
DISTURBED_PCT = 5.0
#: A paced phase that reached less than this fraction of its target rate was overloaded.
PACED_SHORTFALL = 0.95
#: The longest the api's warm-up goes on (after the timed one) to fill its caches.
WARMUP_EXTRA_S = 60.0


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
    #: Also measure the floor (bench/http/floor.py: the bare handler plus the API's
    #: reserve call and nothing else) in a closed-loop phase of each round, and at the
    #: paced_api rate (the same fraction of the API's own max).
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
