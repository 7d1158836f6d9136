"""Exact steady-state results of the M/M/s queue (Erlang C).

Patients arrive as a Poisson process of rate λ per hour, each needs an exponentially
distributed consultation of mean 1/μ hours, ``s`` doctors work in parallel from one
first-come-first-served queue, and the queue has no limit. With offered load a = λ/μ and
utilisation ρ = a/s < 1:

- Erlang B by the recurrence B(0) = 1, B(k) = a·B(k-1) / (k + a·B(k-1)); every step is a
  ratio of positive numbers below 1, so it neither overflows nor loses precision for
  thousands of servers (no factorials, no a^s);
- Erlang C, the probability an arriving patient has to wait: C = B / (1 - ρ(1 - B));
- Wq = C / (sμ - λ), W = Wq + 1/μ, and by Little's law Lq = λ·Wq, L = λ·W.
"""

from __future__ import annotations

from dataclasses import dataclass

from inventory.capacity.errors import InvalidInputError, UnstableSystemError
from inventory.capacity.validation import require_positive, require_servers


@dataclass(frozen=True, slots=True)
class MMsResult:
    """Steady-state figures of an M/M/s queue; rates per hour, times in hours."""

    arrival_rate: float
    """λ, patients arriving per hour."""
    service_rate: float
    """μ, patients one doctor sees per hour (1 / mean consultation time)."""
    servers: int
    """s, doctors working in parallel."""
    utilization: float
    """ρ = λ/(sμ): long-run fraction of time a doctor is busy."""
    p_wait: float
    """Erlang C: probability that an arriving patient finds every doctor busy."""
    wq_hours: float
    """Mean wait in the queue before the consultation starts."""
    w_hours: float
    """Mean time in the department: wait plus consultation."""
    lq: float
    """Mean number of patients waiting (not yet with a doctor)."""
    l: float  # noqa: E741 - the textbook name, fixed by the issue and the JSON output
    """Mean number of patients in the department, waiting or being seen."""

    @property
    def offered_load(self) -> float:
        """a = λ/μ in Erlangs: the mean number of busy doctors."""
        return self.arrival_rate / self.service_rate


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability B(s, a) of the Erlang loss system, by the stable recurrence."""
    servers = require_servers(servers)
    load = require_positive("offered load", offered_load)
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = erlang_b_step(blocking, k, load)
    return blocking


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability of waiting C(s, a) in the M/M/s queue; needs a < s."""
    servers = require_servers(servers)
    load = require_positive("offered load", offered_load)
    utilization = load / servers
    if utilization >= 1.0:
        raise UnstableSystemError(utilization)
    return _erlang_c_from_b(erlang_b(servers, load), utilization)


def mms_metrics(arrival_rate: float, service_rate: float, servers: int) -> MMsResult:
    """Exact M/M/s figures for λ and μ per hour and ``servers`` doctors.

    Raises InvalidInputError for non-finite or non-positive rates and for a server count
    that is not an integer in [1, 1 000 000]; UnstableSystemError when λ >= sμ.
    """
    arrival, service, count = check_mms_inputs(arrival_rate, service_rate, servers)
    load = arrival / service
    blocking = 1.0
    for k in range(1, count + 1):
        blocking = erlang_b_step(blocking, k, load)
    return result_from_erlang_b(arrival, service, count, blocking)


def result_from_erlang_b(
    arrival_rate: float, service_rate: float, servers: int, blocking: float
) -> MMsResult:
    """Finish the M/M/s figures from an already computed Erlang B value.

    The inverse questions walk the recurrence one server at a time and call this at each
    step, so they agree bit for bit with ``mms_metrics``. Inputs must already be checked.
    """
    utilization = arrival_rate / (servers * service_rate)
    if utilization >= 1.0:
        raise UnstableSystemError(utilization)
    p_wait = _erlang_c_from_b(blocking, utilization)
    wq_hours = p_wait / (servers * service_rate - arrival_rate)
    w_hours = wq_hours + 1.0 / service_rate
    return MMsResult(
        arrival_rate=arrival_rate,
        service_rate=service_rate,
        servers=servers,
        utilization=utilization,
        p_wait=p_wait,
        wq_hours=wq_hours,
        w_hours=w_hours,
        lq=arrival_rate * wq_hours,
        l=arrival_rate * w_hours,
    )


def check_mms_inputs(
    arrival_rate: float, service_rate: float, servers: int
) -> tuple[float, float, int]:
    """Validate λ, μ and s as ``mms_metrics`` does and return them as float, float, int."""
    arrival = require_positive("arrival rate", arrival_rate)
    service = require_positive("service rate", service_rate)
    count = require_servers(servers)
    load = arrival / service
    if not (load > 0.0 and load < float("inf")):
        # λ/μ overflowed or underflowed: the inputs are finite but span > 600 decades.
        raise InvalidInputError(
            f"offered load λ/μ = {arrival!r}/{service!r} is not representable as a float"
        )
    return arrival, service, count


def erlang_b_step(previous: float, k: int, load: float) -> float:
    """One step of the Erlang B recurrence: B(k) from B(k-1) at offered load ``load``."""
    carried = load * previous
    return carried / (k + carried)


def _erlang_c_from_b(blocking: float, utilization: float) -> float:
    # 1 - ρ(1 - B) >= 1 - ρ > 0, so the division is safe for every stable system.
    return blocking / (1.0 - utilization * (1.0 - blocking))
