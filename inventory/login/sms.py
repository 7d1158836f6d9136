"""Sending SMS for login: the provider interface, and its client for an HTTP SMS gateway.

:class:`SmsSender` is what login needs of a provider: send one text to one phone,
idempotently by a request id. :class:`HttpSmsSender` speaks the SMS protocol the
notifications use (inventory/notify/sms.py; the simulator is
``python -m inventory.simulators.messages serve sms``)::

    POST {base}/v1/messages   Authorization: Bearer <api key>   Idempotency-Key: <request id>
    {"phone": "13800138000", "sign": "预约挂号", "text": "您的登录验证码为 482913，..."}
    -> 200/201 {"message_id": "..."}

A vendor's own API (Tencent Cloud SMS, Alibaba Cloud SMS, ...) is another implementation
of the same interface. Neither the phone nor the text is logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import orjson
import structlog

from inventory.login.errors import SmsUnavailableError

log = structlog.get_logger(__name__)

#: How long a front end waits after the provider failed.
UNAVAILABLE_RETRY_S = 5


def login_code_text(code: str, minutes: int) -> str:
    """The text of a login code's SMS."""
    return f"您的登录验证码为 {code}，{minutes} 分钟内有效。如非本人操作，请忽略本短信。"


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One text to one phone (canonical 11 digits)."""

    phone: str = field(repr=False)
    text: str = field(repr=False)
    #: The signature (签名) the provider puts before the text.
    sign: str
    #: The same id for a retry of the same message: the provider sends it once.
    request_id: str


class SmsSender(Protocol):
    """An SMS provider."""

    async def send(self, message: SmsMessage) -> str:
        """Send ``message``; the provider's message id. :class:`SmsUnavailableError`
        when it could not be handed over."""
        ...


class HttpSmsSender:
    """An SMS gateway speaking the protocol of the module docstring."""

    def __init__(
        self, http: aiohttp.ClientSession, *, base_url: str, api_key: str, timeout_s: float
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"HttpSmsSender(url={self._url!r})"

    async def send(self, message: SmsMessage) -> str:
        body = orjson.dumps({"phone": message.phone, "sign": message.sign, "text": message.text})
        headers = self._headers | {
            "Content-Type": "application/json",
            "Idempotency-Key": message.request_id,
        }
        try:
            async with self._http.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as answer:
                status = answer.status
                raw = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("sms.unreachable", error=type(error).__name__)
            raise SmsUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S) from None
        if status not in (200, 201):
            log.warning("sms.refused", status=status)
            raise SmsUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S)
        try:
            message_id = orjson.loads(raw).get("message_id")
        except (orjson.JSONDecodeError, AttributeError):
            message_id = None
        return str(message_id or "")
