"""Errors of login, each with a stable code and HTTP status (their messages are in
inventory/errors.py's table; the SMS codes' script refusals are there too)."""

from __future__ import annotations

from inventory.errors import InventoryError


class LoginMethodDisabledError(InventoryError):
    """The login method is not configured on this service."""

    code = "login_method_disabled"
    http_status = 409
    title = "This login method is not enabled on this service"


class SmsUnavailableError(InventoryError):
    """The SMS provider could not be reached or refused to send; nothing was sent."""

    code = "sms_unavailable"
    http_status = 503
    title = "The SMS service is unavailable; retry shortly"


class WeChatCodeInvalidError(InventoryError):
    """code2session refused the code (40029 invalid, 40163 already used): the front end
    calls ``wx.login`` again."""

    code = "wechat_code_invalid"
    http_status = 401
    title = "The WeChat login code is invalid or was already used; call wx.login again"


class WeChatRateLimitedError(InventoryError):
    """code2session answered 45011 (the user's minute quota)."""

    code = "wechat_rate_limited"
    http_status = 429
    title = "Too many WeChat logins; retry later"


class WeChatUnavailableError(InventoryError):
    """The platform could not be reached, timed out, was busy (-1) or answered
    something unreadable or a configuration error (logged)."""

    code = "wechat_unavailable"
    http_status = 503
    title = "WeChat login is unavailable; retry shortly"


class RefreshTokenInvalidError(InventoryError):
    """Unknown or malformed refresh token, or its session ended (logout, reuse)."""

    code = "refresh_token_invalid"
    http_status = 401
    title = "The refresh token is not valid; log in again"


class RefreshTokenExpiredError(InventoryError):
    code = "refresh_token_expired"
    http_status = 401
    title = "The refresh token has expired; log in again"


class RefreshTokenReusedError(InventoryError):
    """A refresh token already exchanged was presented again: whoever holds the newer
    one may have stolen it, so the whole session is revoked."""

    code = "refresh_token_reused"
    http_status = 401
    title = "The refresh token was already used: the session is ended; log in again"


class StaffLoginFailedError(InventoryError):
    """A staff sign-in with an unknown username or a wrong password: the same answer
    (and time) for both, so no answer tells which usernames exist."""

    code = "staff_login_failed"
    http_status = 401
    title = "The username or password is wrong"


class StaffLoginLockedError(InventoryError):
    """Too many wrong passwords for this account; ``context['retry_after_s']`` says how
    long it stays locked (every password is refused meanwhile, the right one too)."""

    code = "staff_login_locked"
    http_status = 429
    title = "Too many wrong passwords for this account; try again later"


class StaffAccountDisabledError(InventoryError):
    """The right password of a disabled account (only its holder learns it is disabled)."""

    code = "staff_account_disabled"
    http_status = 403
    title = "This staff account is disabled"
