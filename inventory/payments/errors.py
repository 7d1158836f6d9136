"""Errors of the payments part, each with a stable code and HTTP status."""

from __future__ import annotations

from inventory.errors import InventoryError


class PaymentError(InventoryError):
    """Base of the payments errors."""

    code = "payment_error"
    http_status = 500
    title = "Payment error"


class PaymentsDisabledError(PaymentError):
    """No payment provider is configured (INVENTORY_WECHAT_MCHID is empty)."""

    code = "payments_disabled"
    http_status = 409
    title = "Payments are not enabled on this service"


class MerchantNotConfiguredError(PaymentError):
    """WeChat Pay partner mode: the hold's hospital has no sub-merchant, so it takes no
    paid bookings (a platform operator sets one: PUT /v1/operator/hospitals/{id}/merchant)."""

    code = "merchant_not_configured"
    http_status = 409
    title = "This hospital does not take online payments yet"


class PaymentNotNeededError(PaymentError):
    """The hold costs nothing: confirm it without paying."""

    code = "payment_not_needed"
    http_status = 409
    title = "This hold has no fee to pay"


class PaymentRequiredError(PaymentError):
    """Payments are on and the hold has a fee: only the provider's notification (a
    verified payment) confirms it, never a payment reference a front end sends."""

    code = "payment_required"
    http_status = 409
    title = "This hold is confirmed by paying it"


class PaymentClosedError(PaymentError):
    """The hold's payment was closed at the provider (the hold ended unpaid)."""

    code = "payment_closed"
    http_status = 409
    title = "The payment of this hold was closed"


class ProviderUnavailableError(PaymentError):
    """The provider could not be reached or answered with a server error; retry."""

    code = "payment_provider_unavailable"
    http_status = 503
    title = "The payment provider is unavailable; retry shortly"


class ProviderRefusedError(PaymentError):
    """The provider refused a request (its code is in ``provider_code``)."""

    code = "payment_provider_refused"
    http_status = 502
    title = "The payment provider refused the request"

    def __init__(self, detail: str | None = None, *, provider_code: str = "") -> None:
        super().__init__(detail, provider_code=provider_code)
        self.provider_code = provider_code


class NotificationRefusedError(PaymentError):
    """A payment notification was refused; ``reason`` says which check failed.

    Answered ``{"code": "FAIL", "message": ...}`` with a non-2xx status, so the provider
    notifies again later; a refused notification changes nothing."""

    code = "FAIL"
    http_status = 401
    title = "Notification refused"

    def __init__(self, reason: str, message: str, *, http_status: int = 401) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason
        self.http_status = http_status  # type: ignore[misc]


class RefundRequestError(PaymentError):
    """A refund request that can never be right (wrong amount, bad reason)."""

    code = "refund_request_invalid"
    http_status = 422
    title = "Invalid refund request"
