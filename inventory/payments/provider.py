"""The payment provider interface: what the settlement and the loops need from WeChat Pay
(or any other provider beside it), in our own types.

Amounts are integer fen; ids are ours (``payment_id`` = out_trade_no, ``refund_id`` =
out_refund_no) unless named ``provider_*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class TradeState(StrEnum):
    """Where an order is at the provider (WeChat Pay's trade_state values)."""

    SUCCESS = "SUCCESS"  #: paid
    REFUND = "REFUND"  #: paid, then (partly) refunded
    NOTPAY = "NOTPAY"  #: not paid yet
    CLOSED = "CLOSED"  #: closed unpaid
    REVOKED = "REVOKED"  #: cancelled (payment-code orders)
    USERPAYING = "USERPAYING"  #: the payer is entering a password
    PAYERROR = "PAYERROR"  #: the payment failed

    @property
    def paid(self) -> bool:
        """Money arrived for this order (it may have been refunded since)."""
        return self in (TradeState.SUCCESS, TradeState.REFUND)


class CloseOutcome(StrEnum):
    """What closing an order did."""

    CLOSED = "closed"  #: closed (or already closed): it can never be paid now
    ALREADY_PAID = "already_paid"  #: it was paid first: treat as paid


class RefundState(StrEnum):
    """A refund's state at the provider, in our words."""

    SUCCEEDED = "succeeded"
    PROCESSING = "processing"  #: accepted; ask again later (same out_refund_no)
    FAILED = "failed"  #: refused or abnormal; retried later on the same out_refund_no


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """An order to create at the provider for one hold."""

    payment_id: str
    description: str
    amount_fen: int
    currency: str
    method: str  #: "jsapi" (inside WeChat: needs ``payer_openid``) or "native" (QR code)
    expires_at: datetime  #: the hold's deadline: the provider refuses payment after it
    payer_openid: str = ""
    #: The hospital's sub-merchant that collects it (WeChat Pay partner mode), and its own
    #: app id when the payer pays inside the hospital's mini-program ("": the platform's).
    sub_mchid: str | None = None
    sub_appid: str = ""


@dataclass(frozen=True, slots=True)
class Prepay:
    """What the front end needs to let the payer pay."""

    prepay_id: str
    #: jsapi: appId, timeStamp, nonceStr, package, signType, paySign (for wx.requestPayment);
    #: native: code_url (to show as a QR code).
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Transaction:
    """An order as the provider reports it (notification resource or query answer)."""

    payment_id: str
    trade_state: TradeState
    mchid: str
    appid: str
    amount_fen: int  #: amount.total
    currency: str
    transaction_id: str | None = None
    success_time: datetime | None = None
    trade_state_desc: str = ""
    #: The sub-merchant that collected it (partner mode; "" otherwise).
    sub_mchid: str = ""


@dataclass(frozen=True, slots=True)
class RefundOrder:
    """A whole refund of one paid order."""

    refund_id: str
    payment_id: str
    amount_fen: int
    total_fen: int
    currency: str
    reason: str
    #: The sub-merchant that collected the payment: the refund comes from it.
    sub_mchid: str | None = None


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A refund as the provider reports it."""

    refund_id: str
    state: RefundState
    provider_refund_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """A verified, decrypted payment notification."""

    notification_id: str
    event_type: str
    transaction: Transaction
    serial: str  #: the platform key that signed it
    extra: Mapping[str, str] = field(default_factory=dict)


class PaymentProvider(Protocol):
    """A payment provider, as the settlement and the loops use it.

    Every call raises :class:`~inventory.payments.errors.ProviderUnavailableError` when the
    provider cannot be reached (retry later) and
    :class:`~inventory.payments.errors.ProviderRefusedError` when it refuses.
    """

    name: str  #: stored in payments.provider and refunds.provider

    async def create_payment(self, order: PaymentOrder) -> Prepay:
        """Create (or find again: same payment id, same order) an order to pay."""
        ...

    async def query_payment(self, payment_id: str, sub_mchid: str | None = None) -> Transaction:
        """The order's state now (``sub_mchid``: the sub-merchant it was created for)."""
        ...

    async def close_payment(self, payment_id: str, sub_mchid: str | None = None) -> CloseOutcome:
        """Close an unpaid order so it can never be paid; ALREADY_PAID if it was paid."""
        ...

    async def refund(self, order: RefundOrder) -> RefundResult:
        """Request a refund (repeating the same refund id is safe: the provider
        de-duplicates by it) and return its state."""
        ...

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify a notification over its raw body, then decrypt and parse it.

        Raises :class:`~inventory.payments.errors.NotificationRefusedError` naming the
        check that failed; nothing about the payment is changed by a refused one."""
        ...
