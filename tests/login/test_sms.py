"""SMS-code login through the SMS gateway simulator: a code is sent the same way to every
phone, is kept only as its HMAC, serves once, lives five minutes, locks the phone after
too many wrong tries (in parallel too), and sends are rate limited per phone and per
address; every refusal is a problem+json with a stable code, and no phone, code or
token reaches the API's log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from inventory.store import keys
from tests.api.conftest import ApiServer

from .conftest import (
    CODE_KEY,
    MAX_FAILURES,
    PER_ADDRESS,
    PER_PHONE,
    SimServer,
    address,
    call,
    new_phone,
    sent_codes,
)

PROBLEM = "application/problem+json"


def assert_problem(answer: tuple[int, Any, Any], expected: int, code: str) -> None:
    status, body, headers = answer
    assert status == expected, body
    assert headers["Content-Type"].startswith(PROBLEM), headers
    assert body["code"] == code, body


async def send_code(
    http: aiohttp.ClientSession, api: ApiServer, phone: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    return await call(
        http,
        "POST",
        api.url + "/v1/auth/sms/code",
        json={"phone": phone},
        headers=headers or address(),
    )


async def verify(
    http: aiohttp.ClientSession,
    api: ApiServer,
    phone: str,
    code: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    return await call(
        http,
        "POST",
        api.url + "/v1/auth/sms/verify",
        json={"phone": phone, "code": code},
        headers=headers or address(),
    )


async def code_for(http: aiohttp.ClientSession, api: ApiServer, sms: SimServer, phone: str) -> str:
    """Send a code to ``phone``; the code the phone received."""
    status, body, _ = await send_code(http, api, phone)
    assert status == 202, body
    return (await sent_codes(http, sms, phone))[-1]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def code_keys(phone: str) -> tuple[str, str]:
    """The Redis keys of a phone's code and wrong tries (the phone's HMAC names them)."""
    import base64

    key = base64.b64decode(CODE_KEY)
    mac = hmac.new(key, b"phone:" + phone.encode(), hashlib.sha256).hexdigest()
    return keys.login_code_keys(mac)


async def test_code_logs_in_and_makes_the_account_once(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession, login_db: asyncpg.Pool
) -> None:
    """A code sent to a phone logs in; the account keeps the phone encrypted only (found
    by its blind index); the same phone, written another way, logs into the same account."""
    phone = new_phone()
    status, body, _ = await send_code(http, login_api, phone)
    assert (status, body) == (202, {"expires_in": 300, "resend_after": 0})
    code = (await sent_codes(http, sms_sim, phone))[-1]
    assert len(code) == 6
    assert code.isdigit()
    status, tokens, headers = await verify(http, login_api, phone, code)
    assert status == 200, tokens
    assert headers["Cache-Control"] == "no-store"
    row = await login_db.fetchrow("SELECT * FROM accounts WHERE id = $1", tokens["account_id"])
    assert row["phone_enc"] is not None
    assert len(row["phone_index"]) == 32
    assert phone.encode() not in bytes(row["phone_enc"])
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    status, _, _ = await call(http, "GET", login_api.url + "/v1/patients", headers=bearer)
    assert status == 200
    second_code = await code_for(http, login_api, sms_sim, phone)
    status, second, _ = await verify(http, login_api, "+86 " + phone, second_code)
    assert status == 200
    assert second["account_id"] == tokens["account_id"]
    refreshed = await call(
        http,
        "POST",
        login_api.url + "/v1/auth/refresh",
        json={"refresh_token": second["refresh_token"]},
    )
    assert refreshed[0] == 200
    assert refreshed[1]["account_id"] == tokens["account_id"]


async def test_code_is_kept_only_as_its_hmac(
    login_api: ApiServer,
    sms_sim: SimServer,
    http: aiohttp.ClientSession,
    redis_client: aioredis.Redis,
) -> None:
    """Redis holds the code's HMAC under the phone's HMAC: neither the code nor the
    phone is written anywhere in it."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    code_key, _ = code_keys(phone)
    record = await redis_client.hgetall(code_key)
    assert set(record) == {"mac", "id", "expires_ms"}
    assert code not in str(record)
    assert phone not in code_key
    async for name in redis_client.scan_iter(match="inv:login:*", count=1000):
        assert phone not in name


async def test_replayed_code_is_refused(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """A code serves once: the same code again is sms_code_invalid."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    assert (await verify(http, login_api, phone, code))[0] == 200
    assert_problem(await verify(http, login_api, phone, code), 401, "sms_code_invalid")


async def test_parallel_tries_with_the_right_code_log_in_once(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Two tries with the same right code at once: one logs in, the other is refused."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    answers = await asyncio.gather(*(verify(http, login_api, phone, code) for _ in range(2)))
    assert sorted(a[0] for a in answers) == [200, 401]


async def test_a_new_code_replaces_the_old_one(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Only the last code sent to a phone logs in."""
    phone = new_phone()
    old = await code_for(http, login_api, sms_sim, phone)
    new = await code_for(http, login_api, sms_sim, phone)
    if old != new:
        assert_problem(await verify(http, login_api, phone, old), 401, "sms_code_invalid")
    assert (await verify(http, login_api, phone, new))[0] == 200


async def test_expired_code_is_refused(
    login_api: ApiServer,
    sms_sim: SimServer,
    http: aiohttp.ClientSession,
    redis_client: aioredis.Redis,
) -> None:
    """A code past its life (aged in Redis, as five minutes would) is sms_code_expired,
    in English on request; a code never sent is sms_code_invalid."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    code_key, _ = code_keys(phone)
    await redis_client.hset(code_key, "expires_ms", 1)
    answer = await verify(http, login_api, phone, code, address() | {"Accept-Language": "en"})
    assert_problem(answer, 401, "sms_code_expired")
    assert answer[1]["title"] == "The SMS code has expired; ask for a new one"
    assert_problem(await verify(http, login_api, new_phone(), "123456"), 401, "sms_code_invalid")


async def test_wrong_codes_lock_the_phone(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """N wrong codes lock the phone: the N-th answers sms_code_locked with Retry-After,
    and then even the right code and a new code are refused while it lasts."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    for _ in range(MAX_FAILURES - 1):
        assert_problem(await verify(http, login_api, phone, wrong(code)), 401, "sms_code_invalid")
    answer = await verify(http, login_api, phone, wrong(code))
    assert_problem(answer, 429, "sms_code_locked")
    assert int(answer[2]["Retry-After"]) > 800
    assert answer[1]["title"] == "该手机号验证码错误次数过多，请稍后再试"
    assert_problem(await verify(http, login_api, phone, code), 429, "sms_code_locked")
    assert_problem(await send_code(http, login_api, phone), 429, "sms_code_locked")


async def test_a_right_code_clears_the_wrong_tries(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Wrong tries short of the lock are forgotten once the right code logs in."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    for _ in range(MAX_FAILURES - 1):
        assert_problem(await verify(http, login_api, phone, wrong(code)), 401, "sms_code_invalid")
    assert (await verify(http, login_api, phone, code))[0] == 200
    code = await code_for(http, login_api, sms_sim, phone)
    for _ in range(MAX_FAILURES - 1):
        assert_problem(await verify(http, login_api, phone, wrong(code)), 401, "sms_code_invalid")
    assert (await verify(http, login_api, phone, code))[0] == 200


async def test_parallel_guesses_get_no_more_tries(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Many wrong guesses at once are compared at most N times: the rest are locked out,
    and the right code after them too."""
    phone = new_phone()
    code = await code_for(http, login_api, sms_sim, phone)
    guesses = [f"{n:06d}" for n in range(20) if f"{n:06d}" != code][:15]
    answers = await asyncio.gather(*(verify(http, login_api, phone, g) for g in guesses))
    codes = [a[1]["code"] for a in answers]
    assert codes.count("sms_code_invalid") == MAX_FAILURES - 1
    assert codes.count("sms_code_locked") == len(guesses) - (MAX_FAILURES - 1)
    assert_problem(await verify(http, login_api, phone, code), 429, "sms_code_locked")


async def test_no_account_enumeration(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Sending a code to a phone with an account and to one without answers exactly the
    same (status, headers that matter, body)."""
    known = new_phone()
    code = await code_for(http, login_api, sms_sim, known)
    assert (await verify(http, login_api, known, code))[0] == 200
    answers = [await send_code(http, login_api, phone) for phone in (known, new_phone())]
    assert answers[0][0] == answers[1][0] == 202
    assert answers[0][1] == answers[1][1]
    assert answers[0][2]["Content-Type"] == answers[1][2]["Content-Type"]


async def test_sends_are_limited_per_phone(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """Past the per-phone limit a send is 429 rate_limited with Retry-After, from any
    address, and nothing more is sent to that phone."""
    phone = new_phone()
    for _ in range(PER_PHONE):
        assert (await send_code(http, login_api, phone))[0] == 202
    answer = await send_code(http, login_api, phone)
    assert_problem(answer, 429, "rate_limited")
    assert int(answer[2]["Retry-After"]) >= 1
    assert len(await sent_codes(http, sms_sim, phone)) == PER_PHONE


async def test_sends_are_limited_per_address(
    login_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Past the per-address limit a send is 429 rate_limited, whatever the phone."""
    headers = address()
    for _ in range(PER_ADDRESS):
        assert (await send_code(http, login_api, new_phone(), headers))[0] == 202
    assert_problem(await send_code(http, login_api, new_phone(), headers), 429, "rate_limited")


async def test_bad_input_is_422(login_api: ApiServer, http: aiohttp.ClientSession) -> None:
    """Phones that are not mainland mobiles and codes that are not six digits are
    validation_failed, before anything is sent or counted."""
    for phone in ("12345678901", "1391234567", "139123456789", "+1 4155552671", "１３９"):
        assert_problem(await send_code(http, login_api, phone), 422, "validation_failed")
    for code in ("12345", "1234567", "12345a", "١٢٣٤٥٦"):
        assert_problem(await verify(http, login_api, new_phone(), code), 422, "validation_failed")


async def test_provider_failure_is_503(
    login_api: ApiServer, sms_sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """An SMS gateway that fails is 503 sms_unavailable with Retry-After."""
    status, _, _ = await call(http, "PUT", sms_sim.url + "/sim/faults", json={"mode": "down"})
    assert status == 200
    try:
        answer = await send_code(http, login_api, new_phone())
    finally:
        await call(http, "PUT", sms_sim.url + "/sim/faults", json={"mode": "ok"})
    assert_problem(answer, 503, "sms_unavailable")
    assert answer[2]["Retry-After"] == "5"
