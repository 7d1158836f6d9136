"""Our ids at the provider: payment (out_trade_no) and refund (out_refund_no) numbers.

Both are pure functions of what they belong to, so a repeated start or request lands on the
same row and the same provider order: one payment per hold, one refund per payment.
"""

from __future__ import annotations

import base64
import hashlib

#: WeChat Pay: out_trade_no is 6-32 of [A-Za-z0-9_-|*], out_refund_no 1-64 of the same.
_TOKEN_CHARS = 26


def _token(kind: str, of: str) -> str:
    digest = hashlib.sha256(f"{kind}\x00{of}".encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:_TOKEN_CHARS]


def payment_id_for(hold_id: str) -> str:
    """The payment (out_trade_no) of a hold: ``p`` and 26 base32 characters."""
    return "p" + _token("payment", hold_id)


def refund_id_for(payment_id: str, part: int = 0) -> str:
    """The refund (out_refund_no) of a payment's part (0: what is left of it; n >= 1: the
    fee difference of the n-th reschedule): ``r`` and 26 base32 characters."""
    return "r" + _token("refund" if part == 0 else f"refund:{part}", payment_id)


def late_reserve_key(payment_id: str) -> str:
    """The Idempotency-Key of the reserve that re-takes a unit for a late payment."""
    return f"late-payment:{payment_id}"
