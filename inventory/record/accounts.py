"""Accounts and their login sessions in Postgres (migration 0016_accounts.sql).

An account is found or made by its login: a WeChat openid (and unionid), or a phone,
which is stored encrypted and found by its keyed blind index. A login session is a
family of refresh tokens, each stored as its SHA-256 and exchanged once; a token
exchanged a second time revokes its whole family.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.privacy.crypto import BlindIndex, FieldKeyring
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

TABLE = "accounts"
#: A login method, as sessions record it.
Method = Literal["wechat", "sms"]
#: What became of a refresh token presented for exchange.
RotationOutcome = Literal["rotated", "unknown", "revoked", "expired", "reused"]


def new_account_id() -> str:
    """A fresh account id (an ``inv_id``: 1-64 letters, digits, ``_`` and ``-``)."""
    return "a" + secrets.token_hex(12)


def phone_index(index: BlindIndex, phone: str) -> bytes:
    """The 32 bytes a canonical mobile number is found by; the ``mobile:`` prefix keeps
    its digests apart from every other value under the same index key."""
    return bytes.fromhex(index.digest("mobile:" + phone))


@dataclass(frozen=True, slots=True)
class Rotation:
    """A refresh token's exchange: ``rotated`` (the new token is stored), or why not.
    ``reused`` has revoked the session."""

    outcome: RotationOutcome
    account_id: str = ""
    session_id: str = ""
    method: str = ""


class AccountRecord:
    """Accounts and login sessions, with the phone encrypted at rest."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: FieldKeyring,
        index: BlindIndex,
        *,
        acquire_timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._index = index
        self._timeout = acquire_timeout_s

    async def wechat_account(self, openid: str, unionid: str | None) -> str:
        """The account of a WeChat user, made at its first login: the unionid's account
        when one has it (the same person through another app of ours), else the
        openid's."""
        for _ in range(2):
            async with (
                acquire(self._pool, timeout_s=self._timeout) as connection,
                connection.transaction(),
            ):
                if unionid:
                    row = await connection.fetchrow(
                        QUERIES["get_account_by_wechat_unionid"], unionid
                    )
                    if row is not None:
                        try:
                            async with connection.transaction():
                                await connection.execute(
                                    QUERIES["touch_wechat_account"], row["id"], openid
                                )
                        except asyncpg.UniqueViolationError:
                            # The openid already has an account of its own: keep both.
                            pass
                        return str(row["id"])
                try:
                    async with connection.transaction():
                        row = await connection.fetchrow(
                            QUERIES["upsert_wechat_account"], new_account_id(), openid, unionid
                        )
                except asyncpg.UniqueViolationError:
                    # A first login with the same unionid committed meanwhile: look again.
                    continue
                return str(row["id"])
        raise RuntimeError("the WeChat account could not be found or made")  # pragma: no cover

    async def phone_account(self, phone: str) -> str:
        """The account of a canonical mobile number, made at its first login."""
        account_id = new_account_id()
        encrypted = self._keyring.encrypt(phone, table=TABLE, column="phone", row_id=account_id)
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(
                QUERIES["upsert_phone_account"],
                account_id,
                phone_index(self._index, phone),
                encrypted.key_id,
                encrypted.blob,
            )
        return str(row["id"])

    async def start_session(
        self,
        account_id: str,
        method: Method,
        token_hash: bytes,
        *,
        refresh_ttl_s: int,
        session_max_s: int,
    ) -> str:
        """A new login session with its first refresh token; the session's id."""
        session_id = "s" + secrets.token_hex(12)
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            await connection.execute(
                QUERIES["insert_login_session"],
                session_id,
                account_id,
                method,
                float(session_max_s),
            )
            await connection.execute(
                QUERIES["insert_refresh_token"], token_hash, session_id, float(refresh_ttl_s)
            )
        return session_id

    async def rotate(self, token_hash: bytes, next_hash: bytes, *, refresh_ttl_s: int) -> Rotation:
        """Exchange a refresh token for the next one of its session (stored under
        ``next_hash``). A token already exchanged revokes the session (reuse)."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(QUERIES["lock_refresh_token"], token_hash)
            if row is None:
                return Rotation("unknown")
            found = Rotation(
                "rotated",
                account_id=str(row["account_id"]),
                session_id=str(row["session_id"]),
                method=str(row["method"]),
            )
            if row["revoked_at"] is not None:
                return Rotation("revoked", found.account_id, found.session_id, found.method)
            if row["used_at"] is not None:
                await connection.execute(QUERIES["revoke_login_session"], found.session_id, "reuse")
                return Rotation("reused", found.account_id, found.session_id, found.method)
            now: datetime = row["now"]
            if now >= row["expires_at"] or now >= row["session_expires_at"]:
                return Rotation("expired", found.account_id, found.session_id, found.method)
            await connection.execute(QUERIES["use_refresh_token"], token_hash)
            await connection.execute(
                QUERIES["insert_refresh_token"], next_hash, found.session_id, float(refresh_ttl_s)
            )
        return found

    async def revoke(self, token_hash: bytes) -> bool:
        """End the session of a refresh token (logout); False when the token is unknown.
        A session already ended stays as it was."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(QUERIES["lock_refresh_token"], token_hash)
            if row is None:
                return False
            await connection.execute(QUERIES["revoke_login_session"], row["session_id"], "logout")
        return True
