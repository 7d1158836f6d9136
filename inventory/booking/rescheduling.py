"""Rescheduling (改约): a patient moves a paid booking to another window of the same
hospital before the cancellation deadline, keeping the payment.

A move is one row in Postgres (``reschedules``, keyed by the new booking's id, which is
derived from the request's Idempotency-Key like a reserve's hold id) and store steps
taken under that row's lock:

- **Within one department-day tag**, one script (lua/reschedule.lua) cancels the old
  booking and books the target at once: the two units are never held together, never
  both lost.
- **Across tags** (another day or department), three steps: the old booking is marked as
  moving until an instant (lua/reschedule_mark.lua ``begin``; its patient cannot cancel
  it meanwhile), the target is booked in its own tag (lua/reschedule_take.lua, which
  refuses after that instant), then the old booking is cancelled (``finish``). A refusal
  of the second step drops the mark at once (``abort``). A process that dies between
  the steps leaves the row pending: :func:`recover_moves` (the worker) finds it once the
  mark's instant and a clock margin are over, then finishes the move when the new
  booking exists, or drops the mark when it does not (it can no longer appear).

Under rules that span tags the new booking takes a patient token that does not count
the booking it replaces (``replaces``), and the old token is dropped once the move is
done. Money: the new booking keeps the old one's payment (``payments.booking_id`` moves
on in the transaction that closes the row); a cheaper target refunds the difference as
the payment's part n (the booking line's n-th move); a dearer one is refused
(``reschedule_fee_higher``). The HIS is told by the usual queues: the old booking's
cancellation is sent as any cancellation, the new booking is submitted as any new
booking (our id is the Appointment identifier, created with If-None-Exist).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from inventory.domain import Hold, HospitalPolicy, SlotLocation
from inventory.errors import (
    HoldNotActiveError,
    IdempotencyKeyReusedError,
    InventoryError,
    NotFoundError,
    RefusedError,
    RescheduleInProgressError,
    ValidationFailedError,
)
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.payments import refunds
from inventory.payments.refunds import refund_payment
from inventory.record.bookings import PgBookings, record_hold
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import TOKEN_CLOCK_MARGIN_MS, SlotStore

log = structlog.get_logger(__name__)

#: The new booking's id is hold_id_for(account, this + the request's key, target tag).
MOVE_KEY_PREFIX: Final = "reschedule:"
#: Why the old booking ended, and the refund reason of a cheaper target's difference.
RESCHEDULED: Final = "rescheduled"
#: The new booking was made but the old one had been cancelled meanwhile (停诊, HIS): the
#: new one is given back, and the old one's own refund settles the money.
SOURCE_CANCELLED: Final = "rescheduled_source_cancelled"
#: The kind of a move that answers a doctor substitution offer (替诊).
SUBSTITUTION: Final = "substitution"
#: The lifecycle_events type of a done move (the notifier's outbox).
RESCHEDULED_EVENT: Final = "booking_rescheduled"
#: How long past a move's mark the worker waits before it decides the move (s).
RECOVERY_MARGIN_S: Final = TOKEN_CLOCK_MARGIN_MS / 1000 + 1.0


@dataclass(frozen=True, slots=True)
class Move:
    """A move as its row records it."""

    reschedule_id: str
    booking_id: str
    account_id: str
    patient_id: str
    slot_id: str
    kind: str
    status: str  #: pending, done or aborted
    old_amount_fen: int
    new_amount_fen: int | None
    refund_fen: int
    error: str

    @classmethod
    def from_row(cls, row: Any) -> Move:
        return cls(
            reschedule_id=row["reschedule_id"],
            booking_id=row["booking_id"],
            account_id=row["account_id"],
            patient_id=row["patient_id"],
            slot_id=row["slot_id"],
            kind=row["kind"],
            status=row["status"],
            old_amount_fen=int(row["old_amount_fen"]),
            new_amount_fen=None if row["new_amount_fen"] is None else int(row["new_amount_fen"]),
            refund_fen=int(row["refund_fen"]),
            error=row["error"],
        )


class Rescheduling:
    """Moves of bookings for one process (the API's, or the worker's recovery)."""

    def __init__(
        self,
        *,
        store: SlotStore,
        catalogue: PgCatalogue,
        bookings: PgBookings,
        db: Any,
        payments_enabled: bool,
        acquire_timeout_s: float = 5.0,
    ) -> None:
        """``db`` is the asyncpg pool the moves' rows live in; ``payments_enabled``: a
        booking's fee was paid through the provider (a dearer target is refused)."""
        self._store = store
        self._catalogue = catalogue
        self._bookings = bookings
        self._db = db
        self._payments_enabled = payments_enabled
        self._timeout = acquire_timeout_s

    async def reschedule(
        self,
        booking_id: str,
        *,
        account_id: str,
        slot_id: str,
        idempotency_key: str,
        request_id: str = "",
        kind: str = "patient",
    ) -> dict[str, Any]:
        """Move one of the account's bookings (``account_id`` "": an operator's move,
        ``kind`` substitution: no cancellation deadline, no reschedule limit) to
        ``slot_id``: the answer (the new booking's view, the booking it replaced, the
        difference refunded). A retry with the same key answers the same move."""
        catalogue, bookings = self._catalogue, self._bookings
        old = await self._store.get_hold(booking_id)
        if old is None or (account_id and old.account_id != account_id):
            raise NotFoundError("no such booking")
        target = await catalogue.slot_location(slot_id)
        source = await catalogue.slot_location(old.slot_id)
        if target is None or source is None:
            raise NotFoundError("no such slot")
        if target.hospital_id != source.hospital_id:
            raise ValidationFailedError(
                "a booking moves within its hospital",
                errors=[{"field": "slot_id", "reason": "a slot of another hospital"}],
            )
        tag = keys.department_day_tag(target.department_id, target.visit_date)
        new_id = keys.hold_id_for(old.account_id, MOVE_KEY_PREFIX + idempotency_key, tag)
        policy = self._store.policies.for_hospital(target.hospital_id)
        until_ms = await self._store.now_ms() + policy.token_window_s * 1000
        async with acquire(self._db, timeout_s=self._timeout) as connection:
            # Committed before the first store step (its own statement): if the steps'
            # transaction below cannot commit, the row is still there for the worker.
            await connection.execute(
                QUERIES["insert_reschedule"],
                new_id,
                booking_id,
                old.account_id,
                old.patient_id,
                slot_id,
                kind,
                old.amount_fen,
                datetime.fromtimestamp(until_ms / 1000, tz=UTC),
            )
            refused: RefusedError | None = None
            async with connection.transaction():
                row = await connection.fetchrow(QUERIES["lock_reschedule"], new_id)
                move = Move.from_row(row)
                if move.booking_id != booking_id or move.slot_id != slot_id:
                    raise IdempotencyKeyReusedError()
                if move.status == "pending":
                    try:
                        new = await self._steps(
                            old, new_id, slot_id, target, policy, until_ms, kind, request_id
                        )
                    except RefusedError as error:
                        # The refusal is the answer; the row says so (committed), and a
                        # retry with the same key tries again (insert_reschedule reopens it).
                        refused = error
                        await connection.execute(
                            QUERIES["finish_reschedule"], new_id, "aborted", None, 0, error.code
                        )
                        await _reopen_offer(connection, move)
                    else:
                        move = await self._settle(connection, move, new)
                elif move.status != "done":  # pragma: no cover - insert reopens it
                    raise RescheduleInProgressError()
            if refused is not None:
                raise refused
        return {
            "reschedule_id": new_id,
            "from_booking_id": booking_id,
            "refund_fen": move.refund_fen,
            "booking": await bookings.get_for_account(new_id, old.account_id),
        }

    async def _steps(
        self,
        old: Hold,
        new_id: str,
        slot_id: str,
        target: SlotLocation,
        policy: HospitalPolicy,
        until_ms: int,
        kind: str,
        request_id: str,
    ) -> Hold:
        """The store steps of a move (under its row's lock): the new booking."""
        store = self._store
        force = kind == "substitution"
        account = "" if force else old.account_id
        max_amount = old.amount_fen if self._payments_enabled else -1
        token_deadline, fresh_token = 0, False
        if policy.spans_tags:
            token_deadline, fresh_token = await store.acquire_patient_token(
                old.patient_id,
                new_id,
                hospital_id=target.hospital_id,
                policy=policy,
                replaces=old.hold_id,
            )
        try:
            if keys.tag_of_hold(old.hold_id) == keys.tag_of_hold(new_id):
                outcome = await store.reschedule_in_tag(
                    old.hold_id,
                    new_id,
                    account_id=account,
                    slot_id=slot_id,
                    max_moves=policy.max_reschedules,
                    max_amount=max_amount,
                    force=force,
                    request_id=request_id,
                )
                new = outcome.hold
            else:
                new = await self._across(
                    old, new_id, slot_id, policy, until_ms, token_deadline, max_amount, force,
                    account, request_id,
                )  # fmt: skip
        except RefusedError:
            if fresh_token:
                await store.release_patient_tokens(old.patient_id, [new_id])
            raise
        if policy.spans_tags:
            with contextlib.suppress(InventoryError):
                await store.settle_patient_token(old.patient_id, new_id)
            await store.release_patient_tokens(old.patient_id, [old.hold_id])
        return new

    async def _across(
        self,
        old: Hold,
        new_id: str,
        slot_id: str,
        policy: HospitalPolicy,
        until_ms: int,
        token_deadline: int,
        max_amount: int,
        force: bool,
        account: str,
        request_id: str,
    ) -> Hold:
        """A move to another tag: mark, take, finish (abort at once on a refusal)."""
        store = self._store
        marked = await store.mark_move(
            "begin",
            old.hold_id,
            new_id,
            account_id=account,
            until_ms=until_ms,
            max_moves=policy.max_reschedules,
            force=force,
            request_id=request_id,
        )
        try:
            taken = await store.take_move(
                new_id,
                marked.hold,
                slot_id=slot_id,
                until_ms=marked.hold.moving_until_ms,
                token_deadline_ms=token_deadline,
                max_amount=max_amount,
                request_id=request_id,
            )
        except RefusedError:
            # The take refused: it cannot happen any more under this lock, so the mark
            # goes now (a dead process's mark waits for its time to be over instead).
            await store.mark_move("abort", old.hold_id, new_id, until_ms=-1)
            raise
        await finish_move(store, old.hold_id, new_id, request_id=request_id)
        return taken.hold

    async def _settle(self, connection: Any, move: Move, new: Hold) -> Move:
        """Close a move in Postgres (in the lock's transaction): both bookings recorded,
        the payment handed on, a cheaper target's difference refunded."""
        old = await self._store.get_hold(move.booking_id)
        return await settle_move(connection, move, old, new)


async def finish_move(store: SlotStore, old_id: str, new_id: str, *, request_id: str = "") -> None:
    """Step three of a move across tags: the old booking cancelled for the new one. If
    something else ended the old booking meanwhile (a forced cancellation: 停诊, the HIS),
    the new one is given back (its payment stays with the old one, which that path
    refunded) and :class:`HoldNotActiveError` says so."""
    try:
        await store.mark_move("finish", old_id, new_id, request_id=request_id)
    except HoldNotActiveError:
        await store.release(
            new_id, account_id="", reason=SOURCE_CANCELLED, force=True, request_id=request_id
        )
        raise


async def settle_move(connection: Any, move: Move, old: Hold | None, new: Hold) -> Move:
    """The Postgres side of a done move, on ``connection`` inside its transaction."""
    if old is not None:
        await record_hold(connection, old)
    await record_hold(connection, new)
    payment = await connection.fetchrow(
        QUERIES["move_booking_payment"], move.booking_id, new.hold_id
    )
    refund_fen = 0
    refund_id: str | None = None
    if payment is not None and move.old_amount_fen > new.amount_fen:
        refund_fen = move.old_amount_fen - new.amount_fen
        refund = await refund_payment(
            connection,
            payment["payment_id"],
            move.booking_id,
            refund_fen,
            refunds.RESCHEDULED,
            f"{MOVE_KEY_PREFIX}{new.hold_id}",
            part=max(1, new.moves),
        )
        refund_id = refund.refund_id
    # For the notifier: the patient is told where and when the booking is now.
    await connection.execute(
        QUERIES["add_booking_event"],
        f"{RESCHEDULED_EVENT}:{new.hold_id}",
        RESCHEDULED_EVENT,
        new.hold_id,
        datetime.now(tz=UTC),
        {
            "code": RESCHEDULED,
            "kind": move.kind,
            "from_booking_id": move.booking_id,
            "refund_fen": refund_fen,
            "refund_id": refund_id,
        },
    )
    await connection.execute(
        QUERIES["finish_reschedule"], move.reschedule_id, "done", new.amount_fen, refund_fen, ""
    )
    if move.kind == SUBSTITUTION:
        # The offer is closed by the transaction that closes its move, whoever closes it.
        await connection.execute(
            QUERIES["close_substitution_offer"], move.booking_id, "accepted", new.hold_id
        )
    log.info(
        "booking.rescheduled",
        booking=move.booking_id,
        to=new.hold_id,
        refund_fen=refund_fen,
        kind=move.kind,
    )
    return Move(**{**_fields(move), "status": "done", "refund_fen": refund_fen})


async def _reopen_offer(connection: Any, move: Move) -> None:
    """A substitution's move that did not happen: its offer is open again (the patient
    may decline it, or it runs out and the suspension cancels the booking)."""
    if move.kind == SUBSTITUTION:
        await connection.execute(
            QUERIES["close_substitution_offer"], move.booking_id, "offered", None
        )


def _fields(move: Move) -> dict[str, Any]:
    return {name: getattr(move, name) for name in Move.__slots__}


# -- recovery (the worker) ----------------------------------------------------------------


@dataclass
class RecoveryStats:
    """What the recovery loop did."""

    rounds: int = 0
    finished: int = 0
    aborted: int = 0
    last_error: str = ""


async def recover_moves(
    pool: Any, store: SlotStore, *, limit: int = 50, stats: RecoveryStats | None = None
) -> int:
    """Decide the moves left pending by a process that died between their steps, once
    their mark's time and a clock margin are over: finished when the new booking exists
    (then settled like any move), aborted when it does not. How many were decided."""
    stats = stats if stats is not None else RecoveryStats()
    async with acquire(pool) as connection:
        rows = await connection.fetch(
            QUERIES["claim_pending_reschedules"], RECOVERY_MARGIN_S, limit, 60.0
        )
    decided = 0
    for row in rows:
        async with acquire(pool) as connection, connection.transaction():
            locked = await connection.fetchrow(QUERIES["lock_reschedule"], row["reschedule_id"])
            if locked is None or locked["status"] != "pending":
                continue
            move = Move.from_row(locked)
            if await _recover(connection, store, move, stats):
                decided += 1
    return decided


async def _recover(connection: Any, store: SlotStore, move: Move, stats: RecoveryStats) -> bool:
    new = await store.get_hold(move.reschedule_id)
    across = keys.tag_of_hold(move.booking_id) != keys.tag_of_hold(move.reschedule_id)
    if new is None:
        if across:
            try:
                await store.mark_move(
                    "abort", move.booking_id, move.reschedule_id, until_ms=TOKEN_CLOCK_MARGIN_MS
                )
            except RescheduleInProgressError:
                return False  # the mark's own clock is not past it yet: next round
        await connection.execute(
            QUERIES["finish_reschedule"], move.reschedule_id, "aborted", None, 0, "interrupted"
        )
        await _reopen_offer(connection, move)
        await store.release_patient_tokens(move.patient_id, [move.reschedule_id])
        stats.aborted += 1
        log.info("booking.reschedule_aborted", booking=move.booking_id, to=move.reschedule_id)
        return True
    if across:
        try:
            await finish_move(store, move.booking_id, move.reschedule_id)
        except HoldNotActiveError:
            await connection.execute(
                QUERIES["finish_reschedule"],
                move.reschedule_id,
                "aborted",
                None,
                0,
                SOURCE_CANCELLED,
            )
            await _reopen_offer(connection, move)
            stats.aborted += 1
            return True
        new = await store.get_hold(move.reschedule_id) or new
    # The new booking's token is settled by the reaper when it finds it open; the old
    # one's is dropped here.
    await store.release_patient_tokens(move.patient_id, [move.booking_id])
    await settle_move(connection, move, await store.get_hold(move.booking_id), new)
    stats.finished += 1
    return True


async def run_move_recovery(
    pool: Any,
    store: SlotStore,
    *,
    stop: asyncio.Event,
    interval_s: float = 2.0,
    stats: RecoveryStats | None = None,
) -> None:
    """:func:`recover_moves` every ``interval_s`` until ``stop``; Redis or Postgres
    away: back off and resume."""
    stats = stats if stats is not None else RecoveryStats()
    backoff = Backoff(interval_s, max(interval_s, 30.0))
    while not stop.is_set():
        stats.rounds += 1
        try:
            await recover_moves(pool, store, stats=stats)
        except TRANSIENT_ERRORS as error:
            stats.last_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("booking.reschedule_recovery_failed", error=stats.last_error)
            await sleep_unless_stopped(stop, backoff.next_delay())
            continue
        backoff.reset()
        await sleep_unless_stopped(stop, interval_s)
