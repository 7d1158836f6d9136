"""Refusals of the capacity model.

Every refusal is a ``ValueError`` (the caller handed in numbers the model cannot use) with
a stable machine ``code`` and the HTTP status an operator route would answer with. When the
project-wide error tree (``inventory/errors.py``) lands, ``CapacityError`` should also
derive from its base class; the codes stay as they are.
"""

from __future__ import annotations

from typing import ClassVar


class CapacityError(ValueError):
    """Base class of every refusal by the capacity model."""

    code: ClassVar[str] = "capacity_error"
    http_status: ClassVar[int] = 422


class InvalidInputError(CapacityError):
    """A rate, count, probability or duration that makes no sense (negative, NaN, ...)."""

    code: ClassVar[str] = "capacity_invalid_input"


class UnstableSystemError(CapacityError):
    """Utilisation is at least 1: the queue grows without bound and has no steady state."""

    code: ClassVar[str] = "capacity_unstable"

    def __init__(self, utilization: float) -> None:
        self.utilization = utilization
        super().__init__(
            f"unstable system: utilisation λ/(sμ) = {utilization:.6g} must be below 1; "
            "the queue would grow without bound (add doctors or lower the arrival rate)"
        )


class TargetUnreachableError(CapacityError):
    """No number of servers within the supported range meets the waiting-time target."""

    code: ClassVar[str] = "capacity_target_unreachable"


class InsufficientDataError(CapacityError):
    """The booking records do not hold enough data for the requested estimate."""

    code: ClassVar[str] = "capacity_insufficient_data"
