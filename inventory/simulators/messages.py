"""Message simulators for tests and local runs: WeChat subscribe messages and an SMS
provider, each an HTTP server that records what it was sent and shows it to tests.

Both de-duplicate on the ``Idempotency-Key`` header: a repeated key gets the first
message's id and is recorded once (``requests`` counts every call, so a test sees the
second call that the key absorbed).

WeChat (``python -m inventory.simulators.messages serve wechat --port N``):

- ``GET /cgi-bin/token?grant_type=client_credential&appid=...&secret=...``: an access token
  for the configured appid and secret (``--appid``, ``--secret``), else errcode 40125;
- ``POST /cgi-bin/message/subscribe/send?access_token=...``: errcode 40001 for a token it
  did not issue, 47003 without ``touser``, ``template_id`` or ``data``; else
  ``{"errcode": 0, "msgid": ...}``.

SMS (``python -m inventory.simulators.messages serve sms --port N``):

- ``POST /v1/messages`` with ``Authorization: Bearer <--api-key>`` and ``{"phone", "sign",
  "text"}``: 401 for another key, 400 for a phone that is not an 11-digit mobile, else
  ``{"message_id": ...}``.

Both:

- ``GET /sim/messages``: every recorded message (address, key, content);
- ``PUT /sim/faults`` ``{"mode": "ok" | "down" | "busy" | "refuse" | "hang", "hang_s": 30}``:
  ``down`` answers 503, ``busy`` a transient provider error (WeChat errcode -1, SMS 429),
  ``refuse`` a permanent one (WeChat 43101, SMS 400), ``hang`` records the message and
  then waits ``hang_s`` before answering (a crash of the sender between its send and its
  record is staged with it);
- ``POST /sim/reset``: forget messages and faults;
- ``GET /healthz``.

The simulators never log a message, an address or a request line.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

_MOBILE_RE: Final = re.compile(r"^1[3-9]\d{9}$")
MODES: Final = ("ok", "down", "busy", "refuse", "hang")


@dataclass
class Recorded:
    """One message the simulator took."""

    key: str
    address: str
    content: dict[str, Any]
    message_id: str
    at: float = field(default_factory=time.time)


class MessageSim:
    """State shared by both simulators: messages by key, call counts, the fault mode."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.messages: dict[str, Recorded] = {}
        self.requests: dict[str, int] = {}
        self.mode = "ok"
        self.hang_s = 30.0

    def fault(self) -> str | None:
        """The fault to play before recording (``hang`` is played after)."""
        return self.mode if self.mode in ("down", "busy", "refuse") else None

    async def take(self, key: str, address: str, content: dict[str, Any]) -> Recorded:
        """Record a message once per key (a repeat returns the first); ``hang`` waits."""
        self.requests[key] = self.requests.get(key, 0) + 1
        found = self.messages.get(key) if key else None
        if found is None:
            found = Recorded(key, address, content, f"{self.channel}-{secrets.token_hex(8)}")
            self.messages[key or found.message_id] = found
        if self.mode == "hang":
            await asyncio.sleep(self.hang_s)
        return found

    async def list_messages(self, request: web.Request) -> web.Response:
        """GET /sim/messages."""
        return web.json_response(
            {
                "messages": [
                    {
                        "key": m.key,
                        "address": m.address,
                        "content": m.content,
                        "message_id": m.message_id,
                        "at": m.at,
                        "requests": self.requests.get(m.key, 1),
                    }
                    for m in self.messages.values()
                ],
                "requests": sum(self.requests.values()),
            },
            dumps=lambda value: orjson.dumps(value).decode(),
        )

    async def set_faults(self, request: web.Request) -> web.Response:
        """PUT /sim/faults."""
        try:
            data = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return web.json_response({"error": "not JSON"}, status=400)
        mode = data.get("mode", self.mode)
        if mode not in MODES:
            return web.json_response({"error": f"mode: one of {', '.join(MODES)}"}, status=422)
        self.mode = mode
        self.hang_s = float(data.get("hang_s", self.hang_s))
        return web.json_response({"mode": self.mode, "hang_s": self.hang_s})

    async def reset(self, request: web.Request) -> web.Response:
        """POST /sim/reset."""
        self.messages.clear()
        self.requests.clear()
        self.mode = "ok"
        return web.json_response({"mode": self.mode})

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz."""
        return web.json_response({"status": "ok", "channel": self.channel})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/sim/messages", self.list_messages),
            web.put("/sim/faults", self.set_faults),
            web.post("/sim/reset", self.reset),
            web.get("/healthz", self.healthz),
        ]


class WeChatSim(MessageSim):
    """The subscribe-message API."""

    def __init__(self, appid: str, secret: str) -> None:
        super().__init__("wechat")
        self.appid = appid
        self.secret = secret
        self.tokens: set[str] = set()

    async def token(self, request: web.Request) -> web.Response:
        """GET /cgi-bin/token."""
        query = request.query
        if query.get("appid") != self.appid or query.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def send(self, request: web.Request) -> web.Response:
        """POST /cgi-bin/message/subscribe/send."""
        if self.mode == "down":
            return web.json_response({"errmsg": "unavailable"}, status=503)
        if request.query.get("access_token") not in self.tokens:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if self.mode == "busy":
            return web.json_response({"errcode": -1, "errmsg": "system error"})
        if self.mode == "refuse":
            return web.json_response({"errcode": 43101, "errmsg": "user refuse to accept"})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        if not (
            isinstance(body, dict)
            and body.get("touser")
            and body.get("template_id")
            and isinstance(body.get("data"), dict)
        ):
            return web.json_response({"errcode": 47003, "errmsg": "argument invalid"})
        content = {k: body.get(k) for k in ("template_id", "page", "data", "lang")}
        found = await self.take(
            request.headers.get("Idempotency-Key", ""), str(body["touser"]), content
        )
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": found.message_id})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/cgi-bin/token", self.token),
            web.post("/cgi-bin/message/subscribe/send", self.send),
            *super().routes(),
        ]


class SmsSim(MessageSim):
    """The SMS provider."""

    def __init__(self, api_key: str) -> None:
        super().__init__("sms")
        self.api_key = api_key

    async def send(self, request: web.Request) -> web.Response:
        """POST /v1/messages."""
        if self.mode == "down":
            return web.json_response({"error": "unavailable"}, status=503)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.mode == "busy":
            return web.json_response({"error": "throttled"}, status=429)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": "not JSON"}, status=400)
        if self.mode == "refuse" or not isinstance(body, dict):
            return web.json_response({"error": "refused"}, status=400)
        phone = body.get("phone")
        if not isinstance(phone, str) or not _MOBILE_RE.fullmatch(phone) or not body.get("text"):
            return web.json_response({"error": "invalid phone or text"}, status=400)
        content = {"sign": body.get("sign", ""), "text": body["text"]}
        found = await self.take(request.headers.get("Idempotency-Key", ""), phone, content)
        return web.json_response({"message_id": found.message_id})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.send), *super().routes()]


SIM_STATE = web.AppKey("message_sim", MessageSim)


def create_wechat_app(appid: str, secret: str) -> web.Application:
    """The WeChat simulator as an aiohttp application."""
    sim = WeChatSim(appid, secret)
    app = web.Application()
    app[SIM_STATE] = sim
    app.add_routes(sim.routes())
    return app


def create_sms_app(api_key: str) -> web.Application:
    """The SMS simulator as an aiohttp application."""
    sim = SmsSim(api_key)
    app = web.Application()
    app[SIM_STATE] = sim
    app.add_routes(sim.routes())
    return app


#: Credentials the simulators take unless told otherwise (test values, never real ones).
DEFAULT_APPID: Final = "wx-sim-appid"
DEFAULT_SECRET: Final = "sim-secret"
DEFAULT_SMS_KEY: Final = "sim-sms-key"


def main(argv: list[str] | None = None) -> int:
    """``python -m inventory.simulators.messages serve wechat|sms --port N``."""
    parser = argparse.ArgumentParser(prog="python -m inventory.simulators.messages")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one simulator")
    serve.add_argument("channel", choices=("wechat", "sms"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--appid", default=DEFAULT_APPID)
    serve.add_argument("--secret", default=DEFAULT_SECRET)
    serve.add_argument("--api-key", default=DEFAULT_SMS_KEY)
    args = parser.parse_args(argv)
    app = (
        create_wechat_app(args.appid, args.secret)
        if args.channel == "wechat"
        else create_sms_app(args.api_key)
    )
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
