"""SMS through a provider's HTTP API, behind :class:`inventory.notify.channels.Channel`.

The provider interface is small on purpose, so that an adapter for a carrier gateway
(Aliyun, Tencent Cloud, a hospital's own) is one class: ``POST /v1/messages`` with a
bearer API key, the delivery's idempotency key as ``Idempotency-Key`` (the provider
answers a repeated key with the first message's id and sends nothing), and a JSON body
``{"phone", "sign", "text"}``. 200/201 with ``{"message_id"}`` is sent; 429 and 5xx are
transient; any other 4xx is permanent (a number that is not a mobile, a text refused).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from inventory.notify.channels import Outgoing, PermanentSendError, TransientSendError


class HttpSmsChannel:
    """The ``sms`` channel."""

    name = "sms"

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float) -> None:
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, message: Outgoing) -> str:
        headers = {"Authorization": f"Bearer {self._api_key}", "Idempotency-Key": message.key}
        body = {"phone": message.address, "sign": message.sms_sign, "text": message.sms_text}
        try:
            async with self._http().post(self._url, json=body, headers=headers) as answer:
                status = answer.status
                found: Any = await answer.json(content_type=None) if status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise TransientSendError("unreachable", type(error).__name__) from error
        if status >= 500 or status == 429:
            raise TransientSendError(f"http_{status}", f"HTTP {status}")
        if status >= 300:
            raise PermanentSendError(f"http_{status}", f"HTTP {status}")
        if not isinstance(found, dict) or not found.get("message_id"):
            raise TransientSendError("bad_answer", "no message_id")
        return str(found["message_id"])
