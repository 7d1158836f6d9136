"""Payments as the service runs them: starting a payment for a hold, settling a paid one
into a booking or a refund, and the loops that close, sweep and refund.

**Settling** (a verified notification, or the payment loop's query) happens under the
payment row's lock (``lock_payment``), so one payment is decided once:

- the hold is confirmed with the payment id as its payment reference and the booking is
  committed in Postgres (``PgBookings.record``), then the payment is marked paid with the
  booking it bought (``settle_payment``), and the lock's transaction commits;
- a hold past its deadline (or lost by Redis) takes a unit of the same slot again for the
  same patient and account, with an Idempotency-Key derived from the payment id, and that
  hold is confirmed instead;
- when no unit can be had (sold out, a patient rule, the schedule suspended or started),
  the hold was released or paid by another payment, the payment is marked paid and its
  refund requested in the same transaction.

So money is never recorded without its booking or its refund request, and a notification
is answered 2xx only after that commit. A settlement that fails half-way (Redis or
Postgres down) leaves the payment pending and changes nothing that a retry does not find
and finish: every step is idempotent (confirm replays with the same payment reference,
the late reserve replays with its key, the booking and refund writes are upserts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol

import structlog

from inventory.domain import Hold, HoldState, ReserveRequest
from inventory.errors import (
    AlreadyConfirmedError,
    AlreadyExtendedError,
    ExtensionLimitError,
    HoldExpiredError,
    HoldNotActiveError,
    HoldNotFoundError,
    InventoryError,
    NotFoundError,
    RefusedError,
    ScheduleSuspendedError,
    ValidationFailedError,
)
from inventory.payments import refunds
from inventory.payments.errors import (
    MerchantNotConfiguredError,
    NotificationRefusedError,
    PaymentClosedError,
    PaymentNotNeededError,
    PaymentsDisabledError,
    ProviderRefusedError,
    ProviderUnavailableError,
)
from inventory.payments.ids import late_reserve_key, payment_id_for
from inventory.payments.provider import (
    CloseOutcome,
    PaymentOrder,
    PaymentProvider,
    Prepay,
    RefundOrder,
    RefundResult,
    RefundState,
    Transaction,
)
from inventory.payments.refunds import Refund, refund_payment, request_refund
from inventory.payments.settings import PaymentSettings
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

#: What the payer reads on their WeChat refund notice, by our reason code.
REFUND_TEXT = {
    refunds.PATIENT_CANCELLED: "预约已取消，挂号费退还",
    refunds.HIS_REJECTED: "医院未能确认预约，挂号费退还",
    refunds.EXPIRED_AFTER_PAYMENT: "支付超时且号源已无，挂号费退还",
    refunds.RELEASED_BEFORE_PAYMENT: "号源已释放，挂号费退还",
    refunds.DUPLICATE_PAYMENT: "重复支付，退还",
    refunds.SUSPENDED: "医生停诊，挂号费退还",
    refunds.AMOUNT_MISMATCH: "支付金额有误，退还",
    refunds.RESCHEDULED: "改约至费用较低的号源，退还差价",
    refunds.RESCHEDULE_NOT_COMPLETED: "改约未完成，差价退还",
}
DEFAULT_REFUND_TEXT = "挂号费退还"
#: Refusals of confirming a freshly re-reserved hold: give it back and refund instead.
_UNBOOKABLE = (HoldExpiredError, HoldNotActiveError, ScheduleSuspendedError, AlreadyConfirmedError)
#: How long a claimed pending payment or refund is left to one process.
LEASE_S = 60.0
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment as its row records it."""

    payment_id: str
    hold_id: str
    account_id: str
    provider: str
    amount_fen: int
    currency: str
    method: str
    status: str  #: pending, paid, closed or failed
    provider_txn_id: str | None
    paid_at: datetime | None
    prepay_id: str | None
    booking_id: str | None
    settled_at: datetime | None
    slot_id: str | None
    patient_id: str | None
    channel: str | None
    hold_deadline: datetime | None
    created_at: datetime
    #: The hospital's sub-merchant that collects it (WeChat Pay partner mode), else None.
    sub_mchid: str | None

    @classmethod
    def from_row(cls, row: Any) -> Payment:
        """From a row of the payment queries."""
        return cls(**{name: row[name] for name in cls.__slots__})

    def view(
        self, *, refund: Refund | None = None, prepay: Prepay | None = None, zone: tzinfo = UTC
    ) -> dict[str, Any]:
        """As the API shows it (instants in ``zone``: the hospital's)."""
        return {
            "payment_id": self.payment_id,
            "hold_id": self.hold_id,
            "provider": self.provider,
            "method": self.method,
            "status": self.status,
            "amount_fen": self.amount_fen,
            "currency": self.currency,
            "deadline": refunds.local(self.hold_deadline, zone),
            "paid_at": refunds.local(self.paid_at, zone),
            "booking_id": self.booking_id,
            "created_at": refunds.local(self.created_at, zone),
            "prepay": dict(prepay.params) if prepay is not None else None,
            "refund": refund.view(zone=zone) if refund is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a paid payment became."""

    payment_id: str
    booking_id: str | None
    refund: Refund | None
    #: True when it had been settled before (a repeated notification).
    duplicate: bool = False


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class DifferenceSettler(Protocol):
    """Whoever completes a charged move (the rescheduling service): a move to a dearer
    window whose fee difference is paid through its own payment."""

    async def settle_difference(
        self, connection: Any, payment: Payment
    ) -> tuple[Hold | None, str] | None:
        """Under ``payment``'s lock, in its transaction: None when the payment is not a
        move's difference; else the booking the move made (it completed, in this
        transaction or before), or None and the refund reason (it did not and will not)."""
        ...


class Payments:
    """Payments of holds with one provider (``provider`` None: payments are off, and
    only the read routes answer)."""

    def __init__(
        self,
        *,
        provider: PaymentProvider | None,
        store: SlotStore,
        bookings: PgBookings,
        catalogue: PgCatalogue,
        pool: Any,
        lock_pool: Any,
        settings: PaymentSettings,
        acquire_timeout_s: float = 5.0,
        moves: DifferenceSettler | None = None,
    ) -> None:
        """``moves`` settles the payments of charged moves' fee differences (set by the
        composition root once the rescheduling service exists)."""
        self.provider = provider
        self.moves = moves
        self.store = store
        self.bookings = bookings
        self.catalogue = catalogue
        self.pool = pool
        self.lock_pool = lock_pool
        self.settings = settings
        self._timeout = acquire_timeout_s

    # -- the account's side ----------------------------------------------------------------

    async def _get(self, payment_id: str) -> Payment | None:
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(QUERIES["get_payment"], payment_id)
        return Payment.from_row(row) if row is not None else None

    async def _own_hold(self, hold_id: str, account_id: str) -> Hold:
        hold = await self.store.get_hold(hold_id)
        if hold is None or hold.account_id != account_id:
            raise NotFoundError("no such hold")
        return hold

    async def start(
        self, hold_id: str, account_id: str, *, method: str, payer_openid: str
    ) -> tuple[Payment, Prepay | None, bool]:
        """Start (or find again) the payment of one of the account's holds: (payment, the
        provider's prepay parameters, created). The first start extends the hold once."""
        hold = await self._own_hold(hold_id, account_id)
        provider = self.provider
        if provider is None:
            raise PaymentsDisabledError()
        payment_id = payment_id_for(hold_id)
        payment = await self._get(payment_id)
        if payment is not None and payment.status == "paid":
            return payment, None, False
        if payment is not None and payment.status == "closed":
            raise PaymentClosedError()
        if (payment.method if payment else method) == "jsapi" and not payer_openid:
            raise ValidationFailedError(
                errors=[{"field": "openid", "reason": "required for jsapi payments"}]
            )
        created = False
        sub_appid = ""
        if payment is None:
            # Partner mode: the hospital's sub-merchant collects; none, no paid booking
            # (refused before the hold is extended or anything is recorded).
            merchant = await self._merchant_of(hold)
            sub_appid = merchant[1] if merchant is not None else ""
            hold = await self._payable(hold)
            payment, created = await self._insert(
                payment_id, hold, method, merchant[0] if merchant is not None else None
            )
        else:
            # Paying again for the same hold: only while it can still be booked.
            self._check_open(hold, await self.store.now_ms())
            if payment.sub_mchid is not None:
                merchant = await self._merchant_of(hold)
                sub_appid = merchant[1] if merchant is not None else ""
        prepay = await provider.create_payment(
            PaymentOrder(
                payment_id=payment.payment_id,
                description=self.settings.description,
                amount_fen=payment.amount_fen,
                currency=payment.currency,
                method=payment.method,
                expires_at=payment.hold_deadline or _instant(hold.deadline_ms),
                payer_openid=payer_openid,
                sub_mchid=payment.sub_mchid,
                sub_appid=sub_appid,
            )
        )
        if prepay.prepay_id != payment.prepay_id:
            async with acquire(self.pool, timeout_s=self._timeout) as connection:
                await connection.execute(
                    QUERIES["set_payment_prepay"], payment.payment_id, prepay.prepay_id
                )
        log.info("payment.started", payment_id=payment.payment_id, created=created)
        return payment, prepay, created

    async def _merchant_of(self, hold: Hold) -> tuple[str, str] | None:
        """(sub_mchid, sub_appid) of the hold's hospital in partner mode; None in direct
        mode. :class:`MerchantNotConfiguredError` for a hospital without one."""
        return await self.merchant_of_schedule(hold.schedule_id)

    async def merchant_of_schedule(self, schedule_id: str) -> tuple[str, str] | None:
        """(sub_mchid, sub_appid) of the schedule's hospital in partner mode; None in
        direct mode. :class:`MerchantNotConfiguredError` for a hospital without one."""
        if not self.settings.partner:
            return None
        schedule = await self.catalogue.schedule(schedule_id)
        if schedule is None:
            raise NotFoundError("no such schedule")
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(
                QUERIES["get_hospital_merchant"], schedule["hospital_id"]
            )
        if row is None:
            raise MerchantNotConfiguredError(hospital_id=schedule["hospital_id"])
        return str(row["sub_mchid"]), str(row["sub_appid"])

    @staticmethod
    def _check_open(hold: Hold, now_ms: int) -> None:
        """Refuse paying for a hold that can no longer become a booking."""
        if hold.state is HoldState.BOOKED:
            raise AlreadyConfirmedError()
        if hold.state is HoldState.EXPIRED or (
            hold.state is HoldState.HELD and hold.deadline_ms <= now_ms
        ):
            raise HoldExpiredError()
        if hold.state is not HoldState.HELD:
            raise HoldNotActiveError(state=hold.state.value)

    async def _payable(self, hold: Hold) -> Hold:
        """The hold, once extended for payment; refused when it cannot be paid."""
        if hold.amount_fen <= 0:
            raise PaymentNotNeededError()
        self._check_open(hold, 0)  # the deadline is judged by extend itself
        try:
            return (await self.store.extend(hold.hold_id, account_id=hold.account_id)).hold
        except (AlreadyExtendedError, ExtensionLimitError) as refusal:
            # One extension per hold (it may have had it already): pay within what is left.
            current = refusal.context.get("hold")
            return current if isinstance(current, Hold) else hold

    async def _insert(
        self, payment_id: str, hold: Hold, method: str, sub_mchid: str | None
    ) -> tuple[Payment, bool]:
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            return await self._insert_on(
                connection, payment_id, hold, hold.amount_fen, method, sub_mchid
            )

    async def _insert_on(
        self,
        connection: Any,
        payment_id: str,
        hold: Hold,
        amount_fen: int,
        method: str,
        sub_mchid: str | None,
    ) -> tuple[Payment, bool]:
        deadline = _instant(hold.deadline_ms)
        row = await connection.fetchrow(
            QUERIES["insert_payment"],
            payment_id,
            hold.hold_id,
            hold.account_id,
            self.provider.name if self.provider is not None else "wechat",
            amount_fen,
            "CNY",
            method,
            hold.slot_id,
            hold.patient_id,
            hold.channel,
            deadline,
            deadline + timedelta(seconds=self.settings.close_grace_s),
            sub_mchid,
        )
        if row is not None:
            return Payment.from_row(row), True
        row = await connection.fetchrow(QUERIES["get_payment"], payment_id)
        return Payment.from_row(row), False

    async def open_difference(
        self, connection: Any, hold: Hold, amount_fen: int, *, method: str, sub_mchid: str | None
    ) -> Payment:
        """The payment of a charged move's fee difference, on ``connection`` (in the
        move's transaction): ``amount_fen`` for the move's new hold, due by its deadline,
        collected by ``sub_mchid`` (partner mode) like the booking's own fee. The payer
        pays it like any hold's (``POST /v1/holds/{new id}/payments`` gives the prepay
        parameters); its settlement completes the move (:class:`DifferenceSettler`)."""
        payment, _ = await self._insert_on(
            connection, payment_id_for(hold.hold_id), hold, amount_fen, method, sub_mchid
        )
        return payment

    async def of_hold(
        self, hold_id: str, account_id: str, *, zone: tzinfo = UTC
    ) -> list[dict[str, Any]]:
        """The payments of one of the account's holds, as the API shows them."""
        await self._own_hold(hold_id, account_id)
        payment = await self._get(payment_id_for(hold_id))
        if payment is None or payment.account_id != account_id:
            return []
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(QUERIES["get_payment_refund"], payment.payment_id, 0)
        refund = Refund.from_row(row) if row is not None else None
        return [payment.view(refund=refund, zone=zone)]

    # -- settling ----------------------------------------------------------------------------

    async def handle_notification(self, headers: Mapping[str, str], body: bytes) -> Settlement:
        """Verify a notification over its raw body, then settle its payment; returns once
        the booking or the refund request is committed."""
        if self.provider is None:
            raise NotificationRefusedError(
                "payments_disabled", "payments are not enabled", http_status=404
            )
        notification = await self.provider.parse_notification(headers, body)
        return await self.settle(notification.transaction, source="notification")

    async def settle(self, transaction: Transaction, *, source: str) -> Settlement:
        """Settle a paid transaction (``source`` "notification" or "query").

        A notification whose amount or currency differs from the payment is refused and
        changes nothing; the same from the provider's own answer to our query (money that
        did arrive) is refunded whole."""
        payment_id = transaction.payment_id
        async with (
            acquire(self.lock_pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(QUERIES["lock_payment"], payment_id)
            if row is None:
                raise NotificationRefusedError(
                    "unknown_order", "out_trade_no names no payment of ours", http_status=404
                )
            payment = Payment.from_row(row)
            if (transaction.sub_mchid or None) != payment.sub_mchid:
                # Partner mode: paid to another hospital's sub-merchant than the one this
                # payment was started for. Not our money to book: refused, nothing changes.
                raise NotificationRefusedError(
                    "merchant_mismatch",
                    "the transaction's sub-merchant is not this payment's",
                    http_status=400,
                )
            if payment.settled_at is not None:
                if payment.provider_txn_id != transaction.transaction_id:
                    raise NotificationRefusedError(
                        "transaction_mismatch",
                        "this order was paid by another transaction",
                        http_status=409,
                    )
                existing = await connection.fetchrow(QUERIES["get_payment_refund"], payment_id, 0)
                return Settlement(
                    payment_id,
                    payment.booking_id,
                    Refund.from_row(existing) if existing is not None else None,
                    duplicate=True,
                )
            matches = (transaction.amount_fen, transaction.currency) == (
                payment.amount_fen,
                payment.currency,
            )
            if not matches and source == "notification":
                raise NotificationRefusedError(
                    "amount_mismatch",
                    "amount.total or currency differs from the hold's fee",
                    http_status=400,
                )
            booking: Hold | None = None
            reason = refunds.AMOUNT_MISMATCH
            if matches:
                # A charged move's difference completes its move (or is refunded whole
                # when the move will not happen); any other payment books its hold.
                difference = (
                    await self.moves.settle_difference(connection, payment)
                    if self.moves is not None
                    else None
                )
                booking, reason = (
                    difference if difference is not None else await self._book(payment)
                )
            paid_at = transaction.success_time or datetime.now(tz=UTC)
            await connection.execute(
                QUERIES["settle_payment"],
                payment_id,
                transaction.transaction_id,
                paid_at,
                booking.hold_id if booking is not None else None,
            )
            refund: Refund | None = None
            if booking is None or booking.state is HoldState.CANCELLED:
                refund = await refund_payment(
                    connection,
                    payment_id,
                    booking.hold_id if booking is not None else payment.hold_id,
                    transaction.amount_fen,
                    reason if booking is None else refunds.BOOKING_CANCELLED,
                    f"settle:{payment_id}",
                )
        log.info(
            "payment.settled",
            payment_id=payment_id,
            source=source,
            booked=booking is not None,
            refund_reason=refund.reason if refund is not None else None,
        )
        return Settlement(payment_id, booking.hold_id if booking is not None else None, refund)

    async def _book(self, payment: Payment) -> tuple[Hold | None, str]:
        """The booking this payment buys (committed in Postgres), or None and why not."""
        try:
            outcome = await self.store.confirm(
                payment.hold_id, account_id="", payment_ref=payment.payment_id
            )
        except (HoldExpiredError, HoldNotFoundError):
            return await self._book_late(payment)
        except HoldNotActiveError as refusal:
            hold = refusal.context.get("hold")
            if (
                isinstance(hold, Hold)
                and hold.state is HoldState.CANCELLED
                and hold.payment_ref == payment.payment_id
            ):
                # Booked with this very payment, then cancelled: the booking stands (its
                # refund follows the cancellation).
                await self.bookings.record(hold)
                return hold, refunds.BOOKING_CANCELLED
            return None, refunds.RELEASED_BEFORE_PAYMENT
        except AlreadyConfirmedError:
            return None, refunds.DUPLICATE_PAYMENT
        except ScheduleSuspendedError:
            return None, refunds.SUSPENDED
        await self.bookings.record(outcome.hold)
        return outcome.hold, ""

    async def _book_late(self, payment: Payment) -> tuple[Hold | None, str]:
        """A payment after its hold's deadline: the same slot again, if a unit is free."""
        if not (payment.slot_id and payment.patient_id and payment.channel):
            return None, refunds.EXPIRED_AFTER_PAYMENT
        location = await self.catalogue.slot_location(payment.slot_id)
        if location is None:
            return None, refunds.EXPIRED_AFTER_PAYMENT
        request = ReserveRequest(
            hospital_id=location.hospital_id,
            department_id=location.department_id,
            visit_date=location.visit_date,
            slot_id=payment.slot_id,
            account_id=payment.account_id,
            patient_id=payment.patient_id,
            channel=payment.channel,
            idempotency_key=late_reserve_key(payment.payment_id),
        )
        try:
            held = (await self.store.reserve(request)).hold
        except RefusedError as refusal:
            if refusal.http_status >= 500:
                raise  # fenced or a patient token timed out: retry later, not a refund
            log.info("payment.late_reserve_refused", code=refusal.code)
            return None, refunds.EXPIRED_AFTER_PAYMENT
        try:
            outcome = await self.store.confirm(
                held.hold_id, account_id="", payment_ref=payment.payment_id
            )
        except (
            HoldExpiredError,
            HoldNotActiveError,
            ScheduleSuspendedError,
            AlreadyConfirmedError,
        ):
            with contextlib.suppress(RefusedError):
                await self.store.release(
                    held.hold_id, account_id="", reason="late_payment_refunded", force=True
                )
            return None, refunds.EXPIRED_AFTER_PAYMENT
        await self.bookings.record(outcome.hold)
        log.info("payment.late_booked", payment_id=payment.payment_id)
        return outcome.hold, ""

    # -- the loops ---------------------------------------------------------------------------

    async def check_due(self, limit: int = 50) -> int:
        """Pending payments whose hold ended: the order is closed at the provider, so it
        can no longer be paid; when closing answers that it was paid, it is settled (the
        notification may have been lost or refused)."""
        provider = self.provider
        if provider is None:
            return 0
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["claim_due_payments"], limit, LEASE_S)
        for row in rows:
            payment = Payment.from_row(row)
            try:
                await self._resolve_pending(provider, payment)
            except (InventoryError, ProviderRefusedError) as error:
                # Left leased: looked at again when the lease ends.
                log.warning("payment.check_failed", payment_id=payment.payment_id, error=str(error))
        return len(rows)

    async def _resolve_pending(self, provider: PaymentProvider, payment: Payment) -> None:
        """Close the order of a hold that ended; a close that finds it paid settles it."""
        try:
            outcome = await provider.close_payment(payment.payment_id, payment.sub_mchid)
        except ProviderRefusedError as refusal:
            if refusal.provider_code != "ORDER_NOT_EXIST":
                raise
            outcome = CloseOutcome.CLOSED  # never created at the provider: nothing to pay
        if outcome is CloseOutcome.ALREADY_PAID:
            transaction = await provider.query_payment(payment.payment_id, payment.sub_mchid)
            if not transaction.trade_state.paid:
                raise ProviderUnavailableError("closing said paid, the order says not")
            log.info("payment.paid_at_close", payment_id=payment.payment_id)
            await self.settle(transaction, source="query")
            return
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            await connection.execute(QUERIES["close_payment"], payment.payment_id)
        log.info("payment.closed", payment_id=payment.payment_id)

    async def request_missing_refunds(self, limit: int = 50) -> int:
        """The safety net: a paid payment whose booking was cancelled or rejected gets its
        refund requested even if whoever ended the booking did not."""
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["list_payments_to_refund"], limit)
        for row in rows:
            reason = refunds.HIS_REJECTED
            if row["booking_status"] == "cancelled":
                cancel_reason = row["cancel_reason"] or ""
                reason = (
                    cancel_reason
                    if refunds.REASON_RE.fullmatch(cancel_reason)
                    else refunds.BOOKING_CANCELLED
                )
            await request_refund(
                self.pool, row["booking_id"], None, reason, f"sweep:{row['payment_id']}"
            )
        return len(rows)

    async def send_refunds(self, limit: int = 20) -> int:
        """Send due refunds to the provider and record each outcome."""
        provider = self.provider
        if provider is None:
            return 0
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["claim_due_refunds"], limit, LEASE_S)
        for row in rows:
            refund = Refund.from_row(row)
            order = RefundOrder(
                refund_id=refund.refund_id,
                payment_id=refund.payment_id,
                amount_fen=refund.amount_fen,
                total_fen=int(row["total_fen"]),
                currency="CNY",
                reason=REFUND_TEXT.get(refund.reason, DEFAULT_REFUND_TEXT),
                sub_mchid=row["sub_mchid"],
            )
            try:
                result = await provider.refund(order)
            except (ProviderUnavailableError, ProviderRefusedError) as error:
                result = RefundResult(refund.refund_id, RefundState.FAILED, detail=str(error))
            await self._record_refund(refund, result)
        return len(rows)

    async def _record_refund(self, refund: Refund, result: RefundResult) -> None:
        now = datetime.now(tz=UTC)
        interval = self.settings.loop_interval_s
        if result.state is RefundState.SUCCEEDED:
            status, next_at = "succeeded", now
        elif result.state is RefundState.PROCESSING:
            status, next_at = "pending", now + timedelta(seconds=2 * interval)
        else:
            backoff = min(interval * 2 ** min(refund.attempts, 10), MAX_BACKOFF_S)
            status, next_at = "failed", now + timedelta(seconds=backoff)
        async with acquire(self.pool, timeout_s=self._timeout) as connection:
            await connection.execute(
                QUERIES["finish_refund"],
                refund.refund_id,
                status,
                result.provider_refund_id,
                result.detail[:500],
                next_at,
            )
        log.info("refund.attempted", refund_id=refund.refund_id, status=status)


async def run_payment_loops(payments: Payments, *, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s``: check due payments, request missing refunds, send refunds.
    Survives Redis, Postgres or the provider being down (the next round retries)."""
    steps = (payments.check_due, payments.request_missing_refunds, payments.send_refunds)
    while not stop.is_set():
        for step in steps:
            try:
                await step()
            except InventoryError as error:
                log.warning("payments.loop_step_failed", step=step.__name__, error=str(error))
            except Exception:  # a bug in one step must not stop refunds: log it, go on
                log.exception("payments.loop_step_crashed", step=step.__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
