"""Fairness of the draw with 10,000 joiners spread over the waiting room's window: drawn
position is independent of join time (Spearman's |rho| < 0.05, and a chi-square test of
join-time deciles against position deciles), and the published seed recomputes the
queue Redis holds. A deliberately biased order fails the same statistics (the test can
fail)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
from scipy import stats

from inventory.release import draw
from inventory.release.rooms import RoomStore
from inventory.release.service import decile_chi_square, fairness_stats, spearman
from inventory.store import keys

from .conftest import START, Scenario

JOINERS = 10_000
WINDOW_MS = 30 * 60 * 1000
T0 = START + timedelta(minutes=31)
T0_MS = int(T0.timestamp() * 1000)
#: The chi-square's 99.99th percentile at 81 degrees of freedom: a fair draw fails it
#: once in ten thousand runs.
CHI_LIMIT = float(stats.chi2.ppf(0.9999, 81))


@pytest.mark.timeout(600)
async def test_the_draw_is_independent_of_join_time(scenario: Scenario) -> None:
    """10,000 joiners over 30 minutes: |rho| < 0.05, the deciles' chi-square below its
    99.99th percentile, the statistics agree with scipy's, and the revealed seed gives
    exactly the queue's order."""
    spec = scenario.schedule({"slot-a": 500}, release_at=T0)
    await scenario.store.load_schedule(spec)
    rooms = RoomStore(scenario.store)
    release_id = keys.release_id_for(scenario.department_id, scenario.visit_date, "fair")
    await rooms.open(
        release_id,
        [spec.schedule_id],
        hospital_id=scenario.hospital_id,
        t0_ms=T0_MS,
        window_ms=WINDOW_MS,
        factor=1.2,
        token_ms=60_000,
    )
    step_ms = WINDOW_MS // JOINERS
    scenario.clock.now_ms = T0_MS - WINDOW_MS
    joined_at: dict[str, int] = {}
    for chunk in range(0, JOINERS, 250):
        # One clock instant per chunk of 250 (the clock is shared by the calls in flight).
        tickets = await asyncio.gather(
            *(
                rooms.join(release_id, account_id=f"a{i}", patient_id=f"p{i}")
                for i in range(chunk, chunk + 250)
            )
        )
        for ticket, _ in tickets:
            joined_at[ticket] = scenario.clock.now_ms
        scenario.clock.now_ms += step_ms * 250
    assert scenario.clock.now_ms <= T0_MS
    scenario.clock.now_ms = T0_MS
    while (await rooms.advance(release_id)).state == "open":
        pass
    snap = await rooms.snapshot(release_id)
    assert snap is not None
    assert snap.drawn == JOINERS
    queue = await scenario.client.zrangebylex(
        keys.room_keys(scenario.tag).queue, f"[{release_id}|d|", f"({release_id}|e"
    )
    in_redis = [member.rsplit("|", 1)[1] for member in queue]
    assert draw.seed_hash(snap.seed) == snap.seed_hash
    assert draw.draw_order(snap.seed, joined_at) == in_redis
    positions = {ticket: i for i, ticket in enumerate(in_redis, start=1)}
    times = [joined_at[t] for t in in_redis]
    ranks = [positions[t] for t in in_redis]
    found = fairness_stats(times, ranks)
    assert abs(found["spearman_rho"]) < 0.05
    assert found["chi_square"] < CHI_LIMIT
    # Our own statistics are scipy's.
    assert found["spearman_rho"] == pytest.approx(stats.spearmanr(times, ranks)[0], abs=1e-9)


def test_a_biased_order_fails_the_statistics() -> None:
    """Positions that follow join time (first come, first served), or only lean on it,
    fail the same thresholds."""
    rng = random.Random(7)
    times = sorted(rng.randrange(0, WINDOW_MS) for _ in range(JOINERS))
    in_order = list(range(1, JOINERS + 1))
    assert spearman(times, in_order) > 0.99
    leaning = sorted(range(JOINERS), key=lambda i: i + rng.gauss(0, JOINERS / 2))
    positions = [0] * JOINERS
    for position, i in enumerate(leaning, start=1):
        positions[i] = position
    rho = spearman(times, positions)
    chi, dof = decile_chi_square(times, positions)
    assert dof == 81
    assert abs(rho) >= 0.05 or chi >= CHI_LIMIT
    assert chi == pytest.approx(_scipy_chi(times, positions), rel=1e-9)


def _scipy_chi(times: list[int], positions: list[int]) -> Any:
    n = len(times)
    join_rank = stats.rankdata(times)
    table = [[0] * 10 for _ in range(10)]
    for rank, position in zip(join_rank, positions, strict=True):
        table[min(9, int((rank - 1) * 10 / n))][min(9, int((position - 1) * 10 / n))] += 1
    return stats.chi2_contingency(table, correction=False)[0]
