"""SMS login codes in Redis: six digits, kept only as their HMAC under the server's code
key, single use, with a life (5 minutes by default) and a lock after too many wrong tries
(lua/login_code_issue.lua, lua/login_code_check.lua).

The phone never appears in a key name or in Redis at all: keys carry the phone's HMAC
under the same key. Each try is counted by the script *before* it is compared, so
parallel guesses cannot outrun the lock; the comparison is ``hmac.compare_digest``; a
right code is consumed by one ``HSETNX`` (only the first of two racing tries wins).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

from redis.exceptions import RedisClusterException, RedisError

from inventory.errors import (
    LUA_OK,
    SmsCodeInvalidError,
    SmsCodeLockedError,
    refusal_for,
)
from inventory.login.settings import CodePolicy
from inventory.store import keys
from inventory.store.slot_store import SlotStore, store_error

#: Digits of a code.
CODE_DIGITS = 6
#: How long a code's record outlives the code, so a late try reads "expired".
KEEP_AFTER_S = 600


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _retry_after_s(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


class SmsCodes:
    """Issue and check SMS login codes for phones (canonical 11-digit numbers)."""

    def __init__(self, store: SlotStore, key: bytes, policy: CodePolicy) -> None:
        self._store = store
        self._key = key
        self.policy = policy

    def phone_mac(self, phone: str) -> str:
        """The phone's HMAC (hex): what keys and rate-limit buckets name it by."""
        return hmac.new(self._key, b"phone:" + phone.encode(), hashlib.sha256).hexdigest()

    def _code_mac(self, phone: str, code: str) -> str:
        # Bound to the phone: a code's HMAC read from Redis says nothing of other phones.
        message = b"code:" + phone.encode() + b":" + code.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def issue(self, phone: str) -> str:
        """A new code for ``phone``, kept (as its HMAC) in place of any earlier one;
        :class:`SmsCodeLockedError` while the phone is locked."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        reply = await self._store.call_script(
            "login_code_issue",
            list(keys.login_code_keys(self.phone_mac(phone))),
            [
                self._store.script_now(),
                self._code_mac(phone, code),
                secrets.token_hex(8),
                self.policy.max_failures,
                self.policy.ttl_s * 1000,
                (self.policy.ttl_s + KEEP_AFTER_S) * 1000,
            ],
        )
        status = int(reply[0])
        if status == SmsCodeLockedError.lua_code:
            raise SmsCodeLockedError(retry_after_s=_retry_after_s(int(reply[1])))
        if status != LUA_OK:
            raise refusal_for(status)
        return code

    async def check(self, phone: str, code: str) -> None:
        """Consume ``code`` if it is the phone's current one: else
        :class:`SmsCodeInvalidError` (wrong, used, none), ``SmsCodeExpiredError`` or
        :class:`SmsCodeLockedError` (the try that locks answers so too)."""
        code_key, failures_key = keys.login_code_keys(self.phone_mac(phone))
        reply = await self._store.call_script(
            "login_code_check",
            [code_key, failures_key],
            [self._store.script_now(), self.policy.max_failures, self.policy.lock_s * 1000],
        )
        status = int(reply[0])
        if status == SmsCodeLockedError.lua_code:
            raise SmsCodeLockedError(retry_after_s=_retry_after_s(int(reply[1])))
        if status != LUA_OK:
            raise refusal_for(status)
        stored, code_id, tries = _text(reply[1]), _text(reply[2]), int(reply[3])
        if not hmac.compare_digest(stored.encode(), self._code_mac(phone, code).encode()):
            if tries >= self.policy.max_failures:
                raise SmsCodeLockedError(retry_after_s=self.policy.lock_s)
            raise SmsCodeInvalidError()
        client = self._store.client
        try:
            first = await client.hsetnx(code_key, f"used:{code_id}", "1")
            if first:
                await client.delete(failures_key)
        except (RedisError, RedisClusterException, TimeoutError) as error:
            raise store_error(error) from error
        if not first:
            # Another try with the same code won the race: a code serves once.
            raise SmsCodeInvalidError()
