"""``inventory rebuild``: restore Redis state from Postgres, the durable record.

For each tag: its schedules and slot capacities, its open holds and bookings, the
hospital's policy and the highest sequence Postgres recorded; one atomic script
replaces the tag's keys with that and lifts its fence. Patient tags get their tokens
(one per open hold or booking) and bans back. A hold that was never persisted is lost,
which the durability contract allows (the patient paid nothing); a confirmed booking
never is, because confirm answers only after Postgres has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from inventory import keys
from inventory.catalogue import policy_from_json
from inventory.db.pool import acquire
from inventory.db.queries import QUERIES
from inventory.store import SlotStore, fingerprint


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


@dataclass
class RebuildReport:
    """What a rebuild restored."""

    tags: list[str] = field(default_factory=list)
    holds: int = 0
    patients: int = 0


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


async def rebuild_tag(store: SlotStore, pool: Any, tag: str, *, attempts: int = 5) -> int:
    """Replace one tag's Redis state with Postgres's; returns the open holds restored.

    A persister may still commit entries of the tag's old stream while we read; if
    Postgres's sequence moved meanwhile, the state we wrote is already behind, so read
    and replace again (the replacement is idempotent)."""
    for _ in range(attempts):
        seq_used, restored = await _rebuild_once(store, pool, tag)
        async with acquire(pool, timeout_s=10.0) as connection:
            row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
        # seq_used + 1 is the rebuild's own store_rebuilt event, persisted already.
        if (int(row["last_seq"]) if row else 0) <= seq_used + 1:
            return restored
    raise RuntimeError(
        f"tag {tag}: Postgres kept moving during the rebuild; stop the persister and rebuild again"
    )


async def _rebuild_once(store: SlotStore, pool: Any, tag: str) -> tuple[int, int]:
    department_id, day = tag.split(":")
    visit_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    async with acquire(pool, timeout_s=10.0) as connection:
        seq_row = await connection.fetchrow(QUERIES["get_tag_sequence"], tag)
        schedules = await connection.fetch(
            QUERIES["list_department_schedules"], department_id, visit_date
        )
        slots = await connection.fetch(QUERIES["list_tag_slots"], department_id, visit_date)
        holds = await connection.fetch(QUERIES["list_tag_open_holds"], tag)
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
        "hospital": hospital["id"] if hospital else "",
        "department": department_id,
        "date": visit_date.isoformat(),
    }
    seq = int(seq_row["last_seq"]) if seq_row else 0
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
        slots=[
            {"id": s["id"], "schedule": s["schedule_id"], "cap": int(s["capacity"])} for s in slots
        ],
        holds=[hold_record(h) for h in holds],
    )
    await store.client.sadd(keys.TAG_REGISTRY_KEY, tag)
    return seq, len(holds)


async def rebuild_patient_tags(store: SlotStore, pool: Any) -> int:
    """Settle a token for every open hold or booking (the rules that span tags count
    them) and restore current bans; returns the patients touched."""
    async with acquire(pool, timeout_s=10.0) as connection:
        rows = await connection.fetch(QUERIES["list_open_patient_holds"])
        bans = await connection.fetch(QUERIES["list_current_bans"])
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
    return len(by_patient)


async def rebuild(
    store: SlotStore, pool: Any, *, tags: list[str] | None = None, only_fenced: bool = False
) -> RebuildReport:
    """Rebuild the given tags, every tag Postgres knows, or only the fenced ones."""
    if tags is None:
        async with acquire(pool, timeout_s=10.0) as connection:
            rows = await connection.fetch(QUERIES["list_all_tag_sequences"])
        tags = [r["tag"] for r in rows if not str(r["tag"]).startswith("p:")]
    report = RebuildReport()
    for tag in tags:
        if only_fenced and await store.client.hget(keys.tag_keys(tag).meta, "fenced") != "1":
            continue
        report.holds += await rebuild_tag(store, pool, tag)
        report.tags.append(tag)
    report.patients = await rebuild_patient_tags(store, pool)
    return report
