"""wx-sim: a WeChat mini-program platform simulator for tests and local runs: the server
API's code2session call, and the device's ``wx.login`` that hands out the codes.

- ``GET /sns/jscode2session?appid=&secret=&js_code=&grant_type=authorization_code``: as
  the platform answers it: ``{"openid", "session_key", "unionid"?}`` for a code it
  handed out in the last five minutes and not yet exchanged; else ``{"errcode",
  "errmsg"}``: 40029 invalid code, 40163 code been used, 40013 invalid appid, 40125
  invalid appsecret, 40002 invalid grant_type; 45011 and -1 under the faults below.
- ``POST /sim/login`` ``{"openid"?: ..., "unionid"?: ...}``: a device calls ``wx.login``:
  a fresh code for that user (a new openid when none is given) ``{"code", "openid"}``.
- ``PUT /sim/faults`` ``{"code2session": "ok" | "rate_limit" | "busy" | "http_500" |
  "garbage"}``: how the next exchanges fail (45011, -1, an HTTP 500, a body that is not
  JSON).
- ``GET /sim/exchanges``: how many exchanges were answered, by errcode.

Run it with ``python -m inventory.simulators.wxsim serve --port 8091 --appid wx... --secret
...`` (or ``INVENTORY_WXSIM_APPID`` / ``INVENTORY_WXSIM_SECRET``). Test credentials only.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

#: A code's life at the platform.
CODE_TTL_S = 300
FAULTS = ("ok", "rate_limit", "busy", "http_500", "garbage")


def new_openid() -> str:
    """An openid-like id (28 characters of base64url, as the platform's look)."""
    return "o" + base64.urlsafe_b64encode(secrets.token_bytes(20)).decode().rstrip("=")[:27]


@dataclass
class _Code:
    openid: str
    unionid: str | None
    issued: float
    used: bool = False


@dataclass
class WxSim:
    """The simulator's state and handlers."""

    appid: str
    secret: str = field(repr=False)
    codes: dict[str, _Code] = field(default_factory=dict)
    fault: str = "ok"
    answered: Counter[int] = field(default_factory=Counter)

    def _error(self, errcode: int, errmsg: str) -> web.Response:
        self.answered[errcode] += 1
        # The platform answers errors with HTTP 200 and a JSON body (as text/plain).
        return web.json_response(
            {"errcode": errcode, "errmsg": f"{errmsg}, rid: {secrets.token_hex(4)}"},
            content_type="text/plain",
        )

    async def code2session(self, request: web.Request) -> web.Response:
        """GET /sns/jscode2session."""
        if self.fault == "http_500":
            return web.Response(status=500, text="internal error")
        if self.fault == "garbage":
            return web.Response(status=200, text="<html>gateway</html>")
        if self.fault == "rate_limit":
            return self._error(45011, "api minute-quota reach limit  mustslower  retry next minute")
        if self.fault == "busy":
            return self._error(-1, "system error")
        query = request.query
        if query.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        if not secrets.compare_digest(query.get("secret", ""), self.secret):
            return self._error(40125, "invalid appsecret")
        if query.get("grant_type") != "authorization_code":
            return self._error(40002, "invalid grant_type")
        code = self.codes.get(query.get("js_code", ""))
        if code is None or time.monotonic() - code.issued > CODE_TTL_S:
            return self._error(40029, "invalid code")
        if code.used:
            return self._error(40163, "code been used")
        code.used = True
        self.answered[0] += 1
        answer: dict[str, str] = {
            "openid": code.openid,
            "session_key": base64.b64encode(secrets.token_bytes(16)).decode(),
        }
        if code.unionid:
            answer["unionid"] = code.unionid
        return web.json_response(answer, content_type="text/plain")

    async def login(self, request: web.Request) -> web.Response:
        """POST /sim/login: a device's wx.login."""
        data = await request.json() if request.can_read_body else {}
        if not isinstance(data, dict):
            return web.json_response({"error": "expected a JSON object"}, status=422)
        openid = str(data.get("openid") or new_openid())
        unionid = data.get("unionid")
        code = secrets.token_urlsafe(24)[:32]
        self.codes[code] = _Code(openid, str(unionid) if unionid else None, time.monotonic())
        return web.json_response({"code": code, "openid": openid})

    async def set_faults(self, request: web.Request) -> web.Response:
        """PUT /sim/faults."""
        data = await request.json()
        fault = data.get("code2session", "ok") if isinstance(data, dict) else None
        if fault not in FAULTS:
            return web.json_response({"error": f"code2session: one of {FAULTS}"}, status=422)
        self.fault = fault
        return web.json_response({"code2session": self.fault})

    async def exchanges(self, request: web.Request) -> web.Response:
        """GET /sim/exchanges."""
        return web.json_response({str(k): v for k, v in self.answered.items()})

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz."""
        return web.json_response({"status": "ok"})


def create_sim_app(appid: str, secret: str) -> web.Application:
    """The simulator as an aiohttp application."""
    sim = WxSim(appid=appid, secret=secret)
    app = web.Application()
    app.add_routes(
        [
            web.get("/sns/jscode2session", sim.code2session),
            web.post("/sim/login", sim.login),
            web.put("/sim/faults", sim.set_faults),
            web.get("/sim/exchanges", sim.exchanges),
            web.get("/healthz", sim.healthz),
        ]
    )
    return app


def main(argv: list[str] | None = None) -> int:
    """``python -m inventory.simulators.wxsim serve``."""
    parser = argparse.ArgumentParser(prog="python -m inventory.simulators.wxsim")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the simulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("INVENTORY_WXSIM_PORT", 0)))
    serve.add_argument("--appid", default=os.environ.get("INVENTORY_WXSIM_APPID", ""))
    serve.add_argument("--secret", default=os.environ.get("INVENTORY_WXSIM_SECRET", ""))
    args = parser.parse_args(argv)
    if not args.port or not args.appid or not args.secret:
        print("wxsim: give --port, --appid and --secret (or INVENTORY_WXSIM_*)", file=sys.stderr)
        return 2
    web.run_app(
        create_sim_app(args.appid, args.secret),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
