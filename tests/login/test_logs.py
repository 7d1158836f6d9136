"""Nothing secret of a login reaches the API's log: no phone, no SMS code, no access or
refresh token, no WeChat code, session_key or AppSecret, on success or failure."""

from __future__ import annotations

import asyncio

import aiohttp

from inventory.privacy.identity import find_pii
from tests.api.conftest import ApiServer

from .conftest import SECRET, SimServer, address, call, new_phone, sent_codes, sim_login


async def test_login_secrets_never_reach_the_log(
    login_api: ApiServer, wx_sim: SimServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Both logins, a refresh, a logout and failures of each; then the log is read."""
    secrets: list[str] = [SECRET]
    device = await sim_login(http, wx_sim)
    secrets.append(device["code"])
    status, tokens, _ = await call(
        http, "POST", login_api.url + "/v1/auth/wechat", json=device, headers=address()
    )
    # The simulator's {code, openid} is not a login body: refused, logged as such.
    assert status == 422
    status, tokens, _ = await call(
        http,
        "POST",
        login_api.url + "/v1/auth/wechat",
        json={"code": device["code"]},
        headers=address(),
    )
    assert status == 200
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    await call(http, "PUT", wx_sim.url + "/sim/faults", json={"code2session": "busy"})
    try:
        other = await sim_login(http, wx_sim)
        secrets.append(other["code"])
        status, _, _ = await call(
            http, "POST", login_api.url + "/v1/auth/wechat", json={"code": other["code"]}
        )
        assert status == 503
    finally:
        await call(http, "PUT", wx_sim.url + "/sim/faults", json={"code2session": "ok"})

    phone = new_phone()
    body = {"phone": phone}
    assert (await call(http, "POST", login_api.url + "/v1/auth/sms/code", json=body))[0] == 202
    code = (await sent_codes(http, sms_sim, phone))[-1]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    secrets.append(code)
    for attempt in (wrong, code, code):
        await call(
            http,
            "POST",
            login_api.url + "/v1/auth/sms/verify",
            json={"phone": phone, "code": attempt},
        )
    status, refreshed, _ = await call(
        http,
        "POST",
        login_api.url + "/v1/auth/refresh",
        json={"refresh_token": tokens["refresh_token"]},
    )
    assert status == 200
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    await call(
        http,
        "POST",
        login_api.url + "/v1/auth/refresh",
        json={"refresh_token": tokens["refresh_token"]},
    )
    await call(
        http,
        "POST",
        login_api.url + "/v1/auth/logout",
        json={"refresh_token": refreshed["refresh_token"]},
    )
    await call(http, "POST", login_api.url + "/v1/auth/sms/code", json={"phone": phone + "9"})
    # A request id that marks the end of this test's requests in the log.
    done = "login-log-check-done"
    await call(http, "GET", login_api.url + "/v1/hospitals", headers={"X-Request-Id": done})
    text = ""
    for _ in range(100):
        text = login_api.log_path.read_text(encoding="utf-8", errors="replace")
        if done in text:
            break
        await asyncio.sleep(0.1)
    assert done in text
    assert "/v1/auth/sms/verify" in text  # the requests were logged
    assert not list(find_pii(text)), "a phone or ID number in the log"
    assert phone not in text
    leaked = [s[:12] for s in secrets if s in text]
    assert not leaked, f"login secrets in the log: {leaked}"
    assert "session_key" not in text
