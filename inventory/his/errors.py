"""Errors of the HIS boundary, mapped from HTTP statuses and OperationOutcomes.

- :class:`HisRefusedError`: the HIS answered and said no (full, suspended, ...). The
  request changed nothing; retrying will not help. The flows release and refund.
- :class:`HisUnavailableError`: no usable answer (connection, timeout, 5xx, 429, the
  circuit is open). The request may or may not have happened; the operations the
  client retries are idempotent, so the caller may retry later.
- :class:`HisProtocolError`: an answer we refuse to trust (invalid FHIR, too large,
  wrong type). Not retried: the same HIS would say the same again.
- :class:`HisAuthError` (a protocol error): our credentials are missing or refused.
"""

from __future__ import annotations

from inventory.errors import InventoryError
from inventory.his.types import HisRefusal


class HisError(InventoryError):
    """Base of every HIS boundary error."""

    code = "his_error"
    http_status = 502
    title = "The hospital system failed"


class HisRefusedError(HisError):
    """The HIS refused the change; ``reason`` says why (machine code)."""

    code = "his_refused"
    http_status = 409
    title = "The hospital refused the booking"

    def __init__(
        self, reason: HisRefusal, detail: str | None = None, *, http_status: int | None = None
    ) -> None:
        super().__init__(detail or f"the HIS refused: {reason.value}", reason=reason.value)
        self.reason = reason
        #: The HIS's HTTP status (409, 422, 404, 412 ...), for logs and metrics.
        self.his_status = http_status


class HisUnavailableError(HisError):
    """No usable answer from the HIS; the request may or may not have taken effect."""

    code = "his_unavailable"
    http_status = 503
    title = "The hospital system is unavailable"

    def __init__(
        self,
        detail: str | None = None,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.his_status = http_status
        #: The HIS's Retry-After, when it sent one.
        self.retry_after_s = retry_after_s


class HisCircuitOpenError(HisUnavailableError):
    """The circuit breaker is open: the call was not sent at all."""

    code = "his_circuit_open"


class HisProtocolError(HisError):
    """The HIS answered with something we do not accept (invalid FHIR, too big, ...)."""

    code = "his_protocol"
    http_status = 502
    title = "The hospital system answered something invalid"


class HisAuthError(HisProtocolError):
    """Our credentials for the HIS are missing or refused (the token endpoint said no, or
    the HIS refused a fresh token). Not retried: the same credentials would fail again
    until someone fixes them. The message never carries a secret or a token."""
