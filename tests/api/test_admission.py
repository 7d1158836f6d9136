"""The admission gate's Retry-After (inventory/api/admission.py): drawn at random, never
below INVENTORY_RETRY_AFTER_S nor above INVENTORY_RETRY_AFTER_MAX_S, wider the more the
process sheds per request it answers. The 503s themselves go through HTTP in
test_auth.py. And the admitted lane: a reserve carrying a waiting room's admission token
is not shed by the bound."""

from __future__ import annotations

import random

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from inventory.api.admission import GATE_KEY, PENDING_KEY, AdmissionGate, admit_reserve
from inventory.errors import OverloadedError


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _shed(gate: AdmissionGate, count: int) -> list[int]:
    values = []
    for _ in range(count):
        with pytest.raises(OverloadedError) as refused:
            gate.admit("/v1/holds")
        values.append(int(refused.value.context["retry_after_s"]))
    return values


def _answer(gate: AdmissionGate, count: int) -> None:
    for _ in range(count):
        gate.in_flight -= 1  # make room, as if one left, then take it again
        assert gate.admit("/v1/holds")
        gate.leave()
        gate.in_flight += 1


def test_retry_after_grows_with_the_shed_rate_within_its_bounds() -> None:
    """Little shedding: 1-2 s; a crowd ten times the answer rate: spread up to 11 s;
    a crowd a thousand times larger: spread up to the bound, never past it."""
    clock = _Clock()
    gate = AdmissionGate(
        1, retry_after_s=1, retry_after_max_s=30, clock=clock, rng=random.Random(7)
    )
    assert gate.admit("/v1/holds")  # the one place is taken from here on
    _answer(gate, 100)
    assert set(_shed(gate, 1)) <= {1, 2}
    clock.now += 1
    _answer(gate, 100)
    values = _shed(gate, 1000)
    assert (min(values), max(values)) == (1, 11)
    clock.now += 1
    _answer(gate, 10)
    values = _shed(gate, 10_000)
    assert (min(values), max(values)) == (1, 30)
    # Spread: no second gets more than a small share of the crowd back.
    assert max(values.count(v) for v in set(values)) < len(values) / 10


def test_retry_after_settles_back_once_the_crowd_is_gone() -> None:
    """Two quiet seconds later the window is narrow again."""
    clock = _Clock()
    gate = AdmissionGate(
        1, retry_after_s=2, retry_after_max_s=20, clock=clock, rng=random.Random(3)
    )
    assert gate.admit("/v1/holds")
    assert max(_shed(gate, 5000)) == 20
    clock.now += 2
    _answer(gate, 100)
    assert set(_shed(gate, 50)) <= {2, 3, 4}


def test_health_is_never_shed() -> None:
    """Health, readiness and metrics pass a full gate and are not counted."""
    gate = AdmissionGate(1)
    assert gate.admit("/v1/holds")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert gate.admit(path) is False
    assert gate.in_flight == 1


# -- the admitted lane: a room's admitted reserves are never shed by the bound ------------


def _reserve_request() -> web.Request:
    return make_mocked_request("POST", "/v1/holds")


def test_a_reserve_past_the_bound_waits_for_its_body() -> None:
    """Past the bound a reserve is neither counted nor shed by the path alone; without
    an admission token it is shed once its body is read, with one it joins the lane."""
    gate = AdmissionGate(1)
    assert gate.admit("/v1/holds", "POST")
    with pytest.raises(OverloadedError):
        gate.admit("/v1/patients", "POST")
    with pytest.raises(OverloadedError):
        gate.admit("/v1/holds", "GET")  # the list of holds is no reserve
    plain, admitted = _reserve_request(), _reserve_request()
    for request in (plain, admitted):
        assert gate.admit("/v1/holds", "POST") is None
        request[PENDING_KEY] = gate
    shed_before = gate.shed_total
    with pytest.raises(OverloadedError):
        admit_reserve(plain, admission_token="")
    assert gate.shed_total == shed_before + 1
    admit_reserve(admitted, admission_token="a" * 40)
    assert admitted[GATE_KEY] is gate.lane
    assert (gate.in_flight, gate.lane.in_flight, gate.total_in_flight) == (1, 1, 2)
    admitted[GATE_KEY].leave()
    assert gate.total_in_flight == 1


def test_an_admitted_reserve_counted_under_the_bound_moves_to_the_lane() -> None:
    """It leaves the gate's count (making room for others) without counting as an
    answer in the shed-rate window."""
    gate = AdmissionGate(2)
    request = _reserve_request()
    assert gate.admit("/v1/holds", "POST")
    request[GATE_KEY] = gate
    admit_reserve(request, admission_token="b" * 40)
    assert (gate.in_flight, gate.lane.in_flight) == (0, 1)
    assert gate._answered == [0, 0]
    plain = _reserve_request()
    assert gate.admit("/v1/holds", "POST")
    plain[GATE_KEY] = gate
    admit_reserve(plain, admission_token="")  # under the bound: nothing changes
    assert plain[GATE_KEY] is gate
    assert gate.in_flight == 1


def test_the_lane_has_a_bound_of_its_own() -> None:
    """Forged tokens cannot grow a process's work without limit: the lane holds four
    times the gate's bound, then sheds too."""
    gate = AdmissionGate(2)
    assert gate.lane.limit == 8
    for _ in range(8):
        request = _reserve_request()
        request[PENDING_KEY] = gate
        admit_reserve(request, admission_token="c" * 40)
    request = _reserve_request()
    request[PENDING_KEY] = gate
    with pytest.raises(OverloadedError):
        admit_reserve(request, admission_token="c" * 40)
    assert gate.lane.in_flight == 8
