"""Release day's waiting rooms in Postgres: their outbox events projected into
``room_releases`` and ``room_tickets`` (migration 0014), inside the persister's batch
transaction, for events that batch newly recorded (so a redelivery changes nothing).

A ticket's events always come in one order (joined, admitted, then used or lapsed),
so a batch is written one event type at a time, in that order, with one statement per
type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.errors import InventoryError
from inventory.record.queries import QUERIES

#: The room events, in the order a batch writes them.
ROOM_EVENTS: Final = (
    "room_opened",
    # A rebuild's restore of a room not drawn yet commits a new seed: before any draw.
    "room_restored",
    "room_joined",
    "room_drawn",
    "room_admitted",
    "room_admission_used",
    "room_admission_lapsed",
    "room_sold_out",
)


class RoomEvent(Protocol):
    """What the projection reads of a recorded tag event."""

    @property
    def tag(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def payload(self) -> Mapping[str, str]: ...


class RoomEventMalformedError(InventoryError):
    """A room event without a field its row needs (the projection raises it as its
    MalformedEntryError, which the persister dead-letters)."""

    code = "outbox_entry_malformed"


def _field(payload: Mapping[str, str], name: str) -> str:
    value = payload.get(name)
    if not value:
        raise RoomEventMalformedError(f"room event field {name!r} is missing")
    return value


def _number(payload: Mapping[str, str], name: str) -> int:
    try:
        return int(_field(payload, name))
    except ValueError as error:
        raise RoomEventMalformedError(f"room event field {name!r} is not a number") from error


def _instant(payload: Mapping[str, str], name: str) -> datetime:
    return datetime.fromtimestamp(_number(payload, name) / 1000, tz=UTC)


def _opened(e: RoomEvent) -> tuple[Any, ...]:
    p = e.payload
    return (
        _field(p, "release"),
        e.tag,
        _field(p, "hospital"),
        _field(p, "schedules").split(),
        _instant(p, "t0"),
        _instant(p, "opens"),
        _field(p, "seed_hash"),
        _number(p, "factor_pm") / 1000,
        _number(p, "token_ms") / 1000,
        e.at,
    )


def _joined(e: RoomEvent) -> tuple[Any, ...]:
    p = e.payload
    return (
        _field(p, "ticket"),
        _field(p, "release"),
        _field(p, "account"),
        _field(p, "patient"),
        e.at,
        _number(p, "late") if p.get("late") else 0,
    )


_ROWS: Final[Mapping[str, tuple[str, Callable[[RoomEvent], tuple[Any, ...]]]]] = {
    "room_opened": ("insert_room_release", _opened),
    "room_restored": (
        "set_room_seed_hash",
        lambda e: (_field(e.payload, "release"), _field(e.payload, "seed_hash")),
    ),
    "room_joined": ("insert_room_ticket", _joined),
    "room_drawn": (
        "set_room_drawn",
        lambda e: (
            _field(e.payload, "release"),
            _field(e.payload, "seed"),
            _number(e.payload, "drawn"),
            e.at,
        ),
    ),
    "room_admitted": (
        "admit_room_ticket",
        lambda e: (
            _field(e.payload, "ticket"),
            _number(e.payload, "position"),
            e.at,
            _instant(e.payload, "expires"),
        ),
    ),
    "room_admission_used": (
        "use_room_ticket",
        lambda e: (_field(e.payload, "ticket"), _field(e.payload, "hold")),
    ),
    "room_admission_lapsed": ("lapse_room_ticket", lambda e: (_field(e.payload, "ticket"),)),
    "room_sold_out": ("set_room_sold_out", lambda e: (_field(e.payload, "release"), e.at)),
}


async def project_rooms(connection: asyncpg.Connection, applied: Sequence[RoomEvent]) -> None:
    """Write the rows of the room events among ``applied`` (newly recorded events)."""
    by_type: dict[str, list[RoomEvent]] = {}
    for event in applied:
        if event.type in _ROWS:
            by_type.setdefault(event.type, []).append(event)
    for event_type in ROOM_EVENTS:
        events = by_type.get(event_type)
        if not events:
            continue
        query, row = _ROWS[event_type]
        # ``applied`` is in (tag, seq) order already: so is each type's list.
        await connection.executemany(QUERIES[query], [row(e) for e in events])  # type: ignore[literal-required]
