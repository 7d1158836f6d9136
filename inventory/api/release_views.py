"""Response bodies of the release-day routes (inventory/api/releases.py): pydantic models
that are their contract, as inventory/api/views.py has them for the other routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from inventory.api.models import Instant

RoomState = Literal["open", "admitting", "sold_out"]
Outcome = Literal["waiting", "admitted", "reserved", "expired", "sold_out"]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _examples(*examples: dict[str, JsonValue]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


_RELEASE: dict[str, JsonValue] = {
    "release_id": "dep-cardio.20261209.am",
    "state": "admitting",
    "t0": "2026-12-02T08:00:00+08:00",
    "opens_at": "2026-12-02T07:30:00+08:00",
    "schedule_ids": ["sch-20261209-am"],
    "seed_hash": "5d41402abc4b2a76b9719d911017c592" * 2,
    "seed": "0f" * 32,
    "joined": 2000,
    "drawn": 1980,
    "admitted": 240,
    "sold_out_at": None,
    "waitlist": None,
}
_TICKET: dict[str, JsonValue] = {
    "release_id": "dep-cardio.20261209.am",
    "ticket_id": "abcdefghijklmnopqrstuvwx",
    "patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0",
    "state": "admitting",
    "outcome": "waiting",
    "position": 312,
    "ahead": 71,
    "eta_s": 2.5,
    "admission_token": None,
    "admission_expires_at": None,
    "joined_at": "2026-12-02T07:41:12.500000+08:00",
    "t0": "2026-12-02T08:00:00+08:00",
    "version": "waiting.312",
    "waitlist": None,
}


class WaitlistOffer(_View):
    """Where a sold-out release's patients may go instead: the 候补 waitlist of its
    schedules (joined by the waitlist's own route, with a schedule id)."""

    available: bool
    schedule_ids: list[str]


class ReleaseView(_View):
    """A queued release as anyone may see it: its instant, its room's state and the draw's
    commitment (the seed's SHA-256 before T0; the seed itself once drawn)."""

    model_config = _examples(_RELEASE)

    release_id: str
    state: RoomState
    t0: Instant
    opens_at: Annotated[Instant, Field(description="joins are taken from then on")]
    schedule_ids: list[str]
    seed_hash: Annotated[str, Field(description="SHA-256 (hex) of the draw's seed")]
    seed: Annotated[
        str | None, Field(description="the draw's seed, revealed once drawn (else null)")
    ]
    joined: int
    drawn: int
    admitted: int
    sold_out_at: Instant | None
    waitlist: WaitlistOffer | None


class TicketView(_View):
    """A patient's ticket in a release's waiting room and where it stands."""

    model_config = _examples(_TICKET)

    release_id: str
    ticket_id: str
    patient_id: str
    state: RoomState
    outcome: Annotated[
        Outcome,
        Field(
            description="waiting; admitted (reserve with admission_token before"
            " admission_expires_at); reserved (the token was used); expired (unused in"
            " time); sold_out"
        ),
    ]
    position: Annotated[int | None, Field(description="place in the queue; null until drawn")]
    ahead: Annotated[int | None, Field(description="tickets still to be admitted before it")]
    eta_s: Annotated[float | None, Field(description="estimate from the admission rate")]
    admission_token: str | None
    admission_expires_at: Instant | None
    joined_at: Instant
    t0: Instant
    version: Annotated[str, Field(description="pass as ?after= to wait for a change")]
    waitlist: WaitlistOffer | None


class ReleaseLiveView(_View):
    """An operator's live view of a release."""

    model_config = _examples(
        {
            "release": _RELEASE,
            "outstanding": 60,
            "used": 180,
            "lapsed": 0,
            "late": 20,
            "capacity": 500,
            "remaining": 320,
            "held": 180,
            "booked": 0,
            "waiting_units": 0,
            "waitlisted": 0,
            "admission_rate_per_s": 480.0,
            "factor": 1.2,
            "token_s": 60.0,
        }
    )

    release: ReleaseView
    outstanding: int
    used: int
    lapsed: int
    late: int
    capacity: int
    remaining: int
    held: int
    booked: int
    waiting_units: int
    waitlisted: Annotated[
        int,
        Field(description="patients waiting on the release's schedules' 候补 waitlists"),
    ]
    admission_rate_per_s: float | None
    factor: float
    token_s: float


class FairnessReport(_View):
    """After a release's draw: the draw recomputed from the revealed seed, and how
    independent drawn position is of join time."""

    model_config = _examples(
        {
            "release": _RELEASE,
            "verified": True,
            "drawn": 2,
            "tickets": ["abcdefghijklmnopqrstuvwx", "bcdefghijklmnopqrstuvwxy"],
            "spearman_rho": 0.004,
            "chi_square": 77.2,
            "chi_square_dof": 81,
        }
    )

    release: ReleaseView
    verified: Annotated[
        bool | None,
        Field(description="the seed matches its hash and recomputes the queue (null before)"),
    ]
    drawn: int
    tickets: Annotated[list[str], Field(description="the drawn tickets in queue order")]
    spearman_rho: float | None
    chi_square: float | None
    chi_square_dof: int | None
