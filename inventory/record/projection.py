"""Outbox events to Postgres rows: parse one stream entry, write a batch of them.

The persister (:mod:`inventory.record.persister`) reads entries from the outbox streams; this
module turns each into an event and writes a batch inside the caller's transaction:

* every event of a department-day tag goes to ``inventory_events`` keyed by
  ``(tag, seq)`` (``record_events``, one statement per batch), which is what makes a
  redelivered entry a no-op and a diverged history visible;
* only events that statement newly inserted are projected: the hold row from the event's
  ``record`` (``upsert_hold`` with ``last_seq`` = the event's seq, so the row only moves
  forward, whoever wrote it before: the confirm path writes seq 0), the booking
  (``insert_booking``, ``cancel_booking``, exactly as :class:`inventory.record.bookings.PgBookings`
  does), one ``booking_status_history`` row per hold event (``event_key`` ``<tag>#<seq>``),
  and the slot capacity after ``capacity_adjusted`` and ``schedule_loaded``;
* a patient tag's ``patient_banned`` / ``patient_unbanned`` events carry no seq: their
  durable form is ``patient_bans`` (``upsert_patient_ban``, ordered by the event's time);
* an event whose ``(tag, seq)`` Postgres holds with another stream id is a *diverged*
  history: it is not applied, and is kept in ``dead_letters`` (error ``diverged: ...``)
  as evidence for the operator; the caller fences the tag.

Slot capacity: ``slots.capacity`` is the capacity Redis sells against, and a rebuild
restores it from here, so it follows the store. ``adjust_capacity`` (加号) happens in
Redis first and only its event records it; ``load_schedule`` is written by the catalogue
in Postgres first, so its event normally changes nothing. The capacity is set from the
newest *recorded* event of the tag that names the slot (every slot event carries the
slot's capacity after the step), so events applied late or out of order cannot move it
back for good. Schedule status is not written here: suspend and reopen change Postgres
and Redis in one catalogue transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson

from inventory.domain import Hold, HoldState, WaitlistEntry
from inventory.errors import InventoryError
from inventory.record.queries import QUERIES
from inventory.record.room_projection import RoomEventMalformedError, project_rooms
from inventory.store import keys

#: Events of one hold; each carries the whole hold ``record`` after the step.
HOLD_EVENTS: Final = frozenset(
    {
        "hold_created",
        "hold_extended",
        "booking_confirmed",
        "hold_expired",
        "hold_released",
        "booking_cancelled",
        # A rescheduled booking (改约): booked at once, with the old booking's payment.
        "booking_rescheduled",
        # A waitlist offer is a hold made for a waiting patient.
        "waitlist_offered",
    }
)
#: Events of a waitlist entry; each carries the whole entry record after the step.
WAITLIST_EVENTS: Final = frozenset(
    {
        "waitlist_joined",
        "waitlist_offered",
        "waitlist_taken",
        "waitlist_lapsed",
        "waitlist_declined",
        "waitlist_refused",
        "waitlist_left",
    }
)
#: Events that set a slot's capacity.
CAPACITY_EVENTS: Final = frozenset({"capacity_adjusted", "schedule_loaded"})
#: Events of a patient tag (no seq, no tag).
PATIENT_EVENTS: Final = frozenset({"patient_banned", "patient_unbanned"})
#: Fields every department-day tag event has; the rest is its payload.
_HEADER: Final = ("type", "seq", "at", "tag")

#: The status-history transition of each hold event whose entry does not say "from".
_TRANSITIONS: Final[Mapping[str, tuple[str | None, str]]] = {
    "hold_created": (None, "reserved"),
    "hold_extended": ("held", "extended"),
    "booking_confirmed": ("held", "paid"),
    "booking_rescheduled": (None, "rescheduled"),
    "waitlist_offered": (None, "waitlist_offered"),
}

#: The slot's capacity as the newest recorded event of its tag that names the slot says
#: (see the module docstring). Changes the row only when the value differs.
SET_SLOT_CAPACITY: Final = """
UPDATE slots AS s
SET capacity = latest.cap, updated_at = now()
FROM (
    SELECT CASE WHEN e.type = 'schedule_loaded'
                THEN ((e.payload ->> 'slots')::jsonb ->> $2)::integer
                ELSE (e.payload ->> 'cap')::integer END AS cap
    FROM inventory_events e
    WHERE e.tag = $1
      AND (e.payload ->> 'slot' = $2
           OR (e.type = 'schedule_loaded' AND (e.payload ->> 'slots')::jsonb ? $2))
    ORDER BY e.seq DESC
    LIMIT 1
) AS latest
WHERE s.id = $2 AND latest.cap IS NOT NULL AND s.capacity IS DISTINCT FROM latest.cap
"""


#: Parameter types of the named queries written a batch at a time (see _bulk).
_UPSERT_HOLD_TYPES: Final = (
    "text", "text", "text", "text", "text", "text", "text", "int8", "text",
    "timestamptz", "bool", "text", "timestamptz", "timestamptz", "timestamptz", "text",
    "int8",
)  # fmt: skip
_HISTORY_TYPES: Final = ("text", "text", "text", "text", "timestamptz", "text")


def _bulk(name: str, types: Sequence[str]) -> str | None:
    """The named query ``name`` rewritten to insert many rows in one statement: its
    ``VALUES ($1, ..., $n)`` becomes ``SELECT * FROM unnest($1::type[], ...)`` and its
    RETURNING clause goes. Its ON CONFLICT rule stays the named query's own, so the
    ordering rules live in one place (queries.sql). None when the query no longer has
    that shape (then rows are written one by one with the named query itself).

    One statement for a batch instead of one per row spares Postgres the per-statement
    work of every row (the drain rate it bought: docs/durability.md).
    """
    text: str = QUERIES[name]  # type: ignore[literal-required]
    values = "VALUES (" + ", ".join(f"${i}" for i in range(1, len(types) + 1)) + ")"
    if text.count(values) != 1 or f"${len(types) + 1}" in text:
        return None
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    bulk = text.replace(values, f"SELECT * FROM unnest({arrays})")
    return bulk.rsplit("RETURNING", 1)[0].rstrip()


#: upsert_hold and add_status_history, a batch per statement (None: one per row).
UPSERT_HOLDS: Final = _bulk("upsert_hold", _UPSERT_HOLD_TYPES)
ADD_STATUS_HISTORIES: Final = _bulk("add_status_history", _HISTORY_TYPES)


async def _write_rows(
    connection: asyncpg.Connection, name: str, bulk: str | None, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Write rows with the bulk form of a named query, or row by row with the query."""
    if not rows:
        return
    if bulk is None or len(rows) == 1:
        await connection.executemany(QUERIES[name], rows)  # type: ignore[literal-required]
        return
    await connection.execute(bulk, *(list(column) for column in zip(*rows, strict=True)))


class MalformedEntryError(InventoryError):
    """An outbox entry that cannot be read as an event (a poison entry)."""

    code = "outbox_entry_malformed"
    title = "An outbox entry could not be read as an event"


class ConcurrentWriteError(InventoryError):
    """Another writer committed one of the batch's events meanwhile: retry the batch."""

    code = "outbox_concurrent_write"
    title = "An event of the batch was committed concurrently"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stream entry as read: where it is, and its fields (all strings)."""

    stream: str
    entry_id: str
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TagEvent:
    """An event of a department-day tag, numbered by the tag's seq."""

    entry: OutboxEntry
    tag: str
    seq: int
    type: str
    at: datetime
    #: The entry's fields other than type, seq, at and tag, as received.
    payload: dict[str, str]
    #: The hold after the step, for hold events.
    hold: Hold | None = None
    #: The waitlist entry after the step, for waitlist events.
    waitlist: WaitlistEntry | None = None


@dataclass(frozen=True, slots=True)
class PatientEvent:
    """A ban decision on a patient tag (``until_ms`` 0 lifts the ban)."""

    entry: OutboxEntry
    type: str
    patient_id: str
    hospital_id: str
    until_ms: int
    at: datetime
    reason: str


Event = TagEvent | PatientEvent


@dataclass
class BatchOutcome:
    """What a written batch did, event by event."""

    #: Newly recorded and projected.
    applied: list[TagEvent] = field(default_factory=list)
    #: Recorded before under the same stream id: a redelivery, nothing changed.
    duplicates: list[TagEvent] = field(default_factory=list)
    #: Recorded before under another stream id: not applied; (event, stored stream id).
    diverged: list[tuple[TagEvent, str]] = field(default_factory=list)
    #: Ban decisions written (or found older than the stored one).
    patient_events: list[PatientEvent] = field(default_factory=list)


def instant(ms: int) -> datetime:
    """An epoch-ms instant as an aware datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _optional_instant(ms: int) -> datetime | None:
    return instant(ms) if ms else None


#: An outbox stream's name, naming its tag (inventory.store.keys.tag_keys).
_STREAM_TAG: Final = re.compile(r"inv:\{([^{}]+)\}:outbox")

#: Postgres bigint, and the last instant a timestamptz of ours can hold (year 9999).
_MAX_BIGINT: Final = 2**63 - 1
_MAX_MS: Final = 253_402_300_799_999


def _int(fields: Mapping[str, str], name: str, *, high: int = _MAX_BIGINT) -> int:
    try:
        value = int(fields[name])
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedEntryError(f"field {name!r} is missing or not an integer") from error
    if not 0 <= value <= high:
        raise MalformedEntryError(f"field {name!r} is out of range")
    return value


def _ms_field(fields: Mapping[str, str], name: str) -> datetime:
    return instant(_int(fields, name, high=_MAX_MS))


def _text(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or value == "":
        raise MalformedEntryError(f"field {name!r} is missing")
    return value


def parse_entry(entry: OutboxEntry) -> Event:
    """The event an outbox entry carries; :class:`MalformedEntryError` if it has none."""
    fields = entry.fields
    event_type = _text(fields, "type")
    if event_type in PATIENT_EVENTS:
        return PatientEvent(
            entry=entry,
            type=event_type,
            patient_id=_text(fields, "patient"),
            hospital_id=_text(fields, "hospital"),
            until_ms=_int(fields, "until", high=_MAX_MS),
            at=_ms_field(fields, "at"),
            reason=fields.get("reason", ""),
        )
    tag = _text(fields, "tag")
    stream_tag = _STREAM_TAG.fullmatch(entry.stream)
    if stream_tag is not None and stream_tag.group(1) != tag:
        # Recorded under the wrong tag it would move that tag's sequence (the fence).
        raise MalformedEntryError("the event names another tag than its stream")
    seq = _int(fields, "seq")
    if seq <= 0:
        raise MalformedEntryError("seq must be positive")
    payload = {k: v for k, v in fields.items() if k not in _HEADER}
    hold = None
    if event_type in HOLD_EVENTS:
        hold = _hold_of(fields, tag)
    waitlist_entry = None
    if event_type in WAITLIST_EVENTS:
        waitlist_entry = _entry_of(fields, tag)
    return TagEvent(
        entry=entry,
        tag=tag,
        seq=seq,
        type=event_type,
        at=_ms_field(fields, "at"),
        payload=payload,
        hold=hold,
        waitlist=waitlist_entry,
    )


def _hold_of(fields: Mapping[str, str], tag: str) -> Hold:
    try:
        record = orjson.loads(_text(fields, "record"))
        hold = Hold.from_record(record)
        for ms in (hold.created_ms, hold.deadline_ms, hold.confirmed_ms, hold.ended_ms):
            if not 0 <= ms <= _MAX_MS:
                raise ValueError("an instant is out of range")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise MalformedEntryError(f"the hold record is unreadable ({error})") from error
    if hold.hold_id != fields.get("hold"):
        raise MalformedEntryError("the hold record names another hold")
    try:
        hold_tag = keys.tag_of_hold(hold.hold_id)
    except keys.InvalidIdError as error:
        raise MalformedEntryError("the hold id is not a hold id") from error
    if hold_tag != tag:
        raise MalformedEntryError("the hold belongs to another tag")
    return hold


def _entry_of(fields: Mapping[str, str], tag: str) -> WaitlistEntry:
    try:
        entry = WaitlistEntry.from_record(orjson.loads(_text(fields, "entry_record")))
        for ms in (entry.created_ms, entry.offered_ms, entry.ended_ms):
            if not 0 <= ms <= _MAX_MS:
                raise ValueError("an instant is out of range")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise MalformedEntryError(f"the waitlist entry is unreadable ({error})") from error
    if entry.entry_id != fields.get("entry"):
        raise MalformedEntryError("the waitlist record names another entry")
    try:
        entry_tag = keys.tag_of_hold(entry.entry_id)
    except keys.InvalidIdError as error:
        raise MalformedEntryError("the entry id is not an entry id") from error
    if entry_tag != tag:
        raise MalformedEntryError("the waitlist entry belongs to another tag")
    return entry


def _entry_row(entry: WaitlistEntry, tag: str, seq: int) -> tuple[Any, ...]:
    return (
        entry.entry_id,
        tag,
        entry.schedule_id,
        entry.account_id,
        entry.patient_id,
        entry.channel,
        entry.seq,
        entry.state.value,
        entry.offer_hold_id,
        entry.slot_id or None,
        instant(entry.created_ms),
        _optional_instant(entry.offered_ms),
        _optional_instant(entry.ended_ms),
        entry.end_reason,
        seq,
        entry.doctor_id or None,
        list(entry.day_schedule_ids),
    )


async def write_batch(
    connection: asyncpg.Connection,
    tag_events: Sequence[TagEvent],
    patient_events: Sequence[PatientEvent] = (),
) -> BatchOutcome:
    """Record and project a batch; call inside a transaction (one per batch).

    Each ``(tag, seq)`` must appear at most once in ``tag_events``. Raises
    :class:`ConcurrentWriteError` when another writer committed one of the events while
    this statement ran (roll back and retry), asyncpg's errors otherwise.
    """
    outcome = BatchOutcome()
    ordered = sorted(tag_events, key=lambda e: (e.tag, e.seq))
    if ordered:
        await _record(connection, ordered, outcome)
    await _project(connection, outcome.applied)
    try:
        await project_rooms(connection, outcome.applied)
    except RoomEventMalformedError as error:
        raise MalformedEntryError(str(error)) from error
    if outcome.diverged:
        await _keep_diverged(connection, outcome.diverged)
    if patient_events:
        await _write_bans(connection, patient_events)
        outcome.patient_events.extend(patient_events)
    return outcome


async def _record(
    connection: asyncpg.Connection, ordered: Sequence[TagEvent], outcome: BatchOutcome
) -> None:
    rows = await connection.fetch(
        QUERIES["record_events"],
        [e.tag for e in ordered],
        [e.seq for e in ordered],
        [e.type for e in ordered],
        [e.at for e in ordered],
        [e.payload for e in ordered],
        [e.entry.entry_id for e in ordered],
    )
    by_key = {(str(r["tag"]), int(r["seq"])): r for r in rows}
    for event in ordered:
        row = by_key[(event.tag, event.seq)]
        if row["inserted"]:
            outcome.applied.append(event)
        elif row["stored_stream_id"] is None:
            raise ConcurrentWriteError(f"event {event.tag}#{event.seq} was written meanwhile")
        elif row["stored_stream_id"] == event.entry.entry_id:
            outcome.duplicates.append(event)
        else:
            outcome.diverged.append((event, str(row["stored_stream_id"])))


def _hold_row(hold: Hold, tag: str, seq: int) -> tuple[Any, ...]:
    return (
        hold.hold_id,
        tag,
        hold.slot_id,
        hold.schedule_id,
        hold.account_id,
        hold.patient_id,
        hold.channel,
        hold.amount_fen,
        hold.state.value,
        instant(hold.deadline_ms),
        hold.extended,
        hold.payment_ref,
        instant(hold.created_ms),
        _optional_instant(hold.confirmed_ms),
        _optional_instant(hold.ended_ms),
        hold.end_reason,
        seq,
    )


def _history_row(event: TagEvent, hold: Hold) -> tuple[Any, ...]:
    transition = _TRANSITIONS.get(event.type)
    if transition is not None:
        from_status, reason = transition
    else:
        from_status, reason = event.payload.get("from"), event.payload.get("reason", "")
    return (hold.hold_id, from_status, hold.state.value, reason, event.at, event_key(event))


_STATE_RANK: Final = {HoldState.HELD: 0, HoldState.BOOKED: 1}


def _by_hold(pair: tuple[TagEvent, Hold]) -> str:
    return pair[1].hold_id


def _progress(hold: Hold, seq: int) -> tuple[int, int]:
    """How far a hold record is, as upsert_hold orders them (inv_hold_state_rank, seq)."""
    return _STATE_RANK.get(hold.state, 2), seq


def event_key(event: TagEvent) -> str:
    """The status-history key of a store event: ``<tag>#<seq>``."""
    return f"{event.tag}#{event.seq}"


async def _project(connection: asyncpg.Connection, applied: Sequence[TagEvent]) -> None:
    # Hold rows in (hold id, seq) order: two writers touching the same holds lock them in
    # the same order; within one hold, upsert_hold only ever moves the row forward.
    hold_events = sorted(
        (e for e in applied if e.hold is not None),
        key=lambda e: (e.hold.hold_id if e.hold else "", e.seq),
    )
    if hold_events:
        holds = [(e, e.hold) for e in hold_events if e.hold is not None]
        # Applying a hold's records one after another leaves the one with the highest
        # (state rank, seq) (upsert_hold only moves forward): write just that one.
        newest: dict[str, tuple[TagEvent, Hold]] = {}
        for e, h in holds:
            kept = newest.get(h.hold_id)
            if kept is None or _progress(h, e.seq) > _progress(kept[1], kept[0].seq):
                newest[h.hold_id] = (e, h)
        await _write_rows(
            connection,
            "upsert_hold",
            UPSERT_HOLDS,
            [_hold_row(h, e.tag, e.seq) for e, h in sorted(newest.values(), key=_by_hold)],
        )
        await _write_rows(
            connection,
            "add_status_history",
            ADD_STATUS_HISTORIES,
            [_history_row(e, h) for e, h in holds],
        )
        booked = sorted(
            {
                h.hold_id
                for _, h in holds
                if h.state in (HoldState.BOOKED, HoldState.CANCELLED) and h.payment_ref
            }
        )
        if booked:
            await connection.executemany(QUERIES["insert_booking"], [(b,) for b in booked])
        cancelled = [
            (h.hold_id, _optional_instant(h.ended_ms), h.end_reason)
            for _, h in holds
            if h.state is HoldState.CANCELLED and h.payment_ref
        ]
        if cancelled:
            await connection.executemany(QUERIES["cancel_booking"], cancelled)
    # Waitlist rows in (entry id, seq) order: the newest record of each entry wins
    # (upsert_waitlist_entry only moves a row forward).
    waitlist: dict[str, tuple[WaitlistEntry, str, int]] = {}
    for e in applied:
        if e.waitlist is not None:
            latest = waitlist.get(e.waitlist.entry_id)
            if latest is None or e.seq > latest[2]:
                waitlist[e.waitlist.entry_id] = (e.waitlist, e.tag, e.seq)
    if waitlist:
        await connection.executemany(
            QUERIES["upsert_waitlist_entry"],
            [_entry_row(*waitlist[entry_id]) for entry_id in sorted(waitlist)],
        )
    capacity = sorted(
        {(e.tag, slot) for e in applied if e.type in CAPACITY_EVENTS for slot in _slots_of(e)}
    )
    if capacity:
        await connection.executemany(SET_SLOT_CAPACITY, capacity)


def _slots_of(event: TagEvent) -> list[str]:
    if event.type == "schedule_loaded":
        try:
            listed = orjson.loads(event.payload.get("slots", "{}"))
        except orjson.JSONDecodeError as error:
            raise MalformedEntryError("schedule_loaded slots are not JSON") from error
        # cjson encodes an empty table as {} and a schedule always has its slots keyed.
        return [str(s) for s in listed] if isinstance(listed, dict) else []
    slot = event.payload.get("slot")
    return [slot] if slot else []


async def _keep_diverged(
    connection: asyncpg.Connection, diverged: Sequence[tuple[TagEvent, str]]
) -> None:
    await connection.executemany(
        QUERIES["record_dead_letter"],
        [
            (
                e.entry.stream,
                e.entry.entry_id,
                e.tag,
                e.seq,
                dict(e.entry.fields),
                f"diverged: {e.tag}#{e.seq} is recorded with stream id {stored}",
            )
            for e, stored in diverged
        ],
    )


async def _write_bans(connection: asyncpg.Connection, events: Sequence[PatientEvent]) -> None:
    ordered = sorted(events, key=lambda e: (e.patient_id, e.hospital_id, e.at))
    await connection.executemany(
        QUERIES["upsert_patient_ban"],
        [
            (
                e.patient_id,
                e.hospital_id,
                # A lifted ban keeps its row with banned_until = the moment it was lifted.
                instant(e.until_ms) if e.until_ms else e.at,
                e.reason,
                e.at,
            )
            for e in ordered
        ],
    )


def _storable(text: str) -> str:
    # Postgres text and jsonb cannot hold NUL: a poison entry must still be storable.
    return text.replace("\x00", "\\u0000")


async def record_dead_letter(
    connection: asyncpg.Connection, entry: OutboxEntry, error: str
) -> None:
    """Keep an entry that could not be applied in ``dead_letters`` (its commit).

    The entry's fields are stored as received (NUL characters escaped), with the tag and
    seq when it has readable ones; a repeat of the same entry bumps ``attempts``.
    """
    tag = entry.fields.get("tag")
    try:
        seq: int | None = int(entry.fields["seq"])
    except (KeyError, TypeError, ValueError):
        seq = None
    if seq is not None and not -_MAX_BIGINT <= seq <= _MAX_BIGINT:
        seq = None
    await connection.execute(
        QUERIES["record_dead_letter"],
        entry.stream,
        entry.entry_id,
        _storable(tag) if isinstance(tag, str) else None,
        seq,
        {_storable(str(k)): _storable(str(v)) for k, v in entry.fields.items()},
        _storable(error)[:2000],
    )
