"""Refunds: the one API to request one, and how a refund row looks to its callers.

A registration fee is refunded once: a payment has at most one refund row per part
(``refunds_payment_part_key``), whoever asks and however often. Part 0 refunds what is
left of the payment; a reschedule (改约) to a cheaper window refunds the difference as
part n, its booking line's n-th move (:func:`refund_part`). The refund loop
(:mod:`inventory.payments.loops`) sends it to the provider, retrying the same row and the
same out_refund_no until the provider says it succeeded.

Callers (the cancel route, the payment settlement, the HIS flow on a refusal, the payment
loop's safety net) call :func:`request_refund`; nobody writes the ``refunds`` table
directly::

    from inventory.payments.refunds import request_refund

    refund = await request_refund(
        pool_or_connection, booking_id, None, "his_rejected", f"his:{booking_id}:rejected"
    )
    # None: nothing was paid for this booking through a provider, nothing to refund.

Given a connection, the request joins the caller's transaction (if one is open), so a
booking's refusal and its refund request can commit together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.payments.errors import RefundRequestError
from inventory.payments.ids import refund_id_for
from inventory.record.pool import acquire, database_errors
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.keys import InvalidIdError

#: Reasons are short snake_case codes (the refunds table checks the same).
REASON_RE = re.compile(r"[a-z_]{1,40}")
_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")

#: Reasons this package uses; callers may use others of the same shape.
PATIENT_CANCELLED = "patient_cancelled"
HIS_REJECTED = "his_rejected"
EXPIRED_AFTER_PAYMENT = "expired_after_payment"
RELEASED_BEFORE_PAYMENT = "released_before_payment"
DUPLICATE_PAYMENT = "duplicate_payment"
SUSPENDED = "suspended"
AMOUNT_MISMATCH = "amount_mismatch"
BOOKING_CANCELLED = "booking_cancelled"
RESCHEDULED = "rescheduled"
#: A charged move's fee difference paid, but the move did not happen (its hold ran out,
#: the old booking was cancelled meanwhile...): the difference is refunded whole.
RESCHEDULE_NOT_COMPLETED = "reschedule_not_completed"


def local(value: datetime | None, zone: tzinfo) -> str | None:
    """An instant as answers write it: in ``zone`` (the hospital's), with its offset."""
    return value.astimezone(zone).isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund as its row records it."""

    refund_id: str
    payment_id: str
    booking_id: str
    amount_fen: int
    reason: str
    status: str  #: pending, succeeded or failed (failed ones are retried)
    provider_refund_id: str | None
    attempts: int
    last_error: str
    created_at: datetime
    succeeded_at: datetime | None
    #: False when this request found the refund already requested (by anyone).
    created: bool = False

    @classmethod
    def from_row(cls, row: Any, *, created: bool = False) -> Refund:
        """From a row of the refund queries (``insert_refund`` and the like)."""
        return cls(
            refund_id=row["refund_id"],
            payment_id=row["payment_id"],
            booking_id=row["hold_id"],
            amount_fen=int(row["amount_fen"]),
            reason=row["reason"],
            status=row["status"],
            provider_refund_id=row["provider_refund_id"],
            attempts=int(row["attempts"]),
            last_error=row["last_error"],
            created_at=row["created_at"],
            succeeded_at=row["succeeded_at"],
            created=created,
        )

    def view(self, *, zone: tzinfo = UTC) -> dict[str, Any]:
        """As the API shows it (no provider internals; instants in ``zone``)."""
        return {
            "refund_id": self.refund_id,
            "booking_id": self.booking_id,
            "payment_id": self.payment_id,
            "amount_fen": self.amount_fen,
            "reason": self.reason,
            "status": self.status,
            "created_at": local(self.created_at, zone),
            "succeeded_at": local(self.succeeded_at, zone),
        }


def refunds_view(refunds: list[Refund], *, zone: tzinfo = UTC) -> dict[str, Any]:
    """A booking's refunds as the API shows them: the first one's ids and reason, the
    amounts summed, ``pending`` until every part succeeded (``failed`` when one did),
    ``succeeded_at`` the last part's, and each refund in ``parts``. ``refunds``: one or
    more, oldest first."""
    parts = [refund.view(zone=zone) for refund in refunds]
    statuses = {refund.status for refund in refunds}
    status = "succeeded"
    for worst in ("failed", "pending"):
        if worst in statuses:
            status = worst
            break
    finished = [refund.succeeded_at for refund in refunds if refund.succeeded_at is not None]
    return {
        **parts[0],
        "amount_fen": sum(refund.amount_fen for refund in refunds),
        "status": status,
        "succeeded_at": local(max(finished), zone) if status == "succeeded" else None,
        "parts": parts,
    }


async def request_refund(
    db: Any,
    booking_id: str,
    amount_fen: int | None,
    reason: str,
    idempotency_key: str,
    *,
    acquire_timeout_s: float = 5.0,
) -> Refund | None:
    """Request the refund of what was paid for a booking (or for a hold that never became
    one), once.

    ``db`` is an asyncpg pool or connection (a connection joins its open transaction).
    ``amount_fen`` is None for "whatever was paid" (less what reschedules refunded); a
    registration fee is refunded whole, so any other amount is a
    :class:`RefundRequestError`. ``reason`` is
    a snake_case code (``his_rejected``, ``patient_cancelled``...); ``idempotency_key`` is
    recorded with the refund the first request creates.

    Returns the refund (``created`` False when it had been requested before, whatever the
    reason or key then), or None when nothing was paid for ``booking_id`` through a
    provider. Raises DatabaseUnavailableError when Postgres is down (retry).
    """
    try:
        keys.tag_of_hold(booking_id)
    except InvalidIdError:
        raise RefundRequestError("booking_id is not a booking or hold id") from None
    if not REASON_RE.fullmatch(reason):
        raise RefundRequestError("reason must be 1-40 of a-z and _")
    if not _KEY_RE.fullmatch(idempotency_key):
        raise RefundRequestError("idempotency_key must be 1-128 printable ASCII characters")
    if amount_fen is not None and amount_fen <= 0:
        raise RefundRequestError("amount_fen must be positive")
    if isinstance(db, asyncpg.Pool):
        async with acquire(db, timeout_s=acquire_timeout_s) as connection:
            return await _request(connection, booking_id, amount_fen, reason, idempotency_key)
    with database_errors():
        return await _request(db, booking_id, amount_fen, reason, idempotency_key)


async def _request(
    connection: Any, booking_id: str, amount_fen: int | None, reason: str, key: str
) -> Refund | None:
    # A booking is backed by its line's fee payment and, after charged moves (改约 to a
    # dearer window), by their difference payments: each is refunded what is left of it.
    first: Refund | None = None
    for payment in await connection.fetch(QUERIES["list_booking_payments"], booking_id):
        left = int(payment["amount_fen"]) - int(
            await connection.fetchval(QUERIES["refunded_parts_fen"], payment["payment_id"])
        )
        if left <= 0 and amount_fen is None:
            continue  # reschedules to cheaper windows refunded all of it already
        refund = await refund_payment(
            connection,
            payment["payment_id"],
            booking_id,
            amount_fen if amount_fen is not None else left,
            reason,
            key,
            paid_fen=left,
        )
        first = first or refund
    return first


async def refund_payment(
    connection: Any,
    payment_id: str,
    booking_id: str,
    amount_fen: int,
    reason: str,
    key: str,
    *,
    paid_fen: int | None = None,
    part: int = 0,
) -> Refund:
    """Request the refund of one paid payment (``part``: 0 for what is left of it, n for
    the n-th reschedule's fee difference) on ``connection`` (the settlement's own
    transaction uses this directly); the existing refund of that part if there is one."""
    if paid_fen is not None and amount_fen != paid_fen:
        raise RefundRequestError(
            f"a registration fee is refunded whole: {paid_fen} fen, not {amount_fen}"
        )
    row = await connection.fetchrow(
        QUERIES["insert_refund"],
        refund_id_for(payment_id, part),
        payment_id,
        booking_id,
        amount_fen,
        reason,
        key,
        part,
    )
    if row is not None:
        return Refund.from_row(row, created=True)
    existing = await connection.fetchrow(QUERIES["get_payment_refund"], payment_id, part)
    if existing is None:
        raise RefundRequestError(f"payment {payment_id} is not paid: nothing to refund")
    return Refund.from_row(existing)


async def booking_refunds(
    pool: Any, account_id: str, booking_id: str, *, acquire_timeout_s: float = 5.0
) -> list[Refund]:
    """Every refund of one of the account's bookings (or holds), oldest first: more than
    one when charged moves put more than one payment behind it; none for another
    account's."""
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        rows = await connection.fetch(
            QUERIES["list_account_booking_refunds"], account_id, booking_id
        )
    return [Refund.from_row(row) for row in rows]
