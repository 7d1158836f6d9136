"""Login, as the API's routes ask for it: WeChat login, SMS codes sent and verified,
refresh and logout. Each login finds or makes the account, starts a session and hands
out an access token and a refresh token.

No answer tells whether a phone has an account: a code is sent (and answered) the same
way for every valid phone, and a right code logs in, making the account when there is
none. Sends are limited per phone and per client address, logins per client address
(GCRA buckets in Redis, shared by every API process).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from inventory.errors import ValidationFailedError
from inventory.login.codes import SmsCodes
from inventory.login.errors import (
    LoginMethodDisabledError,
    RefreshTokenExpiredError,
    RefreshTokenInvalidError,
    RefreshTokenReusedError,
)
from inventory.login.settings import LoginSettings, Rate
from inventory.login.sms import SmsMessage, SmsSender, login_code_text
from inventory.login.tokens import (
    Signer,
    mint_access_token,
    new_refresh_token,
    refresh_token_hash,
)
from inventory.login.wechat import Code2Session
from inventory.privacy.identity import IdentityError, canonical_mobile
from inventory.record.accounts import AccountRecord, Method
from inventory.store import keys
from inventory.store.slot_store import RateBuckets, SlotStore


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a login or a refresh answers."""

    account_id: str
    access_token: str
    expires_in_s: int
    refresh_token: str
    refresh_expires_in_s: int


@dataclass(frozen=True, slots=True)
class CodeSent:
    """What sending a code answers (the same for every phone)."""

    expires_in_s: int
    resend_after_s: int


def _buckets(*limits: tuple[str, str, Rate]) -> RateBuckets | None:
    """GCRA buckets for (kind, subject, rate) triples, the limits turned off left out."""
    on = [(kind, subject, rate) for kind, subject, rate in limits if rate.enabled]
    if not on:
        return None
    return RateBuckets(
        tuple(keys.rate_limit_key(kind, subject) for kind, subject, _ in on),
        tuple(value for *_, r in on for value in (r.per_s * 1000 / r.count, r.count)),
    )


def canonical_phone(raw: str) -> str:
    """The canonical mobile number, or :class:`ValidationFailedError` naming ``phone``."""
    try:
        return canonical_mobile(raw, field="phone")
    except IdentityError as error:
        raise ValidationFailedError(
            errors=[{"field": error.field, "reason": error.message, "code": error.code}]
        ) from None


class Login:
    """Patients' login: both methods, refresh and logout."""

    def __init__(
        self,
        settings: LoginSettings,
        signer: Signer,
        store: SlotStore,
        accounts: AccountRecord,
        *,
        wechat: Code2Session | None,
        sms: SmsSender | None,
    ) -> None:
        self._signer = signer
        self._login = settings
        self._store = store
        self._accounts = accounts
        self._wechat = wechat
        self._sms = sms
        self._codes = (
            SmsCodes(store, settings.sms_code_key, settings.code_policy())
            if sms is not None
            else None
        )

    async def _limit(self, buckets: RateBuckets | None) -> None:
        if buckets is not None:
            await self._store.take_rate_limits(buckets)

    async def _tokens(self, account_id: str, method: Method) -> Tokens:
        refresh, digest = new_refresh_token()
        session_id = await self._accounts.start_session(
            account_id,
            method,
            digest,
            refresh_ttl_s=self._login.refresh_token_ttl_s,
            session_max_s=self._login.session_max_s,
        )
        return self._answer(account_id, session_id, method, refresh)

    def _answer(self, account_id: str, session_id: str, method: str, refresh: str) -> Tokens:
        ttl_s = self._login.access_token_ttl_s
        return Tokens(
            account_id=account_id,
            access_token=mint_access_token(
                self._signer, account_id, session_id=session_id, method=method, ttl_s=ttl_s
            ),
            expires_in_s=ttl_s,
            refresh_token=refresh,
            refresh_expires_in_s=self._login.refresh_token_ttl_s,
        )

    async def wechat(self, code: str, client_ip: str) -> Tokens:
        """Log in with a ``wx.login`` code."""
        if self._wechat is None:
            raise LoginMethodDisabledError()
        await self._limit(_buckets(("loginip", client_ip, self._login.login_rate_per_ip)))
        identity = await self._wechat.exchange(code)
        account_id = await self._accounts.wechat_account(identity.openid, identity.unionid)
        return await self._tokens(account_id, "wechat")

    async def send_code(self, raw_phone: str, client_ip: str) -> CodeSent:
        """Send a login code to a phone (the same answer whether it has an account)."""
        if self._codes is None or self._sms is None:
            raise LoginMethodDisabledError()
        phone = canonical_phone(raw_phone)
        phone_mac = self._codes.phone_mac(phone)
        login = self._login
        # One bucket of one code per resend interval (0: none), the hourly one per phone,
        # and the address's: all or nothing, so a refused send counts in none of them.
        resend = Rate(1, login.sms_resend_s) if login.sms_resend_s > 0 else Rate(0, 1)
        await self._limit(
            _buckets(
                ("smsresend", phone_mac, resend),
                ("smsphone", phone_mac, login.sms_rate_per_phone),
                ("smsip", client_ip, login.sms_rate_per_ip),
            )
        )
        code = await self._codes.issue(phone)
        minutes = max(1, round(login.sms_code_ttl_s / 60))
        await self._sms.send(
            SmsMessage(
                phone=phone,
                text=login_code_text(code, minutes),
                sign=login.sms_sign,
                request_id=secrets.token_hex(16),
            )
        )
        return CodeSent(expires_in_s=login.sms_code_ttl_s, resend_after_s=login.sms_resend_s)

    async def verify_code(self, raw_phone: str, code: str, client_ip: str) -> Tokens:
        """Log in with a phone and the code sent to it."""
        if self._codes is None:
            raise LoginMethodDisabledError()
        phone = canonical_phone(raw_phone)
        await self._limit(_buckets(("loginip", client_ip, self._login.login_rate_per_ip)))
        await self._codes.check(phone, code)
        account_id = await self._accounts.phone_account(phone)
        return await self._tokens(account_id, "sms")

    async def refresh(self, token: str) -> Tokens:
        """Exchange a refresh token for new tokens of the same session."""
        digest = refresh_token_hash(token)
        if digest is None:
            raise RefreshTokenInvalidError()
        refresh, next_digest = new_refresh_token()
        rotation = await self._accounts.rotate(
            digest, next_digest, refresh_ttl_s=self._login.refresh_token_ttl_s
        )
        if rotation.outcome == "reused":
            raise RefreshTokenReusedError()
        if rotation.outcome == "expired":
            raise RefreshTokenExpiredError()
        if rotation.outcome != "rotated":
            raise RefreshTokenInvalidError()
        return self._answer(rotation.account_id, rotation.session_id, rotation.method, refresh)

    async def logout(self, token: str) -> None:
        """End the session of a refresh token (every token of it)."""
        digest = refresh_token_hash(token)
        if digest is None or not await self._accounts.revoke(digest):
            raise RefreshTokenInvalidError()
