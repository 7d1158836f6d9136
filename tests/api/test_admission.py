"""The admission gate's Retry-After (inventory/api/admission.py): drawn at random, never
below INVENTORY_RETRY_AFTER_S nor above INVENTORY_RETRY_AFTER_MAX_S, wider the more the
process sheds per request it answers. The 503s themselves go through HTTP in
test_auth.py."""

from __future__ import annotations

import random

import pytest

from inventory.api.admission import AdmissionGate
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
