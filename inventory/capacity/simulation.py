"""Discrete-event simulation of a first-come-first-served clinic with ``s`` doctors.

Two questions, one engine:

- ``simulate_mms`` checks the formulas: Poisson arrivals and exponential consultations in
  steady state, one long run after a warm-up, split into batches whose means give
  Student-t confidence intervals (batch means).
- ``simulate_session`` models what the formulas cannot: patients booked into evenly spaced
  slots of one session (``SessionScenario``), who may not come at all (no-shows), come a
  little early or late (punctuality jitter), or come late by a random delay. Each
  replication is one independent session, and the intervals are across replications.

The engine: patients are taken in order of arrival; each goes to the doctor who becomes
free first (a heap of the times each doctor becomes free), starting at the later of their
arrival and that time. This is exactly FCFS with ``s`` parallel servers (the Lindley
recurrence generalised to ``s`` servers).

Random numbers for a session are drawn in a fixed order and shape whatever the scenario
says, so two scenarios run with the same seed, slots and replications share patients
(common random numbers): with a higher no-show probability exactly a superset of the same
patients stays away, which makes the comparison of scenarios sharp.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from inventory.capacity.errors import InvalidInputError
from inventory.capacity.intervals import Estimate, mean_with_interval
from inventory.capacity.mms import mms_metrics
from inventory.capacity.validation import (
    require_count,
    require_non_negative,
    require_positive,
    require_probability,
)

# Bounds that keep one call of either simulation to seconds, not hours.
MAX_SIMULATED_SERVERS = 10_000
MAX_SIMULATED_PATIENTS = 20_000_000

_MINUTES_PER_HOUR = 60.0

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SessionScenario:
    """One clinic session whose patients arrive at their booked slot times.

    The session runs from time 0 to ``session_hours``; ``slots`` patients are booked at
    evenly spaced times 0, H/N, 2H/N, ... Each booked patient independently does not come
    with probability ``no_show_probability``. Those who come arrive at their slot time plus
    a normal punctuality error with standard deviation ``jitter_sd_minutes`` and, with
    probability ``late_probability``, an extra exponential delay of mean
    ``late_mean_minutes``. Consultations are exponential with rate ``service_rate`` per
    hour; ``servers`` doctors see patients first come, first served, from time 0 (a
    patient who arrives before the session opens waits for it, and that time is not
    counted as waiting). Doctors keep going past ``session_hours`` until the queue is empty.
    """

    slots: int
    session_hours: float
    servers: int
    service_rate: float
    no_show_probability: float = 0.0
    jitter_sd_minutes: float = 0.0
    late_probability: float = 0.0
    late_mean_minutes: float = 0.0

    def __post_init__(self) -> None:
        require_count("slots", self.slots, maximum=MAX_SIMULATED_PATIENTS)
        require_positive("session length (hours)", self.session_hours)
        require_count("servers", self.servers, maximum=MAX_SIMULATED_SERVERS)
        require_positive("service rate", self.service_rate)
        require_probability("no-show probability", self.no_show_probability)
        require_non_negative("punctuality jitter (minutes)", self.jitter_sd_minutes)
        require_probability("late probability", self.late_probability, allow_one=True)
        require_non_negative("mean lateness (minutes)", self.late_mean_minutes)

    @property
    def slot_interval_hours(self) -> float:
        """Time between two consecutive booked slots."""
        return self.session_hours / self.slots

    @property
    def expected_arrival_rate(self) -> float:
        """Patients who come per session hour: (1 - p)·N / H, the Poisson-model λ."""
        return (1.0 - self.no_show_probability) * self.slots / self.session_hours

    @property
    def expected_utilization(self) -> float:
        """Expected consultation work over doctor time in the session: (1 - p)·N / (H·s·μ)."""
        return self.expected_arrival_rate / (self.servers * self.service_rate)


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Estimates with confidence intervals from one simulation call; times in hours.

    For ``simulate_mms`` the figures are the steady-state ones of ``MMsResult``. For
    ``simulate_session`` they are per session: waits and times in system are averaged
    over the patients who came; ``lq`` and ``l`` are patient-hours waiting (in the
    department) divided by the session length; ``utilization`` is consultation hours
    divided by doctor hours in the session (above 1 means overtime is certain).
    """

    wq_hours: Estimate
    w_hours: Estimate
    lq: Estimate
    l: Estimate  # noqa: E741 - the textbook name, as in MMsResult
    utilization: Estimate
    p_wait: Estimate
    overtime_hours: Estimate | None
    """Session only: how long the last consultation runs past the end of the session."""
    method: Literal["batch_means", "replications"]
    seed: int
    patients: int
    """Patients whose waits were measured (after warm-up; who came, for sessions)."""


def simulate_mms(
    arrival_rate: float,
    service_rate: float,
    servers: int,
    *,
    seed: int,
    patients: int = 200_000,
    warmup_patients: int = 20_000,
    batches: int = 20,
    confidence: float = 0.95,
) -> SimulationResult:
    """Simulate the steady-state M/M/s queue and estimate its figures by batch means.

    ``warmup_patients`` are simulated first and discarded (the run starts empty); the next
    ``patients`` are split into ``batches`` consecutive batches of equal size (a remainder
    is dropped). Per batch: Wq, W and P(wait) are patient averages; Lq, L and utilisation
    are patient-hours waiting, in system and in consultation divided by the batch's time
    span (Little's law on the batch). Batches must be long compared with the queue's
    relaxation time, which grows like 1/(1 - ρ)^2: raise ``patients`` as ρ nears 1.
    """
    reference = mms_metrics(arrival_rate, service_rate, servers)  # validates, refuses ρ >= 1
    count = require_count("servers", servers, maximum=MAX_SIMULATED_SERVERS)
    measured = require_count("patients", patients, maximum=MAX_SIMULATED_PATIENTS)
    warmup = require_count(
        "warm-up patients", warmup_patients, minimum=0, maximum=MAX_SIMULATED_PATIENTS
    )
    batch_count = require_count("batches", batches, minimum=2, maximum=measured)
    seed = require_count("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)

    total = warmup + measured + 1  # one extra arrival closes the last batch's time span
    arrivals = np.cumsum(rng.standard_exponential(total) / reference.arrival_rate)
    services = rng.standard_exponential(total) / reference.service_rate
    starts = _fcfs_start_times(arrivals, services, count, opens_at=0.0)
    waits = starts - arrivals

    batch_size = measured // batch_count
    edges = warmup + batch_size * np.arange(batch_count + 1)
    spans = arrivals[edges[1:]] - arrivals[edges[:-1]]
    shape = (batch_count, batch_size)
    batch_waits = waits[edges[0] : edges[-1]].reshape(shape)
    batch_services = services[edges[0] : edges[-1]].reshape(shape)
    wait_sums = batch_waits.sum(axis=1)
    sojourn_sums = wait_sums + batch_services.sum(axis=1)
    return SimulationResult(
        wq_hours=mean_with_interval(batch_waits.mean(axis=1), confidence),
        w_hours=mean_with_interval(sojourn_sums / batch_size, confidence),
        lq=mean_with_interval(wait_sums / spans, confidence),
        l=mean_with_interval(sojourn_sums / spans, confidence),
        utilization=mean_with_interval(batch_services.sum(axis=1) / (count * spans), confidence),
        p_wait=mean_with_interval((batch_waits > 0.0).mean(axis=1), confidence),
        overtime_hours=None,
        method="batch_means",
        seed=seed,
        patients=batch_size * batch_count,
    )


def simulate_session(
    scenario: SessionScenario,
    *,
    seed: int,
    replications: int = 2_000,
    confidence: float = 0.95,
) -> SimulationResult:
    """Simulate ``replications`` independent sessions of ``scenario``.

    Each figure is computed per session and the interval is a Student-t interval across
    sessions. A session nobody comes to counts as one with no waiting.
    """
    runs = require_count("replications", replications, minimum=2)
    if runs * scenario.slots > MAX_SIMULATED_PATIENTS:
        raise InvalidInputError(
            f"replications x slots must be at most {MAX_SIMULATED_PATIENTS:,}, "
            f"got {runs * scenario.slots:,}"
        )
    seed = require_count("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    shape = (runs, scenario.slots)
    # Always draw every stream in this order (see the module docstring on common numbers).
    show_draws = rng.random(shape)
    jitter_draws = rng.standard_normal(shape)
    late_draws = rng.random(shape)
    delay_draws = rng.standard_exponential(shape)
    service_draws = rng.standard_exponential(shape)

    slot_times = scenario.slot_interval_hours * np.arange(scenario.slots)
    comes = show_draws >= scenario.no_show_probability
    lateness = np.where(
        late_draws < scenario.late_probability,
        delay_draws * (scenario.late_mean_minutes / _MINUTES_PER_HOUR),
        0.0,
    )
    arrivals_all = slot_times + jitter_draws * (scenario.jitter_sd_minutes / _MINUTES_PER_HOUR)
    arrivals_all = arrivals_all + lateness
    services_all = service_draws / scenario.service_rate

    per_run = np.zeros((7, runs))
    measured = 0
    for run in range(runs):
        mask = comes[run]
        arrivals = arrivals_all[run][mask]
        services = services_all[run][mask]
        if arrivals.size == 0:
            continue
        order = np.argsort(arrivals, kind="stable")
        arrivals, services = arrivals[order], services[order]
        starts = _fcfs_start_times(arrivals, services, scenario.servers, opens_at=0.0)
        waits = starts - np.maximum(arrivals, 0.0)
        sojourns = waits + services
        measured += int(arrivals.size)
        per_run[:, run] = (
            waits.mean(),
            sojourns.mean(),
            waits.sum() / scenario.session_hours,
            sojourns.sum() / scenario.session_hours,
            services.sum() / (scenario.servers * scenario.session_hours),
            (waits > 0.0).mean(),
            max(0.0, float((starts + services).max()) - scenario.session_hours),
        )
    wq, w, lq, l_in_system, utilization, p_wait, overtime = (
        mean_with_interval(row, confidence) for row in per_run
    )
    return SimulationResult(
        wq_hours=wq,
        w_hours=w,
        lq=lq,
        l=l_in_system,
        utilization=utilization,
        p_wait=p_wait,
        overtime_hours=overtime,
        method="replications",
        seed=seed,
        patients=measured,
    )


def _fcfs_start_times(
    arrivals: FloatArray, services: FloatArray, servers: int, *, opens_at: float
) -> FloatArray:
    """Consultation start times for patients sorted by arrival, FCFS over ``servers``."""
    free_at = [opens_at] * servers  # a list of equal values is already a heap
    starts: list[float] = []
    append = starts.append
    for arrival, service in zip(arrivals.tolist(), services.tolist(), strict=True):
        earliest = free_at[0]
        start = arrival if arrival >= earliest else earliest
        heapq.heapreplace(free_at, start + service)
        append(start)
    return np.asarray(starts, dtype=np.float64)
