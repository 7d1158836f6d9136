"""WeChat subscribe messages (订阅消息) through the mini-program's server API.

``GET /cgi-bin/token`` gives an access token (kept until shortly before it expires, and
fetched again when the API says it is invalid), ``POST
/cgi-bin/message/subscribe/send?access_token=...`` sends one message: ``touser`` (the
openid), ``template_id``, ``page``, ``data``. Errors come back as ``errcode``:

* 0: sent (``msgid``);
* 40001, 42001 (token invalid or expired): a new token, once, then transient;
* -1 (system busy), 45009 (frequency limit), HTTP 5xx and network errors: transient;
* 43101 (the user refused or used up the subscription), 40003 (bad openid), 40037
  (bad template id), 47003 (bad data) and every other code: permanent.

WeChat does not de-duplicate on a key of ours; the delivery's idempotency key is sent as
the ``Idempotency-Key`` header all the same (the simulator de-duplicates on it, and a
gateway in front of WeChat may), so after a crash between sending and recording a real
WeChat may show the message twice (docs/notifications.md).
"""

from __future__ import annotations

import time
from typing import Any, Final

import aiohttp

from inventory.notify.channels import Outgoing, PermanentSendError, TransientSendError

#: errcodes meaning "try again".
_TRANSIENT: Final = frozenset({-1, 45009, 45047})
#: errcodes meaning "the token is stale".
_STALE_TOKEN: Final = frozenset({40001, 42001, 40014})
#: A token is renewed this long before WeChat says it expires.
_TOKEN_MARGIN_S: Final = 300.0


class WeChatSubscribeChannel:
    """The ``wechat`` channel."""

    name = "wechat"

    def __init__(self, base_url: str, appid: str, secret: str, *, timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._appid = appid
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_until = 0.0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http().request(method, self._base + path, **kwargs) as answer:
                if answer.status >= 500 or answer.status == 429:
                    raise TransientSendError(f"http_{answer.status}", f"HTTP {answer.status}")
                if answer.status >= 400:
                    raise PermanentSendError(f"http_{answer.status}", f"HTTP {answer.status}")
                body = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise TransientSendError("unreachable", type(error).__name__) from error
        if not isinstance(body, dict):
            raise TransientSendError("bad_answer", "not a JSON object")
        return body

    async def _access_token(self, *, renew: bool = False) -> str:
        if self._token and not renew and time.monotonic() < self._token_until:
            return self._token
        body = await self._call(
            "GET",
            "/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self._appid,
                "secret": self._secret,
            },
        )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            code = body.get("errcode")
            raise TransientSendError("token", f"no access token (errcode {code})")
        expires_in = float(body.get("expires_in") or 7200)
        self._token = token
        self._token_until = time.monotonic() + max(expires_in - _TOKEN_MARGIN_S, 1.0)
        return token

    async def send(self, message: Outgoing) -> str:
        wechat = message.wechat
        if wechat is None:
            raise PermanentSendError("no_template", "no WeChat template for this kind")
        payload = {
            "touser": message.address,
            "template_id": wechat.template_id,
            "page": wechat.page,
            "data": {key: dict(value) for key, value in wechat.data.items()},
            "miniprogram_state": "formal",
            "lang": "zh_CN",
        }
        for renew in (False, True):
            token = await self._access_token(renew=renew)
            body = await self._call(
                "POST",
                "/cgi-bin/message/subscribe/send",
                params={"access_token": token},
                json=payload,
                headers={"Idempotency-Key": message.key},
            )
            code = body.get("errcode", 0)
            if code == 0:
                return str(body.get("msgid", ""))
            if code in _STALE_TOKEN and not renew:
                continue
            if code in _TRANSIENT or code in _STALE_TOKEN:
                raise TransientSendError(f"errcode_{code}", f"WeChat errcode {code}")
            raise PermanentSendError(f"errcode_{code}", f"WeChat errcode {code}")
        raise AssertionError("unreachable")  # pragma: no cover
