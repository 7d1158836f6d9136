"""Login settings, read with the rest of :class:`inventory.ops.config.Settings`
(``Settings.login``) from ``INVENTORY_*`` variables (that module alone reads the
environment; this one says what is valid).

- WeChat login is on when ``WECHAT_APP_SECRET`` is set: the mini-program's ``WECHAT_APPID``
  (the payments' app id too) and its AppSecret, exchanged at ``WECHAT_LOGIN_URL``'s
  ``/sns/jscode2session``.
- SMS login is on when ``SMS_URL`` is set: the SMS provider, with ``SMS_API_KEY`` sent as
  its bearer token when set and ``SMS_SIGN`` its signature (签名); ``SMS_CODE_KEY``
  (``id:base64``, at least 32 bytes) is the HMAC key codes are kept under at rest
  (required with ``SMS_URL``).
- Token lifetimes: ``ACCESS_TOKEN_TTL_S``, ``REFRESH_TOKEN_TTL_S`` (each refresh token;
  a refresh starts a new one) and ``LOGIN_SESSION_MAX_S`` (a session's end, however often
  it is refreshed).
- Codes: ``SMS_CODE_TTL_S``, ``SMS_CODE_MAX_FAILURES`` wrong codes lock the phone for
  ``SMS_LOCK_S``; sends are limited per phone (``SMS_RESEND_S`` apart and
  ``SMS_RATE_PER_PHONE``) and per client address (``SMS_RATE_PER_IP``); logins per client
  address (``LOGIN_RATE_PER_IP``).
- Staff sign-in (always on; accounts come from ``inventory staff``): its operator tokens
  live ``STAFF_TOKEN_TTL_S``; ``STAFF_MAX_FAILURES`` wrong passwords lock an account for
  ``STAFF_LOCK_S``; sign-ins are limited per client address (``STAFF_LOGIN_RATE_PER_IP``).

The AppSecret, the SMS API key and the code key never appear in ``repr`` or logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Where the WeChat platform's server API lives.
WECHAT_API_URL = "https://api.weixin.qq.com"


@dataclass(frozen=True)
class Rate:
    """At most ``count`` per ``per_s`` seconds (0 turns the limit off)."""

    count: int
    per_s: float

    @property
    def enabled(self) -> bool:
        return self.count > 0


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """How SMS login codes live and lock."""

    ttl_s: int = 300
    max_failures: int = 5
    lock_s: int = 900


@dataclass(frozen=True)
class LoginSettings:
    """The login part of the service's settings (see the module docstring)."""

    wechat_appid: str = ""
    wechat_app_secret: str = field(default="", repr=False)
    wechat_login_url: str = WECHAT_API_URL
    sms_url: str = ""
    sms_api_key: str = field(default="", repr=False)
    #: The signature (签名) the provider puts before a code's text.
    sms_sign: str = "预约挂号"
    #: ``id:base64`` HMAC key of codes at rest (and of phones in key names).
    sms_code_key: bytes = field(default=b"", repr=False)
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    session_max_s: int = 90 * 24 * 3600
    sms_code_ttl_s: int = 300
    sms_code_max_failures: int = 5
    sms_lock_s: int = 900
    sms_resend_s: int = 60
    sms_rate_per_phone: Rate = field(default_factory=lambda: Rate(5, 3600))
    sms_rate_per_ip: Rate = field(default_factory=lambda: Rate(20, 3600))
    login_rate_per_ip: Rate = field(default_factory=lambda: Rate(30, 60))
    #: Staff sign-in: the operator token's life, the lock, the per-address limit.
    staff_token_ttl_s: int = 8 * 3600
    staff_max_failures: int = 5
    staff_lock_s: int = 900
    staff_rate_per_ip: Rate = field(default_factory=lambda: Rate(10, 60))
    #: How long a call to the WeChat platform or the SMS provider may take.
    provider_timeout_s: float = 5.0

    @property
    def wechat_enabled(self) -> bool:
        """WeChat mini-program login is on (an AppSecret is configured)."""
        return bool(self.wechat_app_secret)

    @property
    def sms_enabled(self) -> bool:
        """SMS-code login is on (an SMS provider is configured)."""
        return bool(self.sms_url)

    def code_policy(self) -> CodePolicy:
        """How SMS codes live and lock."""
        return CodePolicy(
            ttl_s=self.sms_code_ttl_s,
            max_failures=self.sms_code_max_failures,
            lock_s=self.sms_lock_s,
        )

    def problems(self) -> list[str]:
        """What is missing or inconsistent (nothing when both logins are off)."""
        p = "INVENTORY_"
        found: list[str] = []
        if self.wechat_enabled:
            if not self.wechat_appid:
                found.append(f"{p}WECHAT_APPID: required with WECHAT_APP_SECRET")
            if not _http_url(self.wechat_login_url):
                found.append(f"{p}WECHAT_LOGIN_URL: must be an http(s) URL")
        if self.sms_enabled:
            if not _http_url(self.sms_url):
                found.append(f"{p}SMS_URL: must be an http(s) URL")
            if len(self.sms_code_key) < 32:
                found.append(f"{p}SMS_CODE_KEY: an id:base64 key of at least 32 bytes is required")
        if self.refresh_token_ttl_s > self.session_max_s:
            found.append(f"{p}REFRESH_TOKEN_TTL_S: must not exceed LOGIN_SESSION_MAX_S")
        return found


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
