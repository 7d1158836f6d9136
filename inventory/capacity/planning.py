"""Inverse questions of the M/M/s model: how many doctors, how many patients, how many slots.

The waiting-time target is the mean wait in the queue, Wq (hours), and it is met when
Wq <= target. The target must be a finite number > 0: in an M/M/s queue with λ > 0 every
patient has a positive chance of waiting, so Wq > 0 and a target of 0 can never be met.
"""

from __future__ import annotations

import math

from inventory.capacity.errors import TargetUnreachableError
from inventory.capacity.mms import (
    check_mms_inputs,
    erlang_b_step,
    mms_metrics,
    result_from_erlang_b,
)
from inventory.capacity.validation import (
    MAX_SERVERS,
    require_non_negative,
    require_positive,
    require_probability,
    require_servers,
)

# Bisection stops when the bracket is narrower than this fraction of its upper end.
_RELATIVE_TOLERANCE = 1e-12
# Enough halvings to walk from s·μ down to the smallest normal float and then some.
_MAX_BISECTIONS = 2_000


def min_servers_for_wait(arrival_rate: float, service_rate: float, max_wq_hours: float) -> int:
    """Fewest doctors s such that the mean wait in queue Wq(λ, μ, s) <= ``max_wq_hours``.

    Wq falls as s grows, so the first s that meets the target is the answer; fewer doctors
    either miss it or are unstable (s <= λ/μ). Walks the Erlang B recurrence once, so the
    cost is O(answer). Raises InvalidInputError for nonsense input and
    TargetUnreachableError if more than 1 000 000 doctors would be needed.
    """
    arrival, service, _ = check_mms_inputs(arrival_rate, service_rate, 1)
    target = require_positive("max wait in queue (hours)", max_wq_hours)
    load = arrival / service
    blocking = 1.0
    for servers in range(1, MAX_SERVERS + 1):
        blocking = erlang_b_step(blocking, servers, load)
        if servers <= load:
            continue  # unstable: no steady state, the wait grows without bound
        if result_from_erlang_b(arrival, service, servers, blocking).wq_hours <= target:
            return servers
    raise TargetUnreachableError(
        f"more than {MAX_SERVERS:,} doctors would be needed for a mean wait of "
        f"{target!r} hours at λ = {arrival!r}/h, μ = {service!r}/h"
    )


def max_arrival_rate_for_wait(service_rate: float, servers: int, max_wq_hours: float) -> float:
    """Largest arrival rate λ (per hour) that ``servers`` doctors take with Wq <= target.

    Wq is continuous and strictly increasing in λ on (0, sμ), from 0 to infinity, so the
    answer is found by bisection to a relative tolerance of 1e-12; the value returned
    always meets the target and is strictly below s·μ. It is 0.0 only when the target is
    so small that no positive float rate meets it.
    """
    service = require_positive("service rate", service_rate)
    count = require_servers(servers)
    target = require_positive("max wait in queue (hours)", max_wq_hours)
    feasible = 0.0  # Wq(0) = 0 meets any positive target
    infeasible = count * service  # Wq -> infinity as λ -> sμ
    for _ in range(_MAX_BISECTIONS):
        if infeasible - feasible <= _RELATIVE_TOLERANCE * infeasible:
            break
        middle = 0.5 * (feasible + infeasible)
        if not feasible < middle < infeasible:
            break  # the bracket is down to adjacent floats
        if mms_metrics(middle, service, count).wq_hours <= target:
            feasible = middle
        else:
            infeasible = middle
    return feasible


def slots_per_session(
    arrival_rate: float, session_hours: float, *, no_show_rate: float = 0.0
) -> int:
    """Whole slots to release in a session so that the patients who come arrive at ``arrival_rate``.

    ``floor(arrival_rate · session_hours / (1 - no_show_rate))``: with a no-show rate p the
    patients who come are a thinned stream of rate (1 - p) x booked rate, so the session
    can book 1/(1 - p) times as many slots. Rounding down keeps the target met.
    """
    rate = require_non_negative("arrival rate", arrival_rate)
    hours = require_positive("session length (hours)", session_hours)
    no_show = require_probability("no-show rate", no_show_rate)
    return math.floor(rate * hours / (1.0 - no_show))
