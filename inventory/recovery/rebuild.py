"""``inventory rebuild``: restore Redis state from Postgres, the durable record.

For each tag: its schedules and slot capacities, its open holds and bookings, the
hospital's policy and the highest sequence Postgres recorded; one atomic script
replaces the tag's keys with that and lifts its fence. Patient tags get their tokens
(one per open hold or booking) and bans back, and every account-patient link and slot
location is copied again (what reserves read while Postgres is down; ``--lookups`` does
only that). A hold that was never persisted is lost,
which the durability contract allows (the patient paid nothing); a confirmed booking
never is, because confirm answers only after Postgres has it.

A tag that cannot be rebuilt (its Redis node out of reach, or a slot Postgres records
as oversold: more open holds and bookings than capacity) is reported with its reason
and the others are rebuilt all the same. An oversold slot is only rebuilt when asked
(``raise_oversold``): its capacity is raised, in Postgres and then in Redis, to the
units already sold, and the raise is reported, so that the tag serves again (nothing
more is sold on that slot) while the staff decide what to do with the extra patients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import redis.exceptions
from redis.typing import EncodableT

from inventory.domain import SlotLocation
from inventory.errors import CapacityBelowTakenError, InventoryError
from inventory.record.catalogue import policy_from_json
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore, fingerprint

#: What stops one tag's rebuild without stopping the others: a refusal or the store out
#: of reach for that tag (its Cluster node down).
_TAG_FAILURES = (
    InventoryError,
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


@dataclass(frozen=True)
class CapacityRaise:
    """An oversold slot whose capacity a rebuild raised to the units already sold."""

    tag: str
    slot: str
    capacity: int
    raised_to: int


@dataclass(frozen=True)
class TagFailure:
    """A tag a rebuild could not rebuild, and why."""

    tag: str
    reason: str


@dataclass
class RebuildReport:
    """What a rebuild restored, raised and could not rebuild."""

    tags: list[str] = field(default_factory=list)
    holds: int = 0
    #: Waiting rooms put back from the record (not sold out, lost from Redis).
    rooms: int = 0
    patients: int = 0
    raised: list[CapacityRaise] = field(default_factory=list)
    failed: list[TagFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every tag asked for was rebuilt."""
        return not self.failed

    #: Account-patient links and slot locations copied to Redis.
    links: int = 0
    slot_locations: int = 0


def entry_record(row: Any) -> dict[str, Any]:
    """A Postgres waitlist row in the shape the scripts keep (lua/includes/waitlist.lua)."""
    record: dict[str, Any] = {
        "id": row["entry_id"],
        "schedule": row["schedule_id"],
        "account": row["account_id"],
        "patient": row["patient_id"],
        "channel": row["channel"],
        "seq": int(row["join_seq"]),
        "created": _ms(row["joined_at"]),
        "state": row["state"],
        "hold": row["offer_hold_id"],
        "slot": row["slot_id"] or "",
        "offered": _ms(row["offered_at"]),
        "ended": 0,
        "reason": "",
    }
    if row["doctor_id"]:
        record["doctor"] = row["doctor_id"]
        record["day"] = " ".join(row["day_schedule_ids"])
    return record


def hold_record(row: Any) -> dict[str, Any]:
    """A Postgres hold row in the shape the scripts keep (see lua/reserve.lua)."""
    return {
        "id": row["hold_id"],
        "slot": row["slot_id"],
        "schedule": row["schedule_id"],
        "account": row["account_id"],
        "patient": row["patient_id"],
        "channel": row["channel"],
        "fp": fingerprint(row["slot_id"], row["patient_id"], row["channel"]),
        "amount": int(row["amount_fen"]),
        "created": _ms(row["created_at"]),
        "deadline": _ms(row["deadline"]),
        "extended": 1 if row["extended"] else 0,
        "state": row["state"],
        "payment_ref": row["payment_ref"],
        "confirmed": _ms(row["confirmed_at"]),
        "ended": 0,
        "reason": "",
    }


async def rebuild_tag(
    store: SlotStore,
    pool: Any,
    tag: str,
    *,
    attempts: int = 5,
    raise_oversold: bool = False,
    raised: list[CapacityRaise] | None = None,
) -> int:
    """Replace one tag's Redis state with Postgres's; returns the open holds restored.

    A persister may still commit entries of the tag's old stream while we read; if
    Postgres's sequence moved meanwhile, the state we wrote is already behind, so read
    and replace again (the replacement is idempotent). An oversold slot refuses the
    tag (:class:`CapacityBelowTakenError` naming the slots) unless ``raise_oversold``:
    then its capacity is raised and the raise appended to ``raised``."""
    for _ in range(attempts):
        seq_used, restored = await _rebuild_once(store, pool, tag, raise_oversold, raised)
        async with acquire(pool, timeout_s=10.0) as connection:
            row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
        # seq_used + 1 is the rebuild's own store_rebuilt event, persisted already.
        if (int(row["last_seq"]) if row else 0) <= seq_used + 1:
            return restored
    raise InventoryError(
        f"tag {tag}: Postgres kept moving during the rebuild; stop the persister and rebuild again"
    )


async def _raise_oversold(
    pool: Any,
    tag: str,
    slots: list[Any],
    holds: list[Any],
    raise_oversold: bool,
    raised: list[CapacityRaise] | None,
) -> list[dict[str, Any]]:
    """The slots as the rebuild passes them: an oversold slot refuses the tag, or, with
    ``raise_oversold``, gets its capacity raised in Postgres to the units taken."""
    taken: dict[str, int] = {}
    for hold in holds:
        taken[hold["slot_id"]] = taken.get(hold["slot_id"], 0) + 1
    oversold = [s for s in slots if taken.get(s["id"], 0) > int(s["capacity"])]
    if oversold and not raise_oversold:
        detail = "; ".join(
            f"slot {s['id']}: {taken[s['id']]} open holds and bookings for capacity {s['capacity']}"
            for s in oversold
        )
        raise CapacityBelowTakenError(
            f"Postgres records the tag as oversold ({detail}); rebuild it with "
            "--raise-oversold to raise those capacities to the units sold"
        )
    if oversold:
        async with acquire(pool, timeout_s=10.0) as connection, connection.transaction():
            for s in oversold:
                await connection.fetch(QUERIES["raise_slot_capacity"], s["id"], taken[s["id"]])
        for s in oversold:
            if raised is not None:
                raised.append(CapacityRaise(tag, s["id"], int(s["capacity"]), taken[s["id"]]))
    return [
        {
            "id": s["id"],
            "schedule": s["schedule_id"],
            "capacity": max(int(s["capacity"]), taken.get(s["id"], 0)),
        }
        for s in slots
    ]


async def _rebuild_once(
    store: SlotStore,
    pool: Any,
    tag: str,
    raise_oversold: bool = False,
    raised: list[CapacityRaise] | None = None,
) -> tuple[int, int]:
    department_id, day = tag.split(":")
    visit_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    async with acquire(pool, timeout_s=10.0) as connection:
        seq_row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
        schedules = await connection.fetch(
            QUERIES["list_department_schedules"], department_id, visit_date
        )
        slots = await connection.fetch(QUERIES["list_tag_slots"], department_id, visit_date)
        holds = await connection.fetch(QUERIES["list_tag_open_holds"], tag)
        entries = await connection.fetch(QUERIES["list_tag_live_waitlist"], tag)
        waitlist_seq = await connection.fetchval(QUERIES["get_tag_waitlist_seq"], tag)
        hospital = (
            await connection.fetchrow(QUERIES["get_hospital"], schedules[0]["hospital_id"])
            if schedules
            else None
        )
    policy = policy_from_json(hospital["policy"] if hospital else None)
    meta = {
        "hold_ttl_ms": policy.hold_ttl_s * 1000,
        "max_hold_ms": policy.max_hold_s * 1000,
        "extend_ms": policy.extend_s * 1000,
        "one_per_day": int(policy.one_per_day),
        "rerelease_min_ms": policy.rerelease_min_s * 1000,
        "rerelease_max_ms": policy.rerelease_max_s * 1000,
        "offer_ttl_ms": policy.waitlist_offer_s * 1000,
        "offer_settle": int(policy.spans_tags),
        "hospital": hospital["id"] if hospital else "",
        "department": department_id,
        "date": visit_date.isoformat(),
    }
    seq = int(seq_row["last_seq"]) if seq_row else 0
    # An offer's hold names its entry, so its end passes the unit on to the next.
    offered = {e["offer_hold_id"]: e["entry_id"] for e in entries if e["state"] == "offered"}
    slot_caps = await _raise_oversold(pool, tag, list(slots), list(holds), raise_oversold, raised)
    await store.replace_tag(
        tag,
        seq=seq,
        meta=meta,
        schedules=[
            {
                "id": s["id"],
                "status": s["status"],
                "release_ms": _ms(s["release_at"]),
                "start_ms": _ms(s["starts_at"]),
                "end_ms": _ms(s["ends_at"]),
                "cancel_deadline_ms": _ms(s["cancel_deadline"]),
                "fee": int(s["fee_fen"]),
            }
            for s in schedules
        ],
        slots=slot_caps,
        holds=[_with_entry(hold_record(h), offered) for h in holds],
        waitlist=[entry_record(e) for e in entries],
        waitlist_seq=int(waitlist_seq or 0),
    )
    await store.client.sadd(keys.TAG_REGISTRY_KEY, tag)
    return seq, len(holds)


def _with_entry(record: dict[str, Any], offered: dict[str, str]) -> dict[str, Any]:
    entry = offered.get(record["id"])
    if entry is not None and record["state"] == "held":
        record["entry"] = entry
    return record


async def rebuild_patient_tags(store: SlotStore, pool: Any) -> int:
    """Settle a token for every open hold or booking and every live waitlist entry (the
    rules that span tags count them) and restore current bans; returns the patients
    touched."""
    async with acquire(pool, timeout_s=10.0) as connection:
        rows = await connection.fetch(QUERIES["list_open_patient_holds"])
        bans = await connection.fetch(QUERIES["list_current_bans"])
        entries = await connection.fetch(QUERIES["list_live_waitlist_by_patient"])
    for ban in bans:
        until_ms = _ms(ban["banned_until"])
        await store.client.hset(
            keys.patient_keys(ban["patient_id"]).bans, ban["hospital_id"], until_ms
        )
    by_patient: dict[str, list[str]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], []).append(row["hold_id"])
    for patient_id, hold_ids in by_patient.items():
        tokens = keys.patient_keys(patient_id).tokens
        await store.client.zadd(tokens, dict.fromkeys(hold_ids, float("inf")))
    by_entrant: dict[str, list[str]] = {}
    for row in entries:
        by_entrant.setdefault(row["patient_id"], []).append(row["entry_id"])
    for patient_id, entry_ids in by_entrant.items():
        tokens = keys.patient_waitlist_keys(patient_id).tokens
        await store.client.zadd(tokens, dict.fromkeys(entry_ids, float("inf")))
    return len(by_patient.keys() | by_entrant.keys())


#: Rows per page when copying links and slot locations.
COPY_PAGE = 1000


async def copy_lookups(store: SlotStore, pool: Any, *, page: int = COPY_PAGE) -> tuple[int, int]:
    """Copy every account-patient link and every slot's location from Postgres to Redis
    (what a reserve reads there while Postgres is down); returns (links, slots).

    Only adds: safe on a live system, and idempotent."""
    links = 0
    after = ("", "")
    while True:
        async with acquire(pool, timeout_s=10.0) as connection:
            rows = await connection.fetch(QUERIES["list_account_patient_links"], *after, page)
        if not rows:
            break
        by_patient: dict[str, dict[EncodableT, EncodableT]] = {}
        for row in rows:
            by_patient.setdefault(row["patient_id"], {})[row["account_id"]] = "1"
        pipe = store.client.pipeline(transaction=False)
        for patient_id, accounts in by_patient.items():
            pipe.hset(keys.patient_accounts_key(patient_id), mapping=accounts)
        await pipe.execute()
        links += len(rows)
        after = (rows[-1]["patient_id"], rows[-1]["account_id"])
    slots = 0
    after_slot = ""
    while True:
        async with acquire(pool, timeout_s=10.0) as connection:
            rows = await connection.fetch(QUERIES["list_slot_locations"], after_slot, page)
        if not rows:
            break
        await store.copy_slot_location_map(
            {
                row["slot_id"]: SlotLocation(
                    row["hospital_id"], row["department_id"], row["visit_date"], row["schedule_id"]
                )
                for row in rows
            }
        )
        slots += len(rows)
        after_slot = rows[-1]["slot_id"]
    return links, slots


async def rebuild(
    store: SlotStore,
    pool: Any,
    *,
    tags: list[str] | None = None,
    only_fenced: bool = False,
    raise_oversold: bool = False,
    after_tag: Callable[[str], Awaitable[int]] | None = None,
) -> RebuildReport:
    """Rebuild the given tags, every tag Postgres knows, or only the fenced ones, then
    copy the account-patient links and slot locations (see :func:`copy_lookups`). A tag
    that fails is reported in ``failed`` and the others go on. ``after_tag`` runs after
    each tag's rebuild (the waiting rooms' restore, inventory.release.restore, which
    this layer does not know); what it returns is counted in ``rooms``."""
    if tags is None:
        async with acquire(pool, timeout_s=10.0) as connection:
            rows = await connection.fetch(QUERIES["list_all_tag_sequences"])
        tags = [r["tag"] for r in rows if not str(r["tag"]).startswith("p:")]
    report = RebuildReport()
    for tag in tags:
        try:
            fenced = await store.client.hget(keys.tag_keys(tag).meta, "fenced") == "1"
            if only_fenced and not fenced:
                continue
            report.holds += await rebuild_tag(
                store, pool, tag, raise_oversold=raise_oversold, raised=report.raised
            )
            if after_tag is not None:
                report.rooms += await after_tag(tag)
        except _TAG_FAILURES as error:
            report.failed.append(TagFailure(tag, _reason(error)))
            continue
        report.tags.append(tag)
    try:
        report.patients = await rebuild_patient_tags(store, pool)
    except _TAG_FAILURES as error:
        report.failed.append(TagFailure("patient tags", _reason(error)))
    try:
        report.links, report.slot_locations = await copy_lookups(store, pool)
    except _TAG_FAILURES as error:
        report.failed.append(TagFailure("links and slot locations", _reason(error)))
    return report


def _reason(error: BaseException) -> str:
    """One line: the error's own text (with its kind when the text alone is vague)."""
    text = " ".join(str(error).split())
    if isinstance(error, InventoryError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
