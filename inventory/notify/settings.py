"""Notification settings, read with the rest of :class:`inventory.ops.config.Settings`
(``Settings.notify``) from ``INVENTORY_NOTIFY_*`` variables (that module alone reads the
environment; this one says what is valid).

The notifier runs in the worker when at least one channel has a URL:

- ``NOTIFY_WECHAT_URL``: the WeChat API base (``https://api.weixin.qq.com``; the
  simulator's in dev and tests), with ``NOTIFY_WECHAT_APPID`` and ``NOTIFY_WECHAT_SECRET``
  (the mini-program's, for its access token) and ``NOTIFY_WECHAT_TEMPLATES``
  (``kind:template_id,...``: the templates every hospital uses unless it names its own);
- ``NOTIFY_SMS_URL`` and ``NOTIFY_SMS_API_KEY``: the SMS provider, ``NOTIFY_SMS_SIGN``
  the default signature (签名);
- ``NOTIFY_INTERVAL_S`` (1): how often the notifier looks for work;
- ``NOTIFY_LEASE_S`` (30): how long one attempt may run before another sender takes the
  delivery again (longer than a provider call's timeout);
- ``NOTIFY_MAX_ATTEMPTS`` (8), ``NOTIFY_RETRY_INITIAL_S`` (5), ``NOTIFY_RETRY_MAX_S``
  (600): the back-off between failed attempts, then the dead letter;
- ``NOTIFY_REMINDER_TIME`` (08:00): the day-before reminder's wall-clock time for
  hospitals that do not set their own; ``NOTIFY_SCAN_INTERVAL_S`` (30): how often the
  notifier looks for due reminders and ended bans;
- ``NOTIFY_CALL_TIMEOUT_S`` (10): the limit of one provider call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Final
from urllib.parse import urlsplit

#: Template ids as WeChat issues them (letters, digits, "-" and "_").
_TEMPLATE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_templates(text: str) -> dict[str, str]:
    """``kind:template_id,...`` (ValueError when malformed)."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, template = item.partition(":")
        if not sep or not re.fullmatch(r"[a-z_]{1,40}", kind):
            raise ValueError("expected KIND:TEMPLATE_ID pairs separated by commas")
        if not _TEMPLATE_ID_RE.fullmatch(template):
            raise ValueError(f"template id of {kind!r} is not a WeChat template id")
        found[kind] = template
    return found


def parse_wall_time(text: str) -> time:
    """``HH:MM`` (ValueError otherwise)."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise ValueError("expected HH:MM")
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class NotifySettings:
    """The channels and the notifier's pace (see the module docstring)."""

    wechat_url: str = ""
    wechat_appid: str = ""
    wechat_secret: str = field(default="", repr=False)
    #: Plain dicts, not read-only proxies: ``serve --workers N`` pickles the settings.
    wechat_templates: Mapping[str, str] = field(default_factory=dict)
    sms_url: str = ""
    sms_api_key: str = field(default="", repr=False)
    sms_sign: str = "预约挂号"
    interval_s: float = 1.0
    lease_s: float = 30.0
    max_attempts: int = 8
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    reminder_time: time = time(8, 0)
    #: How often the notifier looks for due reminders and ended bans.
    scan_interval_s: float = 30.0
    #: Seconds one provider call may take.
    call_timeout_s: float = 10.0

    @property
    def wechat(self) -> bool:
        """Whether WeChat subscribe messages are sent."""
        return bool(self.wechat_url)

    @property
    def sms(self) -> bool:
        """Whether SMS are sent."""
        return bool(self.sms_url)

    @property
    def enabled(self) -> bool:
        """Whether the worker runs the notifier (some channel is configured)."""
        return self.wechat or self.sms

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, in the order a message tries them."""
        return tuple(name for name, on in (("wechat", self.wechat), ("sms", self.sms)) if on)

    def problems(self) -> list[str]:
        """What is missing or inconsistent."""
        found: list[str] = []
        for name, url in (("NOTIFY_WECHAT_URL", self.wechat_url), ("NOTIFY_SMS_URL", self.sms_url)):
            if url and urlsplit(url).scheme not in ("http", "https"):
                found.append(f"INVENTORY_{name}: expected an http(s) URL")
        if self.wechat and not (self.wechat_appid and self.wechat_secret):
            found.append(
                "INVENTORY_NOTIFY_WECHAT_APPID / _SECRET: required with INVENTORY_NOTIFY_WECHAT_URL"
            )
        if self.sms and not self.sms_api_key:
            found.append("INVENTORY_NOTIFY_SMS_API_KEY: required with INVENTORY_NOTIFY_SMS_URL")
        if self.retry_max_s < self.retry_initial_s:
            found.append("INVENTORY_NOTIFY_RETRY_MAX_S: must be at least NOTIFY_RETRY_INITIAL_S")
        if self.lease_s <= self.call_timeout_s:
            found.append(
                f"INVENTORY_NOTIFY_LEASE_S: must exceed a provider call's {self.call_timeout_s:g} s"
            )
        return found
