"""The waitlist's durable record: an account's entries as their events left them in
Postgres (``waitlist_entries``, written by the persister; see projection.py)."""

from __future__ import annotations

from typing import Any

from inventory.domain import WaitlistEntry, WaitlistState
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


class PgWaitlist:
    """Reads of ``waitlist_entries`` over an asyncpg pool."""

    def __init__(self, pool: Any, *, acquire_timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout = acquire_timeout_s

    async def list_for_account(self, account_id: str, limit: int) -> list[WaitlistEntry]:
        """The account's entries, newest first, as Postgres last recorded them."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["list_account_waitlist"], account_id, limit)
        return [
            WaitlistEntry(
                entry_id=row["entry_id"],
                schedule_id=row["schedule_id"],
                account_id=row["account_id"],
                patient_id=row["patient_id"],
                channel=row["channel"],
                seq=int(row["join_seq"]),
                state=WaitlistState(row["state"]),
                created_ms=_ms(row["joined_at"]),
                offer_hold_id=row["offer_hold_id"],
                slot_id=row["slot_id"] or "",
                offered_ms=_ms(row["offered_at"]),
                ended_ms=_ms(row["ended_at"]),
                end_reason=row["end_reason"],
                doctor_id=row["doctor_id"] or "",
                day_schedule_ids=tuple(row["day_schedule_ids"]),
            )
            for row in rows
        ]
