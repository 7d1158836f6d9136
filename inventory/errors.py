"""The error tree, and the one table from Lua return codes to errors.

Every domain outcome that is not a success is an :class:`InventoryError` with a stable
machine ``code`` (what front ends switch on; never renamed) and the HTTP status the API
answers with. Driver errors are wrapped at the adapter boundary (``raise ... from``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar


class InventoryError(Exception):
    """Base of every error this package raises on purpose."""

    code: ClassVar[str] = "inventory_error"
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "Inventory error"

    def __init__(self, detail: str | None = None, **context: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        #: Extra facts for the caller and the problem document (e.g. ``rule``).
        self.context: dict[str, Any] = context


class StoreUnavailableError(InventoryError):
    """Redis could not be reached in time; the step may or may not have happened."""

    code = "store_unavailable"
    http_status = 503
    title = "The inventory store is unavailable; retry with the same Idempotency-Key"


class RefusedError(InventoryError):
    """A script refused a step: nothing was changed by the refused step."""

    lua_code: ClassVar[int] = 0
    http_status = 409


class NotReleasedError(RefusedError):
    lua_code = -1
    code = "not_released"
    title = "The schedule's slots are not released yet"


class ScheduleSuspendedError(RefusedError):
    lua_code = -2
    code = "schedule_suspended"
    title = "The schedule is suspended (停诊)"


class SchedulePastError(RefusedError):
    lua_code = -3
    code = "schedule_past"
    title = "The session has already started"


class SoldOutError(RefusedError):
    lua_code = -4
    code = "sold_out"
    title = "The slot is sold out"


class PatientRuleError(RefusedError):
    """A patient rule is broken; ``context['rule']`` says which."""

    lua_code = -5
    code = "patient_rule"
    title = "A booking rule for this patient forbids it"


class HoldExpiredError(RefusedError):
    lua_code = -6
    code = "hold_expired"
    title = "The hold passed its payment deadline"


class HoldNotFoundError(RefusedError):
    lua_code = -7
    code = "hold_not_found"
    http_status = 404
    title = "No such hold or booking"


class NotOwnerError(RefusedError):
    """Another account's hold. The API answers 404 so ids are not confirmed."""

    lua_code = -8
    code = "not_owner"
    http_status = 404
    title = "No such hold or booking"


class IdempotencyKeyReusedError(RefusedError):
    lua_code = -9
    code = "idempotency_key_reused"
    http_status = 422
    title = "This Idempotency-Key was used for a different request"


class CancelDeadlinePassedError(RefusedError):
    lua_code = -10
    code = "cancel_deadline_passed"
    title = "The hospital's cancellation deadline has passed"


class ScheduleNotFoundError(RefusedError):
    lua_code = -11
    code = "schedule_not_found"
    http_status = 404
    title = "No such schedule"


class SlotNotFoundError(RefusedError):
    lua_code = -12
    code = "slot_not_found"
    http_status = 404
    title = "No such slot"


class HoldNotActiveError(RefusedError):
    lua_code = -13
    code = "hold_not_active"
    title = "The hold was released or cancelled"


class AlreadyExtendedError(RefusedError):
    lua_code = -14
    code = "already_extended"
    title = "A hold can be extended once"


class ExtensionLimitError(RefusedError):
    lua_code = -15
    code = "extension_limit"
    title = "The hold is at its maximum lifetime"


class CapacityBelowTakenError(RefusedError):
    lua_code = -16
    code = "capacity_below_taken"
    title = "Capacity cannot go below the units held, booked or waiting"


class StoreFencedError(RefusedError):
    """The tag's Redis state is older than Postgres; refused until rebuilt."""

    lua_code = -17
    code = "store_fenced"
    http_status = 503
    title = "This part of the inventory is being rebuilt; retry shortly"


class PatientTokenExpiredError(RefusedError):
    lua_code = -18
    code = "patient_token_expired"
    http_status = 503
    title = "The reservation took too long; retry with the same Idempotency-Key"


class AlreadyConfirmedError(RefusedError):
    lua_code = -19
    code = "already_confirmed"
    title = "The hold is already a booking"


class InvalidArgumentError(RefusedError):
    lua_code = -20
    code = "invalid_argument"
    http_status = 422
    title = "Invalid argument"


class SlotScheduleMismatchError(RefusedError):
    lua_code = -21
    code = "slot_schedule_mismatch"
    title = "The slot belongs to another schedule"


#: Lua return code -> error class. Codes 0 (OK) and 1 (REPLAY) are successes.
LUA_CODES: dict[int, type[RefusedError]] = {
    cls.lua_code: cls
    for cls in (
        NotReleasedError,
        ScheduleSuspendedError,
        SchedulePastError,
        SoldOutError,
        PatientRuleError,
        HoldExpiredError,
        HoldNotFoundError,
        NotOwnerError,
        IdempotencyKeyReusedError,
        CancelDeadlinePassedError,
        ScheduleNotFoundError,
        SlotNotFoundError,
        HoldNotActiveError,
        AlreadyExtendedError,
        ExtensionLimitError,
        CapacityBelowTakenError,
        StoreFencedError,
        PatientTokenExpiredError,
        AlreadyConfirmedError,
        InvalidArgumentError,
        SlotScheduleMismatchError,
    )
}

LUA_OK = 0
LUA_REPLAY = 1


def refusal_for(lua_code: int, **context: Any) -> RefusedError:
    """The error for a script's refusal code (an unknown code is a bug: say so)."""
    try:
        cls = LUA_CODES[lua_code]
    except KeyError:
        raise InventoryError(f"unknown script return code {lua_code}") from None
    return cls(**context)


# -- errors of the HTTP edge (never reach Redis or Postgres) ---------------------------


class BadRequestError(InventoryError):
    """The request cannot be read at all (not JSON, too large, missing header)."""

    code = "bad_request"
    http_status = 400
    title = "The request could not be read"


class IdempotencyKeyRequiredError(BadRequestError):
    code = "idempotency_key_required"
    title = "This call needs an Idempotency-Key header (1-64 printable ASCII characters)"


class ValidationFailedError(InventoryError):
    """The request was read but its content is invalid; ``context['errors']`` lists
    each field and why."""

    code = "validation_failed"
    http_status = 422
    title = "The request has invalid fields"


class UnauthenticatedError(InventoryError):
    code = "unauthenticated"
    http_status = 401
    title = "A valid bearer token is required"


class ForbiddenError(InventoryError):
    code = "forbidden"
    http_status = 403
    title = "This token may not call this operation"


class NotFoundError(InventoryError):
    code = "not_found"
    http_status = 404
    title = "Not found"


class ConflictError(InventoryError):
    code = "conflict"
    http_status = 409
    title = "The request conflicts with the current state"


class RateLimitedError(InventoryError):
    """Too many requests; ``context['retry_after_s']`` says when to come back and
    ``context['buckets']`` which of the buckets checked refused (1-based, in the order
    they were passed; not shown to the caller)."""

    #: lua/reserve.lua's refusal when a rate-limit bucket passed with it is over.
    lua_code: ClassVar[int] = -22
    code = "rate_limited"
    http_status = 429
    title = "Too many requests; retry later"

    @classmethod
    def after_ms(cls, retry_after_ms: int, buckets: Sequence[int]) -> RateLimitedError:
        """The error for a script's refusal: whole seconds, at least one."""
        return cls(retry_after_s=max(1, math.ceil(retry_after_ms / 1000)), buckets=list(buckets))


class OverloadedError(InventoryError):
    code = "overloaded"
    http_status = 503
    title = "The service is at capacity; retry shortly"
