"""lua/login_code_issue.lua and lua/login_code_check.lua through SmsCodes, on a logical
clock (standalone and Cluster): every return code, the keys left behind and their TTLs,
single use, expiry, the lock and its end."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from inventory.errors import (
    InvalidArgumentError,
    SmsCodeExpiredError,
    SmsCodeInvalidError,
    SmsCodeLockedError,
)
from inventory.login.codes import KEEP_AFTER_S, SmsCodes
from inventory.login.settings import CodePolicy
from inventory.store import keys

from .conftest import Scenario

POLICY = CodePolicy(ttl_s=300, max_failures=3, lock_s=900)


def phone() -> str:
    return "138" + f"{secrets.randbelow(10**8):08d}"


def codes(scenario: Scenario, policy: CodePolicy = POLICY) -> SmsCodes:
    return SmsCodes(scenario.store, secrets.token_bytes(32), policy)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_code_serves_once_and_leaves_only_its_hmac(scenario: Scenario) -> None:
    """Issue keeps mac, id and expiry (kept past the code's life); a right code is
    consumed and clears the wrong tries; the same code again is sms_code_invalid."""
    sms, number = codes(scenario), phone()
    code = await sms.issue(number)
    code_key, failures_key = keys.login_code_keys(sms.phone_mac(number))
    record = await scenario.client.hgetall(code_key)
    assert set(record) == {"mac", "id", "expires_ms"}
    assert int(record["expires_ms"]) == scenario.clock.now_ms + 300_000
    assert code not in str(record)
    ttl = await scenario.client.pttl(code_key)
    assert (300 + KEEP_AFTER_S - 5) * 1000 < ttl <= (300 + KEEP_AFTER_S) * 1000
    with pytest.raises(SmsCodeInvalidError):
        await sms.check(number, wrong(code))
    assert await scenario.client.get(failures_key) == "1"
    await sms.check(number, code)
    assert await scenario.client.exists(failures_key) == 0
    with pytest.raises(SmsCodeInvalidError):
        await sms.check(number, code)


async def test_expiry_follows_the_clock(scenario: Scenario) -> None:
    """A code is good until its life ends, then sms_code_expired (right or wrong)."""
    sms, number = codes(scenario), phone()
    code = await sms.issue(number)
    scenario.clock.advance(299.9)
    with pytest.raises(SmsCodeInvalidError):
        await sms.check(number, wrong(code))
    scenario.clock.advance(0.1)
    with pytest.raises(SmsCodeExpiredError):
        await sms.check(number, code)


async def test_no_code_is_invalid(scenario: Scenario) -> None:
    """A phone that was sent nothing answers sms_code_invalid and counts the try."""
    sms, number = codes(scenario), phone()
    with pytest.raises(SmsCodeInvalidError):
        await sms.check(number, "000000")
    _, failures_key = keys.login_code_keys(sms.phone_mac(number))
    assert await scenario.client.get(failures_key) == "1"
    assert 899_000 < await scenario.client.pttl(failures_key) <= 900_000


async def test_the_lock_refuses_tries_and_new_codes_until_it_ends(scenario: Scenario) -> None:
    """The try that reaches the limit answers sms_code_locked; then the right code and a
    new code are refused with the time left; once the lock's key expires, a new code
    is sent and works."""
    sms, number = codes(scenario, CodePolicy(ttl_s=300, max_failures=3, lock_s=1)), phone()
    code = await sms.issue(number)
    for _ in range(2):
        with pytest.raises(SmsCodeInvalidError):
            await sms.check(number, wrong(code))
    with pytest.raises(SmsCodeLockedError) as locked:
        await sms.check(number, wrong(code))
    assert locked.value.context["retry_after_s"] == 1
    with pytest.raises(SmsCodeLockedError):
        await sms.check(number, code)
    with pytest.raises(SmsCodeLockedError):
        await sms.issue(number)
    await asyncio.sleep(1.2)
    code = await sms.issue(number)
    await sms.check(number, code)


async def test_the_scripts_refuse_bad_arguments(scenario: Scenario) -> None:
    """Numbers that are not numbers, or out of range, are invalid_argument, and nothing
    is written."""
    code_key, failures_key = keys.login_code_keys("f" * 32)
    bad_issue = [
        [0, "mac", "id", "x", 1000, 2000],
        [0, "mac", "id", 3, 1000, 500],
        [0, "", "id", 3, 1000, 2000],
        [0, "mac", "id", 0, 1000, 2000],
    ]
    for args in bad_issue:
        reply = await scenario.store.call_script("login_code_issue", [code_key, failures_key], args)
        assert int(reply[0]) == InvalidArgumentError.lua_code, args
    for args in ([0, "x", 1000], [0, 3, 0]):
        reply = await scenario.store.call_script("login_code_check", [code_key, failures_key], args)
        assert int(reply[0]) == InvalidArgumentError.lua_code, args
    assert await scenario.client.exists(code_key, failures_key) == 0


async def test_parallel_wrong_tries_are_bounded(scenario: Scenario) -> None:
    """Twenty wrong tries at once: exactly max_failures are compared."""
    sms, number = codes(scenario), phone()
    code = await sms.issue(number)
    guesses = [f"{n:06d}" for n in range(30) if f"{n:06d}" != code][:20]
    results = await asyncio.gather(
        *(sms.check(number, guess) for guess in guesses), return_exceptions=True
    )
    invalid = sum(isinstance(r, SmsCodeInvalidError) for r in results)
    locked = sum(isinstance(r, SmsCodeLockedError) for r in results)
    assert (invalid, locked) == (POLICY.max_failures - 1, len(guesses) - invalid)
