"""The no-show rule (爽约) and ban lifting, through the existing ban engine.

The rule, per hospital (``HospitalPolicy``): ``no_show_ban_count`` no-shows within
``no_show_window_days`` ban the patient at that hospital for ``no_show_ban_days``. Each
no-show counts toward one decision only: the no-shows counted are those after the
patient's last ban decision or lift there (a lift forgives what came before it).

The ban itself is ``lua/patient_ban.lua`` on the patient's tag, the key every reserve's
first step (``patient_acquire``) reads in the same script that takes the patient's
token, so a ban is in force for every reserve after it, atomically; its outbox event
keeps ``patient_bans`` current. This module adds the decision's history
(``patient_ban_history``) and the decision's record (``lifecycle_events``:
``patient_banned``, ``patient_ban_lifted``; the patient is told from ``patient_bans``
by the notification triggers).

Order, so that a worker dying anywhere repeats a decision without doubling it: Redis
first (the ban, its end computed from the deciding no-show's time, so a repeat writes the
same value), then one Postgres transaction: history, event (both keyed by the deciding
no-show) and ``ban_checked_at`` on the no-show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from inventory.domain import HospitalPolicy
from inventory.ops import metrics
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

NO_SHOW_RULE = "no_show_rule"
BANNED_EVENT = "patient_banned"
LIFTED_EVENT = "patient_ban_lifted"

#: A hospital's policy by id (None: the defaults).
Policies = Callable[[str], HospitalPolicy | None]


@dataclass(frozen=True, slots=True)
class BanDecision:
    """The rule banned a patient."""

    patient_id: str
    hospital_id: str
    banned_until: datetime
    no_shows: tuple[str, ...]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def current_ban(store: SlotStore, patient_id: str, hospital_id: str) -> datetime | None:
    """Until when the patient is banned at the hospital in Redis (None: not banned)."""
    value = await store.client.hget(keys.patient_keys(patient_id).bans, hospital_id)
    if value is None:
        return None
    until = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    return until if until > datetime.now(tz=UTC) else None


async def apply_no_show_rule(
    pool: Any,
    store: SlotStore,
    policies: Policies,
    *,
    batch_size: int = 100,
    acquire_timeout_s: float = 10.0,
) -> list[BanDecision]:
    """Look at every no-show the rule has not looked at yet; the bans decided."""
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        rows = await connection.fetch(QUERIES["list_unchecked_no_shows"], batch_size)
    decisions = []
    for row in rows:
        decision = await _decide(pool, store, policies(row["hospital_id"]), row, acquire_timeout_s)
        if decision is not None:
            decisions.append(decision)
    return decisions


async def _decide(
    pool: Any,
    store: SlotStore,
    policy: HospitalPolicy | None,
    row: Any,
    acquire_timeout_s: float,
) -> BanDecision | None:
    booking_id, patient_id, hospital_id = row["booking_id"], row["patient_id"], row["hospital_id"]
    at: datetime = row["no_show_at"]
    decision = None
    if policy is not None and policy.no_show_ban_count > 0:
        async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
            last = await connection.fetchrow(QUERIES["last_ban_decision"], patient_id, hospital_id)
            since = at - timedelta(days=policy.no_show_window_days)
            if last is not None and last["at"] > since:
                since = last["at"]
            counted = await connection.fetch(
                QUERIES["list_patient_no_shows"], patient_id, hospital_id, since, at
            )
        if len(counted) >= policy.no_show_ban_count:
            until = at + timedelta(days=policy.no_show_ban_days)
            decision = BanDecision(
                patient_id, hospital_id, until, tuple(r["booking_id"] for r in counted)
            )
            existing = await current_ban(store, patient_id, hospital_id)
            # Never shorten a longer ban (an operator's, say).
            if existing is None or existing < until:
                await store.ban_patient(
                    patient_id, hospital_id=hospital_id, until_ms=_ms(until), reason=NO_SHOW_RULE
                )
    async with (
        acquire(pool, timeout_s=acquire_timeout_s) as connection,
        connection.transaction(),
    ):
        if decision is not None:
            key = f"{BANNED_EVENT}:{booking_id}"
            await connection.execute(
                QUERIES["add_ban_history"],
                key,
                patient_id,
                hospital_id,
                "banned",
                decision.banned_until,
                NO_SHOW_RULE,
                NO_SHOW_RULE,
                list(decision.no_shows),
                at,
            )
            await connection.execute(
                QUERIES["add_patient_event"],
                key,
                BANNED_EVENT,
                patient_id,
                hospital_id,
                at,
                {
                    "reason": NO_SHOW_RULE,
                    "banned_until": decision.banned_until.isoformat(),
                    "no_shows": list(decision.no_shows),
                },
            )
        await connection.execute(QUERIES["mark_ban_checked"], booking_id)
    if decision is not None:
        metrics.observe_ban("applied")
        log.info(
            "visit.patient_banned",
            patient=patient_id,
            hospital=hospital_id,
            until=decision.banned_until.isoformat(),
            no_shows=len(decision.no_shows),
        )
    return decision


async def lift_ban(
    pool: Any,
    store: SlotStore,
    patient_id: str,
    hospital_id: str,
    *,
    reason: str,
    decided_by: str,
    acquire_timeout_s: float = 5.0,
) -> bool:
    """Lift the patient's ban at the hospital (an operator's decision, with why); False
    when there was none in force. The no-shows before it no longer count."""
    if await current_ban(store, patient_id, hospital_id) is None:
        return False
    now = datetime.now(tz=UTC)
    await store.ban_patient(patient_id, hospital_id=hospital_id, until_ms=0, reason=reason)
    key = f"{LIFTED_EVENT}:{patient_id}:{hospital_id}:{_ms(now)}"
    async with (
        acquire(pool, timeout_s=acquire_timeout_s) as connection,
        connection.transaction(),
    ):
        await connection.execute(
            QUERIES["add_ban_history"],
            key,
            patient_id,
            hospital_id,
            "lifted",
            None,
            reason,
            decided_by,
            [],
            now,
        )
        await connection.execute(
            QUERIES["add_patient_event"],
            key,
            LIFTED_EVENT,
            patient_id,
            hospital_id,
            now,
            {"reason": reason, "decided_by": decided_by},
        )
    metrics.observe_ban("lifted")
    log.info("visit.ban_lifted", patient=patient_id, hospital=hospital_id, by=decided_by)
    return True


async def ban_history(pool: Any, patient_id: str, *, acquire_timeout_s: float = 5.0) -> list[Any]:
    """The patient's ban decisions and lifts, newest first."""
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        return list(await connection.fetch(QUERIES["list_patient_ban_history"], patient_id))
