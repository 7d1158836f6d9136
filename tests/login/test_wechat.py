"""WeChat mini-program login through the platform simulator, and the sessions it starts:
the account is found by openid (and unionid), the access token works on the account's
routes, refresh tokens rotate, a reused one ends the session, logout ends it, and every
bad input is a problem+json with a stable code (never a 500)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest

from inventory.devtools.servers import free_port
from tests.api.conftest import ApiServer, running_api, verified_database
from tests.databases import Databases

from .conftest import SimServer, address, call, login_env, sim_login

PROBLEM = "application/problem+json"


async def wechat_login(
    http: aiohttp.ClientSession, api: ApiServer, code: str, **headers: str
) -> tuple[int, Any, Any]:
    return await call(
        http, "POST", api.url + "/v1/auth/wechat", json={"code": code}, headers=address() | headers
    )


def assert_problem(status: int, body: Any, headers: Any, expected: int, code: str) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith(PROBLEM), headers
    assert body["code"] == code, body


async def test_first_login_makes_the_account_and_the_token_works(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession, login_db: asyncpg.Pool
) -> None:
    """A wx.login code logs in: an account keyed by the openid, a bearer token that the
    account routes accept, no session_key in the answer; the same user again is the
    same account."""
    device = await sim_login(http, wx_sim)
    status, body, headers = await wechat_login(http, login_api, device["code"])
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert set(body) == {
        "account_id",
        "token_type",
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == body["account_id"]
    assert claims["amr"] == ["wechat"]
    assert "roles" not in claims
    row = await login_db.fetchrow("SELECT * FROM accounts WHERE id = $1", body["account_id"])
    assert row["wechat_openid"] == device["openid"]
    assert row["wechat_unionid"] is None
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    status, patients, _ = await call(http, "GET", login_api.url + "/v1/patients", headers=bearer)
    assert (status, patients) == (200, {"items": []})
    again = await sim_login(http, wx_sim, openid=device["openid"])
    status, second, _ = await wechat_login(http, login_api, again["code"])
    assert status == 200
    assert second["account_id"] == body["account_id"]
    assert second["refresh_token"] != body["refresh_token"]


async def test_unionid_finds_the_account_across_openids(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession, login_db: asyncpg.Pool
) -> None:
    """With a unionid, the account is the unionid's, whichever openid logs in."""
    unionid = "u" + secrets.token_hex(12)
    first = await sim_login(http, wx_sim, unionid=unionid)
    status, body, _ = await wechat_login(http, login_api, first["code"])
    assert status == 200, body
    row = await login_db.fetchrow("SELECT * FROM accounts WHERE id = $1", body["account_id"])
    assert row["wechat_unionid"] == unionid
    other_app = await sim_login(http, wx_sim, unionid=unionid)
    status, second, _ = await wechat_login(http, login_api, other_app["code"])
    assert status == 200
    assert second["account_id"] == body["account_id"]


async def test_invalid_and_used_codes_are_401(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """An unknown code (40029) and a code exchanged once already (40163) are
    wechat_code_invalid, in Chinese by default and English on request."""
    status, body, headers = await wechat_login(http, login_api, "no-such-code")
    assert_problem(status, body, headers, 401, "wechat_code_invalid")
    assert body["title"] == "微信登录凭证无效或已使用，请重新登录"
    device = await sim_login(http, wx_sim)
    status, _, _ = await wechat_login(http, login_api, device["code"])
    assert status == 200
    status, body, headers = await wechat_login(
        http, login_api, device["code"], **{"Accept-Language": "en"}
    )
    assert_problem(status, body, headers, 401, "wechat_code_invalid")
    assert body["title"].startswith("The WeChat login code is invalid")


@pytest.mark.parametrize(
    ("fault", "status", "code", "retry_after"),
    [
        ("rate_limit", 429, "wechat_rate_limited", "60"),
        ("busy", 503, "wechat_unavailable", "5"),
        ("http_500", 503, "wechat_unavailable", "5"),
        ("garbage", 503, "wechat_unavailable", "5"),
    ],
)
async def test_platform_failures_are_problems_with_retry_after(
    login_api: ApiServer,
    wx_sim: SimServer,
    http: aiohttp.ClientSession,
    fault: str,
    status: int,
    code: str,
    retry_after: str,
) -> None:
    """45011 is 429 wechat_rate_limited, a busy, failing or unreadable platform 503
    wechat_unavailable, each with Retry-After."""
    device = await sim_login(http, wx_sim)
    set_fault, _, _ = await call(
        http, "PUT", wx_sim.url + "/sim/faults", json={"code2session": fault}
    )
    assert set_fault == 200
    try:
        answer = await wechat_login(http, login_api, device["code"])
    finally:
        await call(http, "PUT", wx_sim.url + "/sim/faults", json={"code2session": "ok"})
    assert_problem(*answer, status, code)
    assert answer[2]["Retry-After"] == retry_after
    # The code was not spent: once the platform answers again it logs in.
    status_after, _, _ = await wechat_login(http, login_api, device["code"])
    assert status_after == 200


@pytest.fixture(scope="module")
def unreachable_api(
    redis_server: Any,
    databases: Databases,
    sms_sim: SimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """An API whose WeChat platform is a port where nothing listens."""
    database_url = verified_database(redis_server.url, databases)
    env = login_env(
        redis_server.url,
        database_url,
        free_port(),
        wechat_url=f"http://127.0.0.1:{free_port()}",
        sms_url=sms_sim.url,
    )
    with running_api(env, tmp_path_factory.mktemp("login-down") / "api.log") as server:
        yield server


async def test_platform_down_is_503_with_retry_after(
    unreachable_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """The platform out of reach: 503 wechat_unavailable with Retry-After."""
    answer = await wechat_login(http, unreachable_api, "any-code")
    assert_problem(*answer, 503, "wechat_unavailable")
    assert answer[2]["Retry-After"] == "5"


async def test_bad_bodies_are_422_or_400(login_api: ApiServer, http: aiohttp.ClientSession) -> None:
    """A code that cannot be one, unknown fields and a body that is not JSON are refused
    before anything is asked of the platform."""
    for body in ({"code": ""}, {"code": "a b"}, {"code": "x" * 129}, {"code": "ok", "openid": "o"}):
        answer = await call(
            http, "POST", login_api.url + "/v1/auth/wechat", json=body, headers=address()
        )
        assert_problem(*answer, 422, "validation_failed")
    async with http.post(
        login_api.url + "/v1/auth/wechat",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as answer:
        assert answer.status == 400


async def login(http: aiohttp.ClientSession, api: ApiServer, wx: SimServer) -> dict[str, Any]:
    device = await sim_login(http, wx)
    status, body, _ = await wechat_login(http, api, device["code"])
    assert status == 200, body
    return dict(body)


async def refresh(http: aiohttp.ClientSession, api: ApiServer, token: str) -> tuple[int, Any, Any]:
    return await call(http, "POST", api.url + "/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_each_token_serves_once(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """A refresh answers new tokens of the same account and session; the new refresh
    token refreshes again."""
    first = await login(http, login_api, wx_sim)
    status, second, _ = await refresh(http, login_api, first["refresh_token"])
    assert status == 200, second
    assert second["account_id"] == first["account_id"]
    assert second["refresh_token"] != first["refresh_token"]
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    assert jwt.decode(second["access_token"], options={"verify_signature": False})["sid"] == sid
    status, third, _ = await refresh(http, login_api, second["refresh_token"])
    assert status == 200, third


async def test_reused_refresh_token_revokes_the_session(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession, login_db: asyncpg.Pool
) -> None:
    """A refresh token exchanged once and presented again is refresh_token_reused, and
    the token it was exchanged for stops working too (the whole family is revoked)."""
    first = await login(http, login_api, wx_sim)
    status, second, _ = await refresh(http, login_api, first["refresh_token"])
    assert status == 200
    answer = await refresh(http, login_api, first["refresh_token"])
    assert_problem(*answer, 401, "refresh_token_reused")
    answer = await refresh(http, login_api, second["refresh_token"])
    assert_problem(*answer, 401, "refresh_token_invalid")
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    row = await login_db.fetchrow("SELECT revoked_reason FROM login_sessions WHERE id = $1", sid)
    assert row["revoked_reason"] == "reuse"


async def test_logout_ends_the_session(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Logout answers 204; the session's refresh token is refused after it, and a
    second logout with it is still 204 (nothing left to end)."""
    tokens = await login(http, login_api, wx_sim)
    body = {"refresh_token": tokens["refresh_token"]}
    status, _, _ = await call(http, "POST", login_api.url + "/v1/auth/logout", json=body)
    assert status == 204
    answer = await refresh(http, login_api, tokens["refresh_token"])
    assert_problem(*answer, 401, "refresh_token_invalid")
    status, _, _ = await call(http, "POST", login_api.url + "/v1/auth/logout", json=body)
    assert status == 204


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "A" * 43,
        "q3Xh0b7lJ9c1vYz2n8KdP4sW6tR5mA0eF1gH2iJ3kL4",
        "not a token at all, with spaces",
        "é" * 43,
    ],
)
async def test_forged_refresh_tokens_are_401(
    login_api: ApiServer, http: aiohttp.ClientSession, token: str
) -> None:
    """A refresh token the service never issued is refresh_token_invalid, for refresh
    and for logout alike."""
    for path in ("/v1/auth/refresh", "/v1/auth/logout"):
        answer = await call(http, "POST", login_api.url + path, json={"refresh_token": token})
        assert_problem(*answer, 401, "refresh_token_invalid")


async def test_forged_access_tokens_are_401(
    login_api: ApiServer, wx_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """An access token re-signed with a key the service does not hold, or with its
    account changed, is refused on the account routes."""
    tokens = await login(http, login_api, wx_sim)
    head, payload, _ = tokens["access_token"].split(".")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged = [
        jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256", headers={"kid": "k2"}),
        jwt.encode(
            claims | {"sub": "someone-else"},
            secrets.token_bytes(32),
            algorithm="HS256",
            headers={"kid": "k2"},
        ),
        f"{head}.{payload}.",
    ]
    for token in forged:
        answer = await call(
            http,
            "GET",
            login_api.url + "/v1/patients",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert_problem(*answer, 401, "unauthenticated")
