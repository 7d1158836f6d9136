"""WaitingRooms: what the API and the worker ask of release day's waiting rooms.

Opening a release reads its schedules from the record (the operator's call); joining
checks that the patient is the account's; statuses, the public view and the live view
read Redis only; the fairness report recomputes the draw from the seed and the tickets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from inventory.domain import HospitalPolicy
from inventory.errors import NotFoundError, RoomNotFoundError, ValidationFailedError
from inventory.ops import metrics
from inventory.record.catalogue import PgCatalogue, policy_from_json
from inventory.record.patients import PatientRegistry
from inventory.release import draw
from inventory.release.rooms import RoomSnapshot, RoomStore, TicketStatus
from inventory.release.watch import Watchers
from inventory.store import keys
from inventory.store.waitlist import WaitlistStore


@dataclass(frozen=True, slots=True)
class Opened:
    """A release just opened (or found open with the same terms)."""

    release_id: str
    seed_hash: str
    created: bool


class WaitingRooms:
    """The waiting rooms of one process: the room scripts, the record and the watchers."""

    def __init__(self, rooms: RoomStore, catalogue: PgCatalogue, patients: PatientRegistry) -> None:
        self.rooms = rooms
        self.catalogue = catalogue
        self.patients = patients
        self.watchers = Watchers(rooms)

    async def open(
        self, schedule_ids: list[str], *, name: str | None = None, request_id: str = ""
    ) -> Opened:
        """Open the waiting room of a release: schedules of one department and day with
        the same release time (T0), the release named ``name`` or after the first."""
        rows = []
        for schedule_id in schedule_ids:
            row = await self.catalogue.schedule(schedule_id)
            if row is None:
                raise NotFoundError("no such schedule")
            rows.append(row)
        first = rows[0]
        for row in rows[1:]:
            for column in ("department_id", "visit_date", "release_at", "hospital_id"):
                if row[column] != first[column]:
                    raise ValidationFailedError(
                        errors=[
                            {
                                "field": "schedule_ids",
                                "reason": "must share department, visit date, release time"
                                " and hospital",
                            }
                        ]
                    )
        hospital_id = str(first["hospital_id"])
        policy = self.catalogue.policies.get(hospital_id) or policy_from_json(
            first["hospital_policy"]
        )
        visit_date: date = first["visit_date"]
        release_at: datetime = first["release_at"]
        release_id = keys.release_id_for(
            str(first["department_id"]), visit_date, name or schedule_ids[0]
        )
        seed_hash, created = await self.rooms.open(
            release_id,
            schedule_ids,
            hospital_id=hospital_id,
            t0_ms=int(release_at.timestamp() * 1000),
            window_ms=policy.room_window_s * 1000,
            factor=policy.room_factor,
            token_ms=policy.room_token_s * 1000,
            request_id=request_id,
        )
        return Opened(release_id, seed_hash, created)

    async def join(
        self, release_id: str, *, account_id: str, patient_id: str, request_id: str = ""
    ) -> tuple[TicketStatus, bool]:
        """Join for one of the account's patients: (the ticket's status, whether new)."""
        if not self.patients.known_link(patient_id, account_id) and not (
            await self.patients.belongs_to(patient_id, account_id)
        ):
            raise NotFoundError("no such patient")
        ticket, created = await self.rooms.join(
            release_id, account_id=account_id, patient_id=patient_id, request_id=request_id
        )
        if created:
            metrics.observe_room_joined()
        return await self.rooms.status(release_id, ticket, account_id=account_id), created

    async def status(self, release_id: str, ticket_id: str, *, account_id: str) -> TicketStatus:
        """A ticket of the account (one read-only script call)."""
        return await self.rooms.status(release_id, ticket_id, account_id=account_id)

    async def snapshot(self, release_id: str) -> RoomSnapshot:
        """The release's fields now; :class:`RoomNotFoundError` when there is none."""
        snap = await self.rooms.snapshot(release_id)
        if snap is None:
            raise RoomNotFoundError()
        return snap

    async def live(self, release_id: str) -> dict[str, Any]:
        """The operator's live view: the room's counters, its slots' counts and the
        patients waiting on its schedules' waitlists."""
        snap = await self.snapshot(release_id)
        tag = keys.tag_of_release(release_id)
        counts = await self.rooms.store.slot_counts(tag, snap.slots)
        waitlisted = await WaitlistStore(self.rooms.store).waiting_entries(tag, snap.schedules)
        now = self.now_ms()
        elapsed_s = (now - snap.drawn_ms) / 1000 if snap.drawn_ms else 0.0
        return {
            "snapshot": snap,
            "remaining": sum(c.remaining for c in counts.values()),
            "held": sum(c.held for c in counts.values()),
            "booked": sum(c.booked for c in counts.values()),
            "waiting_units": sum(c.waiting for c in counts.values()),
            "capacity": sum(c.capacity for c in counts.values()),
            "waitlisted": len(waitlisted),
            "admission_rate_per_s": snap.admitted / elapsed_s if elapsed_s > 0 else None,
        }

    async def fairness(self, release_id: str) -> dict[str, Any]:
        """After the draw: the draw recomputed from the revealed seed (it must give the
        queue's order), and how independent drawn position is of join time."""
        snap = await self.snapshot(release_id)
        tickets = await self.rooms.tickets(release_id)
        early = [(ticket, joined) for ticket, joined, late in tickets if late == 0]
        if not snap.seed:
            return {"snapshot": snap, "verified": None, "drawn": len(early), "tickets": []}
        order = draw.draw_order(snap.seed, [ticket for ticket, _ in early])
        position = {ticket: i for i, ticket in enumerate(order, start=1)}
        joined_at = dict(early)
        verified = draw.seed_hash(snap.seed) == snap.seed_hash and len(order) == snap.drawn
        stats = fairness_stats([joined_at[t] for t in order], [position[t] for t in order])
        return {
            "snapshot": snap,
            "verified": verified,
            "drawn": len(order),
            "tickets": order,
            **stats,
        }

    def now_ms(self) -> int:
        """The store's clock (a test's) or this machine's."""
        return self.rooms.store.script_now() or int(time.time() * 1000)

    async def close(self) -> None:
        """Stop this process's watchers."""
        await self.watchers.close()


def room_policy(policy: HospitalPolicy) -> dict[str, float]:
    """A hospital's room policy as answers show it."""
    return {
        "window_s": policy.room_window_s,
        "factor": policy.room_factor,
        "token_s": policy.room_token_s,
    }


def _ranks(values: list[int]) -> list[float]:
    """Average ranks (1-based; ties share their mean rank)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[int], y: list[int]) -> float:
    """Spearman's rank correlation of two equally long samples (Pearson's of ranks)."""
    n = len(x)
    if n < 2:
        return 0.0
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


def decile_chi_square(joined_ms: list[int], positions: list[int]) -> tuple[float, int]:
    """Chi-square statistic (and its degrees of freedom) of a 10 x 10 table: join-time
    decile against drawn-position decile. Independent, each cell expects n / 100; the
    statistic's 99th percentile at 81 degrees of freedom is about 113.5."""
    n = len(joined_ms)
    if n < 100:
        return 0.0, 0
    join_rank = _ranks(joined_ms)
    table = [[0] * 10 for _ in range(10)]
    for rank, position in zip(join_rank, positions, strict=True):
        row = min(9, int((rank - 1) * 10 / n))
        col = min(9, int((position - 1) * 10 / n))
        table[row][col] += 1
    rows = [sum(r) for r in table]
    cols = [sum(table[r][c] for r in range(10)) for c in range(10)]
    chi = 0.0
    for r in range(10):
        for c in range(10):
            expected = rows[r] * cols[c] / n
            if expected > 0:
                chi += (table[r][c] - expected) ** 2 / expected
    return chi, 81


def fairness_stats(joined_ms: list[int], positions: list[int]) -> dict[str, Any]:
    """Spearman's rho between join time and drawn position, and the deciles' chi-square."""
    chi, dof = decile_chi_square(joined_ms, positions)
    return {
        "spearman_rho": spearman(joined_ms, positions),
        "chi_square": chi,
        "chi_square_dof": dof,
    }
