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
the payment's part n (the booking line's n-th move). A dearer one is a *charged move*
(with payments on, unless the hospital's ``charge_fee_difference`` is off: then it is
refused, ``reschedule_fee_higher``): the steps run across (mark, take) even within one
tag, the take *holds* the new unit until the difference's payment deadline (the mark
lasts as long), and a payment of the difference is opened in the move's transaction.
The move completes (confirm, finish, the row closed) in the transaction that settles
that payment (:meth:`Rescheduling.settle_difference`, called by the payments service
under the payment's lock), or by the worker's recovery when a process died between
confirm and finish. Unpaid by the deadline, the expirer frees the unit and the recovery
drops the mark: the old booking stays; a difference paid for a move that did not
happen is refunded whole (``reschedule_not_completed``). The HIS is told by the usual
queues: the old booking's cancellation is sent as any cancellation, the new booking is
submitted as any new booking (our id is the Appointment identifier, created with
If-None-Exist).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from inventory.domain import Hold, HoldState, HospitalPolicy, SlotLocation
from inventory.errors import (
    AlreadyConfirmedError,
    HoldExpiredError,
    HoldNotActiveError,
    HoldNotFoundError,
    IdempotencyKeyReusedError,
    InventoryError,
    NotFoundError,
    RefusedError,
    RescheduleFeeHigherError,
    RescheduleInProgressError,
    ScheduleSuspendedError,
    ValidationFailedError,
)
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.payments import refunds
from inventory.payments.refunds import refund_payment
from inventory.payments.service import Payment, Payments
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
#: The lifecycle_events type of a done move (copied for the notifier by a trigger).
RESCHEDULED_EVENT: Final = "booking_rescheduled"
#: Why a charged move's new hold was given back (its move did not happen).
CHARGE_ABANDONED: Final = "reschedule_abandoned"
#: Confirming a charged move's hold refused these ways: the move will not happen.
_UNCONFIRMABLE: Final = (
    HoldExpiredError,
    HoldNotActiveError,
    HoldNotFoundError,
    ScheduleSuspendedError,
    AlreadyConfirmedError,
)
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
    #: The fee difference a charged move charges (0: the old payment covers the fee).
    charge_fen: int = 0

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
            charge_fen=int(row["charge_fen"]),
        )

    @property
    def charged(self) -> bool:
        """A move to a dearer window whose difference is paid through its own payment."""
        return self.charge_fen > 0


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
        charges: Payments | None = None,
    ) -> None:
        """``db`` is the asyncpg pool the moves' rows live in; ``payments_enabled``: a
        booking's fee was paid through the provider; ``charges`` opens the payments of
        dearer targets' differences (None: a dearer target is refused; the composition
        root sets it once the payments service exists)."""
        self._store = store
        self._catalogue = catalogue
        self._bookings = bookings
        self._db = db
        self._payments_enabled = payments_enabled
        self._timeout = acquire_timeout_s
        self.charges = charges

    async def reschedule(
        self,
        booking_id: str,
        *,
        account_id: str,
        slot_id: str,
        idempotency_key: str,
        request_id: str = "",
        kind: str = "patient",
        method: str = "jsapi",
    ) -> dict[str, Any]:
        """Move one of the account's bookings (``account_id`` "": an operator's move,
        ``kind`` substitution: no cancellation deadline, no reschedule limit) to
        ``slot_id``: the answer (the new booking's view, the booking it replaced, the
        difference refunded). A dearer target (a charged move) answers ``status``
        awaiting_payment with the difference's payment (paid with ``method``) and no
        booking yet. A retry with the same key answers the same move."""
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
        charge_fen = await self._foreseen_charge(old, target, policy)
        merchant = (
            await self.charges.merchant_of_schedule(target.schedule_id)
            if charge_fen > 0 and self.charges is not None
            else None
        )
        # A charged move's mark lasts as long as its new hold: the difference's payment
        # deadline (the hospital's hold time).
        window_s = policy.hold_ttl_s if charge_fen > 0 else policy.token_window_s
        until_ms = await self._store.now_ms() + window_s * 1000
        payment: Payment | None = None
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
                charge_fen,
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
                            old, new_id, slot_id, target, policy, until_ms, kind, request_id,
                            charged=move.charged,
                        )  # fmt: skip
                        if move.charged:
                            move, payment = await self._charged(
                                connection, move, new, method, merchant
                            )
                        else:
                            move = await self._settle(connection, move, new)
                    except RefusedError as error:
                        # The refusal is the answer; the row says so (committed), and a
                        # retry with the same key tries again (insert_reschedule reopens it).
                        refused = error
                        await connection.execute(
                            QUERIES["finish_reschedule"], new_id, "aborted", None, 0, error.code
                        )
                        await _reopen_offer(connection, move)
                elif move.status != "done":  # pragma: no cover - insert reopens it
                    raise RescheduleInProgressError()
            if refused is not None:
                raise refused
        awaiting = move.status == "pending"
        return {
            "reschedule_id": new_id,
            "from_booking_id": booking_id,
            "status": "awaiting_payment" if awaiting else "done",
            "refund_fen": move.refund_fen,
            "charge_fen": move.charge_fen,
            "payment_id": payment.payment_id if payment is not None else None,
            "pay_by": (
                payment.hold_deadline.isoformat()
                if payment is not None and payment.hold_deadline is not None
                else None
            ),
            "booking": None if awaiting else await bookings.get_for_account(new_id, old.account_id),
        }

    async def _foreseen_charge(
        self, old: Hold, target: SlotLocation, policy: HospitalPolicy
    ) -> int:
        """The fee difference a move to ``target`` charges, as the catalogue has the fee
        (the store's take decides with its own): 0 when the old payment covers it or
        payments are off; a dearer target with charging off (the hospital's policy, or
        no payments service) is refused here."""
        if not self._payments_enabled:
            return 0
        schedule = await self._catalogue.schedule(target.schedule_id)
        fee = int(schedule["fee_fen"]) if schedule is not None else 0
        if fee <= old.amount_fen:
            return 0
        if not policy.charge_fee_difference or self.charges is None:
            raise RescheduleFeeHigherError(fee_fen=fee)
        return fee - old.amount_fen

    async def _charged(
        self,
        connection: Any,
        move: Move,
        new: Hold,
        method: str,
        merchant: tuple[str, str] | None,
    ) -> tuple[Move, Payment | None]:
        """After a charged move's steps (in its transaction): the difference's payment
        opened for a live hold; a hold already paid (a retry after the payment) completes
        the move; one that ran out or was given back aborts it (the refusal)."""
        if new.state is HoldState.BOOKED:
            return await complete_move(connection, self._store, move, new), None
        if new.state is not HoldState.HELD or new.deadline_ms <= await self._store.now_ms():
            await abandon_charge(self._store, move)
            raise HoldExpiredError()
        charge_fen = new.amount_fen - move.old_amount_fen
        if charge_fen <= 0:
            # The fee fell between the catalogue's look and the store's step: the old
            # payment covers it, so the hold is booked with it at once.
            confirmed = await self._store.confirm(
                new.hold_id, account_id="", payment_ref=await self._old_payment_ref(move)
            )
            return await complete_move(connection, self._store, move, confirmed.hold), None
        if charge_fen != move.charge_fen:
            await connection.execute(
                QUERIES["set_reschedule_charge"], move.reschedule_id, charge_fen
            )
        assert self.charges is not None  # _foreseen_charge refused without it
        payment = await self.charges.open_difference(
            connection,
            new,
            charge_fen,
            method=method,
            sub_mchid=merchant[0] if merchant is not None else None,
        )
        log.info(
            "booking.reschedule_charged",
            booking=move.booking_id,
            to=new.hold_id,
            charge_fen=charge_fen,
        )
        return Move(**{**_fields(move), "charge_fen": charge_fen}), payment

    async def _old_payment_ref(self, move: Move) -> str:
        old = await self._store.get_hold(move.booking_id)
        return old.payment_ref if old is not None and old.payment_ref else move.booking_id

    async def settle_difference(
        self, connection: Any, payment: Payment
    ) -> tuple[Hold | None, str] | None:
        """The payments service's hook (:class:`~inventory.payments.service.DifferenceSettler`):
        a charged move's difference paid, under the payment's lock and in its transaction.
        The move's row is locked too (the API's retry and the worker's recovery take the
        same lock), then the hold is confirmed with this payment and the move completed;
        a move that cannot happen any more is abandoned and the money refunded whole."""
        row = await connection.fetchrow(QUERIES["lock_reschedule"], payment.hold_id)
        if row is None or int(row["charge_fen"]) <= 0:
            return None
        move = Move.from_row(row)
        if move.status == "done":
            new = await self._store.get_hold(move.reschedule_id)
            if new is None:
                raise HoldNotFoundError()  # Redis lost it: retried once a rebuild restores it
            return new, ""
        if move.status != "pending":
            return None, refunds.RESCHEDULE_NOT_COMPLETED
        try:
            confirmed = await self._store.confirm(
                move.reschedule_id, account_id="", payment_ref=payment.payment_id
            )
        except _UNCONFIRMABLE as refusal:
            await abandon_charge(self._store, move)
            await connection.execute(
                QUERIES["finish_reschedule"], move.reschedule_id, "aborted", None, 0, refusal.code
            )
            await _reopen_offer(connection, move)
            return None, refunds.RESCHEDULE_NOT_COMPLETED
        try:
            await complete_move(connection, self._store, move, confirmed.hold)
        except HoldNotActiveError:
            return None, refunds.RESCHEDULE_NOT_COMPLETED
        return confirmed.hold, ""

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
        *,
        charged: bool = False,
    ) -> Hold:
        """The store steps of a move (under its row's lock): the new booking (a charged
        move: the new hold, until the difference is paid)."""
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
            if charged:
                # Within one tag too: the hold and the old booking coexist until paid.
                new = await self._across(
                    old, new_id, slot_id, policy, until_ms, token_deadline, -1, force,
                    account, request_id, hold_until_ms=until_ms,
                )  # fmt: skip
            elif keys.tag_of_hold(old.hold_id) == keys.tag_of_hold(new_id):
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
            if new.state is HoldState.BOOKED:
                # A charged move keeps the old booking's token until it completes.
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
        *,
        hold_until_ms: int = 0,
    ) -> Hold:
        """A move to another tag: mark, take, finish (abort at once on a refusal). A
        charged move (``hold_until_ms``) stops after the take: its new unit is a hold
        until then, finished once the difference is paid."""
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
                hold_until_ms=hold_until_ms,
            )
        except RefusedError:
            # The take refused: it cannot happen any more under this lock, so the mark
            # goes now (a dead process's mark waits for its time to be over instead).
            await store.mark_move("abort", old.hold_id, new_id, until_ms=-1)
            raise
        if hold_until_ms > 0:
            return taken.hold  # finished when the difference is paid (complete_move)
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


async def complete_move(connection: Any, store: SlotStore, move: Move, new: Hold) -> Move:
    """A charged move whose new hold is booked (its difference paid): the old booking
    cancelled for it (finish), the old token dropped, the row closed (settle_move), in
    the caller's transaction under the row's lock. The old booking ended meanwhile (a
    forced cancellation): the new one is given back, the row aborted, and
    :class:`HoldNotActiveError` says so (the difference is then refunded whole)."""
    try:
        await finish_move(store, move.booking_id, move.reschedule_id)
    except HoldNotActiveError:
        await connection.execute(
            QUERIES["finish_reschedule"], move.reschedule_id, "aborted", None, 0, SOURCE_CANCELLED
        )
        await _reopen_offer(connection, move)
        raise
    await store.release_patient_tokens(move.patient_id, [move.booking_id])
    new = await store.get_hold(move.reschedule_id) or new
    return await settle_move(connection, move, await store.get_hold(move.booking_id), new)


async def abandon_charge(store: SlotStore, move: Move) -> None:
    """A charged move that will not happen (its hold ran out, was given back or its
    confirm refused): the hold given back if still held, the old booking's mark dropped
    (at once: the take happened, or cannot any more under the row's lock), the new
    token dropped. The caller closes the row."""
    new = await store.get_hold(move.reschedule_id)
    if new is not None and new.state is HoldState.HELD:
        with contextlib.suppress(RefusedError):
            await store.release(
                move.reschedule_id, account_id="", reason=CHARGE_ABANDONED, force=True
            )
    margin = -1 if new is not None else TOKEN_CLOCK_MARGIN_MS
    with contextlib.suppress(RescheduleInProgressError):
        await store.mark_move("abort", move.booking_id, move.reschedule_id, until_ms=margin)
    await store.release_patient_tokens(move.patient_id, [move.reschedule_id])
    log.info("booking.reschedule_abandoned", booking=move.booking_id, to=move.reschedule_id)


async def settle_move(connection: Any, move: Move, old: Hold | None, new: Hold) -> Move:
    """The Postgres side of a done move, on ``connection`` inside its transaction."""
    if old is not None:
        await record_hold(connection, old)
    await record_hold(connection, new)
    payments = await connection.fetch(QUERIES["move_booking_payment"], move.booking_id, new.hold_id)
    refund_fen = 0
    refund_id: str | None = None
    if payments and move.old_amount_fen > new.amount_fen:
        refund_fen = move.old_amount_fen - new.amount_fen
        refund_id = await _refund_difference(connection, move, new, payments, refund_fen)
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
            "charge_fen": move.charge_fen,
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
        charge_fen=move.charge_fen,
        kind=move.kind,
    )
    return Move(**{**_fields(move), "status": "done", "refund_fen": refund_fen})


async def _refund_difference(
    connection: Any, move: Move, new: Hold, payments: list[Any], refund_fen: int
) -> str | None:
    """A cheaper target's difference refunded from the payments backing the booking (a
    line with charged moves has several), each as its part n (the line's n-th move), the
    newest first and never more than what is left of one: the id of the first refund."""
    first: str | None = None
    owed = refund_fen
    for payment in sorted(payments, key=lambda p: p["created_at"], reverse=True):
        refunded = int(
            await connection.fetchval(QUERIES["refunded_parts_fen"], payment["payment_id"])
        )
        part_fen = min(owed, int(payment["amount_fen"]) - refunded)
        if part_fen <= 0:
            continue
        refund = await refund_payment(
            connection,
            payment["payment_id"],
            move.booking_id,
            part_fen,
            refunds.RESCHEDULED,
            f"{MOVE_KEY_PREFIX}{new.hold_id}",
            part=max(1, new.moves),
        )
        first = first or refund.refund_id
        owed -= part_fen
        if owed <= 0:
            break
    return first


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
    # A charged move ran its steps across (mark, take) even within one tag.
    across = move.charged or keys.tag_of_hold(move.booking_id) != keys.tag_of_hold(
        move.reschedule_id
    )
    if move.charged and new is not None:
        return await _recover_charged(connection, store, move, new, stats)
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


async def _recover_charged(
    connection: Any, store: SlotStore, move: Move, new: Hold, stats: RecoveryStats
) -> bool:
    """A charged move past its hold's deadline: paid (the hold booked, then the process
    died before finish) it completes; otherwise it is abandoned (the old booking kept;
    a payment of the difference that still arrives is refunded whole by its settlement)."""
    if new.state is HoldState.HELD and new.deadline_ms > await store.now_ms():
        return False  # not over yet (a clock ahead of the store's): next round
    if new.state is HoldState.BOOKED:
        try:
            await complete_move(connection, store, move, new)
        except HoldNotActiveError:
            stats.aborted += 1
            return True
        stats.finished += 1
        return True
    await abandon_charge(store, move)
    await connection.execute(
        QUERIES["finish_reschedule"], move.reschedule_id, "aborted", None, 0, "unpaid"
    )
    await _reopen_offer(connection, move)
    stats.aborted += 1
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
