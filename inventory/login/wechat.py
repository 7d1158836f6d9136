"""WeChat mini-program login: the code a front end gets from ``wx.login`` is exchanged
for the user's openid (and unionid) by the platform's code2session call::

    GET {base}/sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code
    -> {"openid", "session_key", "unionid"?}  or  {"errcode", "errmsg"}

The ``session_key`` is dropped on arrival: it is never returned, stored or logged (this
service needs none of what it decrypts). Neither the AppSecret (in the query string) nor
the code is ever logged: failures are logged by their error code or exception type only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson
import structlog

from inventory.login.errors import (
    WeChatCodeInvalidError,
    WeChatRateLimitedError,
    WeChatUnavailableError,
)

log = structlog.get_logger(__name__)

#: Codes the platform refuses: invalid, and already used.
CODE_REFUSED: Final = frozenset({40029, 40163})
#: The user's minute quota (the platform's frequency limit).
RATE_LIMITED: Final = 45011
#: What 45011 asks us to wait: the quota is per minute.
RATE_LIMIT_RETRY_S: Final = 60
#: How long a front end waits after the platform was unreachable or busy.
UNAVAILABLE_RETRY_S: Final = 5
#: What an openid or unionid looks like (28-character base64-ish text in practice).
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)


@dataclass(frozen=True, slots=True)
class WeChatIdentity:
    """Who a code2session answer names."""

    openid: str
    unionid: str | None


class Code2Session:
    """The platform's code2session call, on one HTTP client session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        base_url: str,
        appid: str,
        secret: str,
        timeout_s: float,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/sns/jscode2session"
        self._appid = appid
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def __repr__(self) -> str:
        return f"Code2Session(url={self._url!r}, appid={self._appid!r})"

    async def exchange(self, code: str) -> WeChatIdentity:
        """The identity of a ``wx.login`` code, or the error the front end is told."""
        params = {
            "appid": self._appid,
            "secret": self._secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        try:
            async with self._http.get(self._url, params=params, timeout=self._timeout) as answer:
                status = answer.status
                raw = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            # The error's text may name the URL with its query: the type alone is logged.
            log.warning("wechat.code2session_unreachable", error=type(error).__name__)
            raise WeChatUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S) from None
        if status != 200:
            log.warning("wechat.code2session_failed", status=status)
            raise WeChatUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S)
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            log.warning("wechat.code2session_unreadable", status=status)
            raise WeChatUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S)
        return _identity(data)


def _identity(data: dict[str, Any]) -> WeChatIdentity:
    """The identity in a code2session answer, or the error it stands for."""
    errcode = data.get("errcode", 0)
    if errcode in CODE_REFUSED:
        raise WeChatCodeInvalidError()
    if errcode == RATE_LIMITED:
        raise WeChatRateLimitedError(retry_after_s=RATE_LIMIT_RETRY_S)
    if errcode not in (0, None):
        # -1 (busy) and our own configuration's errors (40013 appid, 40125 secret, ...):
        # nothing the front end can fix, so it retries later; the code tells operators.
        log.warning(
            "wechat.code2session_refused", errcode=errcode if isinstance(errcode, int) else -1
        )
        raise WeChatUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S)
    openid, unionid = data.get("openid"), data.get("unionid")
    if not isinstance(openid, str) or not _ID_RE.fullmatch(openid):
        log.warning("wechat.code2session_unreadable", field="openid")
        raise WeChatUnavailableError(retry_after_s=UNAVAILABLE_RETRY_S)
    if not isinstance(unionid, str) or not _ID_RE.fullmatch(unionid):
        unionid = None
    return WeChatIdentity(openid=openid, unionid=unionid)
