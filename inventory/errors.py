"""The error tree, and the one table from Lua return codes to errors.

Every domain outcome that is not a success is an :class:`InventoryError` with a stable
machine ``code`` (what front ends switch on; never renamed) and the HTTP status the API
answers with. Driver errors are wrapped at the adapter boundary (``raise ... from``).

:data:`MESSAGES` is the code table: every code the API can answer with has its title in
Chinese (zh-CN, the default of every answer) and in English (``Accept-Language: en``);
a class's ``title`` is its English title. :data:`DETAILS` gives the Chinese of the
details the API raises with (``detail``); tests/api/test_messages.py walks both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, NamedTuple


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


class PatientWeeklyLimitError(RefusedError):
    """The patient has as many open holds and bookings as the hospital allows within 7
    consecutive visit days; ``context['rule']`` is ``max_in_7_days`` and
    ``context['limit']`` the hospital's number."""

    lua_code = -23
    code = "patient_weekly_limit"
    title = "The patient has the most bookings allowed within 7 days"


# -- the waiting room of a queued release (lua/room_*.lua, reserve.lua's token check) --


class AdmissionRequiredError(RefusedError):
    """A queued release's slot without an admission token: join its waiting room
    (``context['detail']`` names the release)."""

    lua_code = -40
    code = "admission_required"
    title = "This release has a waiting room: join it and reserve once admitted"


class AdmissionTokenInvalidError(RefusedError):
    lua_code = -41
    code = "admission_token_invalid"
    http_status = 403
    title = "The admission token is not valid for this release"


class AdmissionTokenExpiredError(RefusedError):
    lua_code = -42
    code = "admission_token_expired"
    title = "The admission token has expired"


class AdmissionTokenUsedError(RefusedError):
    lua_code = -43
    code = "admission_token_used"
    title = "The admission token was already used"


class AdmissionTokenNotYoursError(RefusedError):
    lua_code = -44
    code = "admission_token_not_yours"
    http_status = 403
    title = "The admission token belongs to another account or patient"


class RoomNotFoundError(RefusedError):
    lua_code = -45
    code = "room_not_found"
    http_status = 404
    title = "No such release"


class RoomNotOpenError(RefusedError):
    """Joins start a window before the release (``context['opens_ms']``)."""

    lua_code = -46
    code = "room_not_open"
    title = "The waiting room is not open yet"


class RoomSoldOutError(RefusedError):
    """The release is sold out; its waitlist may take the patient instead."""

    lua_code = -47
    code = "room_sold_out"
    title = "The release is sold out; join the waitlist instead"


class RoomConflictError(RefusedError):
    lua_code = -48
    code = "room_conflict"
    title = "The release conflicts with an existing one or with its schedules"


class TicketNotFoundError(RefusedError):
    lua_code = -49
    code = "ticket_not_found"
    http_status = 404
    title = "No such ticket"


class WaitlistUnitsFreeError(RefusedError):
    """A slot of the schedule has a free unit: the patient reserves it instead."""

    lua_code = -31
    code = "waitlist_units_free"
    title = "A unit of this schedule is free: reserve it instead of joining the waitlist"


class WaitlistEntryNotFoundError(RefusedError):
    """No such waitlist entry (or another account's, answered alike)."""

    lua_code = -32
    code = "waitlist_entry_not_found"
    http_status = 404
    title = "No such waitlist entry"


class WaitlistOfferUnsettledError(RefusedError):
    """A waitlist offer whose patient rules are still being checked cannot be paid yet."""

    lua_code = -33
    code = "waitlist_offer_unsettled"
    http_status = 503
    title = "The waitlist offer is still being checked; retry shortly"


class RescheduleLimitError(RefusedError):
    """The booking was moved as often as the hospital allows; ``context['limit']``."""

    lua_code = -24
    code = "reschedule_limit"
    title = "This booking cannot be rescheduled again"


class RescheduleInProgressError(RefusedError):
    """The booking is being moved to another day or department; retry shortly."""

    lua_code = -25
    code = "reschedule_in_progress"
    title = "The booking is being rescheduled; retry shortly"


class RescheduleFeeHigherError(RefusedError):
    """The target's fee is above what the booking's payment covers; ``context['fee_fen']``."""

    lua_code = -26
    code = "reschedule_fee_higher"
    title = "The new window's fee is higher than the booking's; book it and cancel this one"


# -- the SMS login codes' scripts (lua/login_code_issue.lua, lua/login_code_check.lua) ---


class SmsCodeInvalidError(RefusedError):
    """A wrong code, one already used, or none sent: the same answer for each."""

    lua_code = -60
    code = "sms_code_invalid"
    http_status = 401
    title = "The SMS code is wrong or was already used"


class SmsCodeExpiredError(RefusedError):
    lua_code = -61
    code = "sms_code_expired"
    http_status = 401
    title = "The SMS code has expired; ask for a new one"


class SmsCodeLockedError(RefusedError):
    """Too many wrong codes for this phone; ``context['retry_after_s']`` says how long
    it stays locked."""

    lua_code = -62
    code = "sms_code_locked"
    http_status = 429
    title = "Too many wrong SMS codes for this phone; try again later"


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
        PatientWeeklyLimitError,
        AdmissionRequiredError,
        AdmissionTokenInvalidError,
        AdmissionTokenExpiredError,
        AdmissionTokenUsedError,
        AdmissionTokenNotYoursError,
        RoomNotFoundError,
        RoomNotOpenError,
        RoomSoldOutError,
        RoomConflictError,
        TicketNotFoundError,
        RescheduleLimitError,
        RescheduleInProgressError,
        RescheduleFeeHigherError,
        SmsCodeInvalidError,
        SmsCodeExpiredError,
        SmsCodeLockedError,
        WaitlistUnitsFreeError,
        WaitlistEntryNotFoundError,
        WaitlistOfferUnsettledError,
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


class IdempotencyKeyInUseError(InventoryError):
    """A request with this Idempotency-Key is still running; ``context['retry_after_s']``
    says when to ask again (the answer is then the first request's)."""

    code = "idempotency_key_in_use"
    http_status = 409
    title = "A request with this Idempotency-Key is still running; retry shortly"


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

    #: The refusal of lua/rate_limit.lua, and of lua/reserve.lua for the buckets passed
    #: with it, when a rate-limit bucket is over.
    lua_code: ClassVar[int] = -22
    code = "rate_limited"
    http_status = 429
    title = "Too many requests; retry later"

    @classmethod
    def after_ms(cls, retry_after_ms: int, buckets: Sequence[int]) -> RateLimitedError:
        """The error for a script's refusal: whole seconds, at least one."""
        return cls(retry_after_s=max(1, math.ceil(retry_after_ms / 1000)), buckets=list(buckets))


class WaitlistLimitError(InventoryError):
    """The patient is on as many waitlists as the hospital's policy allows."""

    code = "waitlist_limit"
    http_status = 409
    title = "This patient is on as many waitlists as allowed; leave one first"


class OverloadedError(InventoryError):
    code = "overloaded"
    http_status = 503
    title = "The service is at capacity; retry shortly"


# -- visits (签到, 爽约) ------------------------------------------------------------------


class CheckInNotOpenError(InventoryError):
    """Check-in opens on the visit day (in the hospital's time zone)."""

    code = "check_in_not_open"
    http_status = 409
    title = "Check-in opens on the day of the visit"


class BookingNotCheckableError(InventoryError):
    """The booking was cancelled or rejected: there is no visit to check in."""

    code = "booking_not_checkable"
    http_status = 409
    title = "The booking was cancelled or rejected; it cannot be checked in"


class BookingNotOpenError(InventoryError):
    """An operator's cancel or no-show needs an open booking (paid, not yet visited)."""

    code = "booking_not_open"
    http_status = 409
    title = "The booking is no longer open (cancelled, rejected, visited or a no-show)"


class NoShowTooEarlyError(InventoryError):
    """A patient is a no-show only once the booking's time window has begun."""

    code = "no_show_too_early"
    http_status = 409
    title = "A booking can be marked a no-show only once its time window has begun"


# -- the code table: what a person reads ----------------------------------------------


class Message(NamedTuple):
    """A code's title in both languages of the API."""

    zh: str
    en: str


#: The languages answers are written in; Chinese unless the caller prefers English.
Language = Literal["zh", "en"]
DEFAULT_LANGUAGE: Final[Language] = "zh"

#: Every code's title. A new error class adds its code here (its ``title`` is ``en``).
MESSAGES: Final[Mapping[str, Message]] = {
    # the store's refusals
    "inventory_error": Message("号源服务出错", "Inventory error"),
    "store_unavailable": Message(
        "号源服务暂时不可用，请使用同一 Idempotency-Key 重试",
        "The inventory store is unavailable; retry with the same Idempotency-Key",
    ),
    "not_released": Message("该排班尚未放号", "The schedule's slots are not released yet"),
    "schedule_suspended": Message("该排班已停诊", "The schedule is suspended (停诊)"),
    "schedule_past": Message("该时段已开始就诊", "The session has already started"),
    "sold_out": Message("该时段号源已约满", "The slot is sold out"),
    "patient_rule": Message(
        "该就诊人的预约规则不允许此操作", "A booking rule for this patient forbids it"
    ),
    "patient_weekly_limit": Message(
        "该就诊人 7 天内的预约数已达上限",
        "The patient has the most bookings allowed within 7 days",
    ),
    "reschedule_limit": Message(
        "该预约的改约次数已达上限", "This booking cannot be rescheduled again"
    ),
    "reschedule_in_progress": Message(
        "该预约正在改约中，请稍后重试", "The booking is being rescheduled; retry shortly"
    ),
    "reschedule_fee_higher": Message(
        "新时段的挂号费高于原预约，请另行预约后取消原预约",
        "The new window's fee is higher than the booking's; book it and cancel this one",
    ),
    "hold_expired": Message("锁号已超过支付期限", "The hold passed its payment deadline"),
    "hold_not_found": Message("锁号或预约不存在", "No such hold or booking"),
    "not_owner": Message("锁号或预约不存在", "No such hold or booking"),
    "idempotency_key_reused": Message(
        "该 Idempotency-Key 已用于另一个请求",
        "This Idempotency-Key was used for a different request",
    ),
    "cancel_deadline_passed": Message(
        "已过医院规定的退号截止时间", "The hospital's cancellation deadline has passed"
    ),
    "schedule_not_found": Message("排班不存在", "No such schedule"),
    "slot_not_found": Message("号源时段不存在", "No such slot"),
    "hold_not_active": Message("锁号已释放或已取消", "The hold was released or cancelled"),
    "already_extended": Message("锁号只能延长一次", "A hold can be extended once"),
    "extension_limit": Message("锁号已达到最长保留时间", "The hold is at its maximum lifetime"),
    "capacity_below_taken": Message(
        "号源数不能少于已锁定、已预约或待处理的数量",
        "Capacity cannot go below the units held, booked or waiting",
    ),
    "store_fenced": Message(
        "这部分号源正在重建，请稍后重试",
        "This part of the inventory is being rebuilt; retry shortly",
    ),
    "patient_token_expired": Message(
        "预约处理超时，请使用同一 Idempotency-Key 重试",
        "The reservation took too long; retry with the same Idempotency-Key",
    ),
    "already_confirmed": Message("该锁号已确认为预约", "The hold is already a booking"),
    "invalid_argument": Message("参数无效", "Invalid argument"),
    "slot_schedule_mismatch": Message(
        "该号源时段属于其他排班", "The slot belongs to another schedule"
    ),
    "admission_required": Message(
        "本次放号需排队：请先进入候诊队列，获准后再预约",
        "This release has a waiting room: join it and reserve once admitted",
    ),
    "admission_token_invalid": Message(
        "准入凭证无效", "The admission token is not valid for this release"
    ),
    "admission_token_expired": Message("准入凭证已过期", "The admission token has expired"),
    "admission_token_used": Message("准入凭证已使用", "The admission token was already used"),
    "admission_token_not_yours": Message(
        "准入凭证属于其他账号或就诊人",
        "The admission token belongs to another account or patient",
    ),
    "room_not_found": Message("该放号不存在", "No such release"),
    "room_not_open": Message("排队尚未开始", "The waiting room is not open yet"),
    "room_sold_out": Message(
        "本次放号已约满，可加入候补", "The release is sold out; join the waitlist instead"
    ),
    "room_conflict": Message(
        "该放号与已有放号或其排班冲突",
        "The release conflicts with an existing one or with its schedules",
    ),
    "ticket_not_found": Message("排队号不存在", "No such ticket"),
    "waitlist_units_free": Message(
        "该排班仍有可预约号源，请直接预约",
        "A unit of this schedule is free: reserve it instead of joining the waitlist",
    ),
    "waitlist_entry_not_found": Message("候补记录不存在", "No such waitlist entry"),
    "waitlist_offer_unsettled": Message(
        "候补号源仍在核验中，请稍后重试",
        "The waitlist offer is still being checked; retry shortly",
    ),
    "waitlist_limit": Message(
        "该就诊人的候补数量已达上限，请先退出其他候补",
        "This patient is on as many waitlists as allowed; leave one first",
    ),
    "store_unverified": Message(
        "号源服务已重启，正在核对，请稍后重试",
        "The inventory store restarted and is being checked; retry shortly",
    ),
    # visits
    "check_in_not_open": Message("签到仅在就诊当天开放", "Check-in opens on the day of the visit"),
    "booking_not_checkable": Message(
        "该预约已取消或被拒绝，无法签到",
        "The booking was cancelled or rejected; it cannot be checked in",
    ),
    "booking_not_open": Message(
        "该预约已结束（已取消、被拒绝、已就诊或已爽约）",
        "The booking is no longer open (cancelled, rejected, visited or a no-show)",
    ),
    "no_show_too_early": Message(
        "预约的就诊时段开始后才能标记爽约",
        "A booking can be marked a no-show only once its time window has begun",
    ),
    # the HTTP edge
    "bad_request": Message("无法读取请求", "The request could not be read"),
    "idempotency_key_required": Message(
        "此操作需要 Idempotency-Key 请求头（1-64 个可打印 ASCII 字符）",
        "This call needs an Idempotency-Key header (1-64 printable ASCII characters)",
    ),
    "idempotency_key_in_use": Message(
        "使用该 Idempotency-Key 的请求仍在处理中，请稍后重试",
        "A request with this Idempotency-Key is still running; retry shortly",
    ),
    "validation_failed": Message("请求中有无效字段", "The request has invalid fields"),
    "unauthenticated": Message("需要有效的访问令牌", "A valid bearer token is required"),
    "forbidden": Message("此令牌无权执行该操作", "This token may not call this operation"),
    "not_found": Message("未找到", "Not found"),
    "conflict": Message("请求与当前状态冲突", "The request conflicts with the current state"),
    "rate_limited": Message("请求过于频繁，请稍后再试", "Too many requests; retry later"),
    "overloaded": Message("服务繁忙，请稍后重试", "The service is at capacity; retry shortly"),
    "method_not_allowed": Message("不支持该请求方法", "Method not allowed"),
    "body_too_large": Message("请求体过大", "Request entity too large"),
    "unsupported_media_type": Message("不支持的内容类型", "Unsupported media type"),
    "http_error": Message("请求无法处理", "The request could not be handled"),
    "internal_error": Message("服务内部错误", "Internal error"),
    # patients
    "patient_identity_mismatch": Message(
        "该身份证号已登记了不同的个人信息",
        "This ID number is registered with different personal details",
    ),
    # login
    "sms_code_invalid": Message(
        "短信验证码错误或已使用", "The SMS code is wrong or was already used"
    ),
    "sms_code_expired": Message(
        "短信验证码已过期，请重新获取", "The SMS code has expired; ask for a new one"
    ),
    "sms_code_locked": Message(
        "该手机号验证码错误次数过多，请稍后再试",
        "Too many wrong SMS codes for this phone; try again later",
    ),
    "sms_unavailable": Message(
        "短信服务暂时不可用，请稍后重试", "The SMS service is unavailable; retry shortly"
    ),
    "wechat_code_invalid": Message(
        "微信登录凭证无效或已使用，请重新登录",
        "The WeChat login code is invalid or was already used; call wx.login again",
    ),
    "wechat_rate_limited": Message(
        "微信登录请求过于频繁，请稍后再试", "Too many WeChat logins; retry later"
    ),
    "wechat_unavailable": Message(
        "微信登录服务暂时不可用，请稍后重试", "WeChat login is unavailable; retry shortly"
    ),
    "login_method_disabled": Message(
        "本服务未开通该登录方式", "This login method is not enabled on this service"
    ),
    "refresh_token_invalid": Message(
        "登录状态无效，请重新登录", "The refresh token is not valid; log in again"
    ),
    "refresh_token_expired": Message(
        "登录已过期，请重新登录", "The refresh token has expired; log in again"
    ),
    "refresh_token_reused": Message(
        "登录凭证被重复使用，已退出该登录，请重新登录",
        "The refresh token was already used: the session is ended; log in again",
    ),
    "staff_login_failed": Message("用户名或密码错误", "The username or password is wrong"),
    "staff_login_locked": Message(
        "该账号密码错误次数过多，已暂时锁定，请稍后再试",
        "Too many wrong passwords for this account; try again later",
    ),
    "staff_account_disabled": Message("该工作人员账号已停用", "This staff account is disabled"),
    # Postgres
    "database_unavailable": Message(
        "数据库暂时不可用，请稍后使用同一 Idempotency-Key 重试",
        "The database is unavailable; retry shortly with the same Idempotency-Key",
    ),
    "migration_failed": Message("数据库结构迁移失败", "The database schema could not be migrated"),
    "migration_checksum_mismatch": Message(
        "已执行的数据库迁移被修改过", "An applied migration was edited after it was applied"
    ),
    "outbox_entry_malformed": Message(
        "发件箱记录无法解析为事件", "An outbox entry could not be read as an event"
    ),
    "outbox_concurrent_write": Message(
        "本批事件中有事件已被并发提交", "An event of the batch was committed concurrently"
    ),
    # payments
    "payment_error": Message("支付出错", "Payment error"),
    "payments_disabled": Message("本服务未开通支付", "Payments are not enabled on this service"),
    "merchant_not_configured": Message(
        "该医院尚未开通在线支付", "This hospital does not take online payments yet"
    ),
    "payment_not_needed": Message("该锁号无需支付费用", "This hold has no fee to pay"),
    "payment_required": Message("该锁号需支付后确认", "This hold is confirmed by paying it"),
    "payment_closed": Message("该锁号的支付已关闭", "The payment of this hold was closed"),
    "payment_provider_unavailable": Message(
        "支付渠道暂时不可用，请稍后重试", "The payment provider is unavailable; retry shortly"
    ),
    "payment_provider_refused": Message(
        "支付渠道拒绝了该请求", "The payment provider refused the request"
    ),
    "FAIL": Message("支付通知未被接受", "Notification refused"),
    "refund_request_invalid": Message("退款请求无效", "Invalid refund request"),
    # the HIS
    "his_error": Message("医院系统出错", "The hospital system failed"),
    "his_refused": Message("医院拒绝了该预约", "The hospital refused the booking"),
    "his_unavailable": Message("医院系统暂时不可用", "The hospital system is unavailable"),
    "his_circuit_open": Message("医院系统暂时不可用", "The hospital system is unavailable"),
    "his_protocol": Message(
        "医院系统返回了无效的应答", "The hospital system answered something invalid"
    ),
}

#: The Chinese of the details the API raises with (a detail without an entry is shown
#: in English answers only). Digits in a detail stand for ``{n}``.
DETAILS: Final[Mapping[str, str]] = {
    "no such hold": "锁号不存在",
    "no such booking": "预约不存在",
    "no such slot": "号源时段不存在",
    "no such patient": "就诊人不存在",
    "no such schedule": "排班不存在",
    "no such waitlist entry": "候补记录不存在",
    "no such hospital": "医院不存在",
    "no refund for this booking": "该预约没有退款",
    "no such asset": "没有该文件",
    "token expired": "令牌已过期",
    "malformed token": "令牌格式错误",
    "unknown signing key": "未知的签名密钥",
    "invalid token": "令牌无效",
    "the token's subject is not a valid account id": "令牌中的账号无效",
    "this operation needs an operator token": "此操作需要运营人员令牌",
    "this operation needs a staff or operator token": "此操作需要工作人员或运营人员令牌",
    "no such booking or patient": "预约或就诊人不存在",
    "the body must be application/json": "请求体必须是 application/json",
    "the body is larger than {n} bytes": "请求体超过 {n} 字节",
    "the body is not valid JSON": "请求体不是有效的 JSON",
    "this hold is a booking: cancel it with POST /v1/bookings/{id}/cancel": (
        "该锁号已是预约：请用 POST /v1/bookings/{id}/cancel 取消"
    ),
    "this hold has a fee: it is confirmed when its payment is notified": (
        "该锁号需付费：支付成功通知到达后自动确认"
    ),
    "a referenced hospital, department or doctor does not exist": "引用的医院、科室或医生不存在",
    "the change breaks a catalogue rule": "该修改违反了目录规则",
    "the change breaks a catalogue rule (a slot of another schedule, or a schedule moved "
    "to another department or date)": (
        "该修改违反了目录规则（号源属于其他排班，或排班被移到其他科室或日期）"
    ),
}

_NUMBER = re.compile(r"\d+")


def language_of(accept_language: str | None) -> Language:
    """The answer's language from an ``Accept-Language`` header (RFC 9110 q-values):
    English when an ``en`` range is preferred over every ``zh`` one, else Chinese."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    best: tuple[float, int, Language] | None = None
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in ("zh", "en", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if not 0.0 < quality <= 1.0:
            continue
        language: Language = "en" if primary == "en" else DEFAULT_LANGUAGE
        # Highest quality wins; on a tie, the range listed first.
        if best is None or quality > best[0]:
            best = (quality, position, language)
    return best[2] if best else DEFAULT_LANGUAGE


def title_in(code: str, language: Language) -> str:
    """A code's title in ``language`` (an unknown code: the generic HTTP one)."""
    message = MESSAGES.get(code) or MESSAGES["http_error"]
    return message.en if language == "en" else message.zh


def detail_in(detail: str, language: Language) -> str | None:
    """A detail in ``language``: Chinese from :data:`DETAILS` (None when it has none)."""
    if language == "en":
        return detail
    exact = DETAILS.get(detail)
    if exact is not None:
        return exact
    numbers = _NUMBER.findall(detail)
    if len(numbers) != 1:
        return None
    template = DETAILS.get(_NUMBER.sub("{n}", detail))
    return None if template is None else template.replace("{n}", numbers[0])
