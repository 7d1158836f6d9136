"""Hospital staff's sign-in to the staff console: a username and a password for an
operator token (docs/auth.md, "Staff sign-in").

The token is the one the console always used (inventory/api/auth.py): the operator role,
``hospitals`` for a hospital operator, ``sub`` the username, with a short life
(``STAFF_TOKEN_TTL_S``, 8 hours). No refresh token: the patients' refresh sessions belong
to their accounts and mint patients' tokens, and a shift's sign-in outlives no shift.

No answer tells whether a username exists: an unknown one is checked against a dummy
hash (the same work, the same time) and answered as a wrong password. Wrong passwords
are counted per account in Postgres; the one that reaches ``STAFF_MAX_FAILURES`` locks
it for ``STAFF_LOCK_S`` (every password is refused meanwhile, unchecked). A disabled
account is refused only after its right password. Sign-ins are limited per client
address (a GCRA bucket in Redis, as the patients' logins). The password is never logged
nor kept; an unknown username is not logged either (it is often a password typed in the
wrong field). A username is read in lower case, as every username is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
import structlog

from inventory.login.errors import (
    StaffAccountDisabledError,
    StaffLoginFailedError,
    StaffLoginLockedError,
)
from inventory.login.passwords import Hashing, needs_rehash
from inventory.login.settings import LoginSettings
from inventory.login.tokens import Signer
from inventory.record.staff import USERNAME_RE, StaffRecord
from inventory.store import keys
from inventory.store.slot_store import RateBuckets, SlotStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StaffToken:
    """What a staff sign-in answers."""

    account_id: str
    access_token: str
    expires_in_s: int
    hospitals: tuple[str, ...] | None


def _retry_after_s(until: datetime | None) -> int:
    if until is None:
        return 1
    return max(1, math.ceil((until - datetime.now(UTC)).total_seconds()))


def mint_operator_token(
    signer: Signer, username: str, hospitals: tuple[str, ...] | None, ttl_s: int
) -> str:
    """An operator token for a signed-in staff member (``amr`` says how it was got)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": username,
        "iss": signer.issuer,
        "aud": signer.audience,
        "iat": now,
        "exp": now + ttl_s,
        "roles": ["operator"],
        "amr": ["pwd"],
    }
    if hospitals is not None:
        claims["hospitals"] = sorted(hospitals)
    return jwt.encode(
        claims, signer.keys[signer.kid], algorithm="HS256", headers={"kid": signer.kid}
    )


class StaffLogin:
    """Staff sign-in: check the password, count and lock, hand out an operator token."""

    def __init__(
        self,
        settings: LoginSettings,
        signer: Signer,
        store: SlotStore,
        staff: StaffRecord,
        hashing: Hashing | None = None,
    ) -> None:
        self._login = settings
        self._signer = signer
        self._store = store
        self._staff = staff
        self._hashing = hashing or Hashing()

    async def sign_in(self, username: str, password: str, client_ip: str) -> StaffToken:
        """An operator token for the right password of an enabled, unlocked account."""
        rate = self._login.staff_rate_per_ip
        if rate.enabled:
            await self._store.take_rate_limits(
                RateBuckets(
                    (keys.rate_limit_key("staffip", client_ip),),
                    (rate.per_s * 1000 / rate.count, rate.count),
                )
            )
        username = username.strip().lower()
        # A name no account can have is looked up nowhere, but costs the same hash.
        account = await self._staff.get(username) if USERNAME_RE.fullmatch(username) else None
        if account is not None and account.locked:
            log.info("staff.login_locked_refused", username=account.username)
            raise StaffLoginLockedError(retry_after_s=_retry_after_s(account.locked_until))
        right = await self._hashing.verify(
            account.password_hash if account is not None else None, password
        )
        if account is None:
            log.info("staff.login_unknown_username")
            raise StaffLoginFailedError()
        if not right:
            failure = await self._staff.failed(
                account.username,
                max_failures=self._login.staff_max_failures,
                lock_s=self._login.staff_lock_s,
            )
            log.info("staff.login_wrong_password", username=account.username, locked=failure.locked)
            if failure.locked:
                # The try that locks says so, as the SMS codes' does.
                raise StaffLoginLockedError(retry_after_s=_retry_after_s(failure.locked_until))
            raise StaffLoginFailedError()
        if account.disabled:
            log.info("staff.login_disabled_refused", username=account.username)
            raise StaffAccountDisabledError()
        new_hash = (
            await self._hashing.hash(password) if needs_rehash(account.password_hash) else None
        )
        await self._staff.signed_in(account.username, new_hash=new_hash)
        log.info("staff.signed_in", username=account.username, platform=account.platform)
        hospitals = None if account.platform else account.hospitals
        ttl_s = self._login.staff_token_ttl_s
        return StaffToken(
            account_id=account.username,
            access_token=mint_operator_token(self._signer, account.username, hospitals, ttl_s),
            expires_in_s=ttl_s,
            hospitals=hospitals,
        )
