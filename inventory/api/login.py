"""Patients' login routes: WeChat mini-program login, SMS-code login for the H5, refresh
and logout (docs/auth.md). None takes a bearer token: each is how a front end gets one.

The login service (inventory/login/service.py) opens with the app, after the core
services (it uses their store and database pool), with one HTTP client for the WeChat
platform and the SMS provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from inventory.api.bodies import json_response, read_json
from inventory.api.context import SERVICES, client_ip
from inventory.api.models import Request
from inventory.api.routing import Routes
from inventory.login.passwords import MAX_LENGTH as PASSWORD_MAX_LENGTH
from inventory.login.service import CodeSent, Login, Tokens
from inventory.login.sms import HttpSmsSender
from inventory.login.staff import StaffLogin
from inventory.login.tokens import Signer
from inventory.login.wechat import Code2Session
from inventory.record.accounts import AccountRecord
from inventory.record.staff import StaffRecord

routes = Routes(tag="login")

LOGIN = web.AppKey("login", Login)
STAFF_LOGIN = web.AppKey("staff_login", StaffLogin)


class WeChatLogin(Request):
    """The code ``wx.login`` gave the mini-program (valid five minutes, once)."""

    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class SmsCodeRequest(Request):
    """The phone to send a login code to (a mainland mobile number)."""

    phone: Annotated[str, Field(min_length=11, max_length=20)]


class SmsVerify(Request):
    """The phone and the six-digit code sent to it."""

    phone: Annotated[str, Field(min_length=11, max_length=20)]
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class RefreshTokenBody(Request):
    """A refresh token of a login."""

    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class StaffLoginBody(Request):
    """A staff account's username and password (from `inventory staff add`)."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]


_TOKENS_EXAMPLE: dict[str, JsonValue] = {
    "account_id": "a3f1c9e0b7d24a6e8c1b2d3e",
    "token_type": "Bearer",
    "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsyIiwidHlwIjoiSldUIn0.e30.c2lnbmF0dXJl",
    "expires_in": 900,
    "refresh_token": "q3Xh0b7lJ9c1vYz2n8KdP4sW6tR5mA0eF1gH2iJ3kL4",
    "refresh_expires_in": 2592000,
}


class TokenView(BaseModel):
    """A login's tokens: send ``access_token`` as ``Authorization: Bearer``; exchange
    ``refresh_token`` (once) for new ones before ``expires_in`` seconds have passed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_TOKENS_EXAMPLE]})

    account_id: str
    token_type: Literal["Bearer"]
    access_token: str
    expires_in: Annotated[int, Field(description="seconds the access token lives")]
    refresh_token: str
    refresh_expires_in: Annotated[int, Field(description="seconds the refresh token lives at most")]


class CodeSentView(BaseModel):
    """A code is on its way (the same answer for every phone)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"expires_in": 300, "resend_after": 60}]},
    )

    expires_in: Annotated[int, Field(description="seconds the code is valid")]
    resend_after: Annotated[int, Field(description="seconds before another code may be sent")]


class StaffTokenView(BaseModel):
    """A staff sign-in's operator token: send it as ``Authorization: Bearer`` until
    ``expires_in`` seconds have passed, then sign in again (no refresh token).
    ``hospitals`` are those a hospital operator acts for (absent: the platform's)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "li-ops",
                    "token_type": "Bearer",
                    "access_token": _TOKENS_EXAMPLE["access_token"],
                    "expires_in": 28800,
                    "hospitals": ["pumch"],
                }
            ]
        },
    )

    account_id: str
    token_type: Literal["Bearer"]
    access_token: str
    expires_in: Annotated[int, Field(description="seconds the access token lives")]
    hospitals: list[str] | None = None


def _tokens(tokens: Tokens) -> web.Response:
    return json_response(
        {
            "account_id": tokens.account_id,
            "token_type": "Bearer",
            "access_token": tokens.access_token,
            "expires_in": tokens.expires_in_s,
            "refresh_token": tokens.refresh_token,
            "refresh_expires_in": tokens.refresh_expires_in_s,
        },
        # Tokens are never kept by a cache on the way.
        headers={"Cache-Control": "no-store"},
    )


@routes.post(
    "/v1/auth/wechat",
    operation_id="login_wechat",
    summary="Log in with a wx.login code (code2session); the account is made on first login",
    response=TokenView,
    body=WeChatLogin,
    errors=(401, 409, 422, 429, 503),
)
async def login_wechat(request: web.Request) -> web.Response:
    """Exchange a ``wx.login`` code for the service's tokens."""
    body = await read_json(request, WeChatLogin)
    return _tokens(await request.app[LOGIN].wechat(body.code, client_ip(request)))


@routes.post(
    "/v1/auth/sms/code",
    operation_id="send_sms_code",
    summary="Send a six-digit login code to a phone (the same answer for every phone)",
    ok_status=202,
    response=CodeSentView,
    body=SmsCodeRequest,
    errors=(409, 422, 429, 503),
)
async def send_sms_code(request: web.Request) -> web.Response:
    """Send a login code by SMS."""
    body = await read_json(request, SmsCodeRequest)
    sent: CodeSent = await request.app[LOGIN].send_code(body.phone, client_ip(request))
    return json_response(
        {"expires_in": sent.expires_in_s, "resend_after": sent.resend_after_s}, status=202
    )


@routes.post(
    "/v1/auth/sms/verify",
    operation_id="login_sms",
    summary="Log in with a phone and the code sent to it; the account is made on first login",
    response=TokenView,
    body=SmsVerify,
    errors=(401, 409, 422, 429, 503),
)
async def login_sms(request: web.Request) -> web.Response:
    """Exchange a phone's code for the service's tokens (the code serves once)."""
    body = await read_json(request, SmsVerify)
    return _tokens(await request.app[LOGIN].verify_code(body.phone, body.code, client_ip(request)))


@routes.post(
    "/v1/auth/refresh",
    operation_id="refresh_login",
    summary="Exchange a refresh token (once) for new tokens; a reused one ends the session",
    response=TokenView,
    body=RefreshTokenBody,
    errors=(401, 422, 503),
)
async def refresh_login(request: web.Request) -> web.Response:
    """Rotate a login's tokens."""
    body = await read_json(request, RefreshTokenBody)
    return _tokens(await request.app[LOGIN].refresh(body.refresh_token))


@routes.post(
    "/v1/auth/logout",
    operation_id="logout",
    summary="End a login: its refresh tokens stop working (access tokens run out)",
    ok_status=204,
    response={"type": "object"},
    body=RefreshTokenBody,
    errors=(401, 422, 503),
)
async def logout(request: web.Request) -> web.Response:
    """Revoke the session of a refresh token."""
    body = await read_json(request, RefreshTokenBody)
    await request.app[LOGIN].logout(body.refresh_token)
    return web.Response(status=204)


@routes.post(
    "/v1/auth/staff/login",
    operation_id="login_staff",
    summary="Staff sign-in: a username and password for an operator token (the console's)",
    response=StaffTokenView,
    body=StaffLoginBody,
    errors=(401, 403, 422, 429, 503),
)
async def login_staff(request: web.Request) -> web.Response:
    """Exchange a staff account's username and password for an operator token."""
    body = await read_json(request, StaffLoginBody)
    signed = await request.app[STAFF_LOGIN].sign_in(
        body.username, body.password, client_ip(request)
    )
    answer: dict[str, JsonValue] = {
        "account_id": signed.account_id,
        "token_type": "Bearer",
        "access_token": signed.access_token,
        "expires_in": signed.expires_in_s,
    }
    if signed.hospitals is not None:
        answer["hospitals"] = list(signed.hospitals)
    return json_response(answer, headers={"Cache-Control": "no-store"})


async def login_context(app: web.Application) -> AsyncIterator[None]:
    """Open the login service with the app (after the core services)."""
    services = app[SERVICES]
    settings = services.settings
    login = settings.login
    async with aiohttp.ClientSession() as http:
        wechat = (
            Code2Session(
                http,
                base_url=login.wechat_login_url,
                appid=login.wechat_appid,
                secret=login.wechat_app_secret,
                timeout_s=login.provider_timeout_s,
            )
            if login.wechat_enabled
            else None
        )
        sms = (
            HttpSmsSender(
                http,
                base_url=login.sms_url,
                api_key=login.sms_api_key,
                timeout_s=login.provider_timeout_s,
            )
            if login.sms_enabled
            else None
        )
        accounts = AccountRecord(services.db, settings.keyring(), settings.blind_index())
        signer = Signer(
            keys=settings.jwt_keys,
            kid=settings.signing_key_id,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        app[LOGIN] = Login(login, signer, services.store, accounts, wechat=wechat, sms=sms)
        app[STAFF_LOGIN] = StaffLogin(login, signer, services.store, StaffRecord(services.db))
        yield
