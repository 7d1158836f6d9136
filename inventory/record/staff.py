"""Staff accounts of the console's sign-in in Postgres (migration 0027_staff_accounts.sql):
a username, the password's argon2id hash, the platform's or a list of hospitals, a
disabled flag and the wrong-password count and lock."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

#: A username: lower-case letters, digits, '_' and '-', starting with a letter or digit
#: (it is the tokens' ``sub``, so within their account ids).
USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)


@dataclass(frozen=True, slots=True)
class StaffAccount:
    """One staff account (``hospitals`` empty for the platform's)."""

    username: str
    password_hash: str
    platform: bool
    hospitals: tuple[str, ...]
    disabled: bool
    failed_attempts: int
    locked_until: datetime | None
    #: Locked now, by the database's clock.
    locked: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A wrong password counted: whether the account is locked now, and until when."""

    locked: bool
    locked_until: datetime | None


def _account(row: asyncpg.Record) -> StaffAccount:
    return StaffAccount(
        username=row["username"],
        password_hash=row["password_hash"],
        platform=row["platform"],
        hospitals=tuple(row["hospitals"]),
        disabled=row["disabled"],
        failed_attempts=row["failed_attempts"],
        locked_until=row["locked_until"],
        locked=row["locked"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


class StaffRecord:
    """Reads and writes of ``staff_accounts``."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout = acquire_timeout_s

    async def add(
        self, username: str, password_hash: str, *, hospitals: Sequence[str] | None
    ) -> bool:
        """Make an account (``hospitals`` None: the platform's); False when the username
        is taken."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            made = await connection.fetchval(
                QUERIES["insert_staff_account"],
                username,
                password_hash,
                hospitals is None,
                list(hospitals or ()),
            )
        return made is not None

    async def get(self, username: str) -> StaffAccount | None:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(QUERIES["get_staff_account"], username)
        return None if row is None else _account(row)

    async def all(self) -> list[asyncpg.Record]:
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            rows: list[asyncpg.Record] = await connection.fetch(QUERIES["list_staff_accounts"])
            return rows

    async def set_password(self, username: str, password_hash: str) -> bool:
        """Replace the password (clearing any lock); False for an unknown username."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            done = await connection.fetchval(QUERIES["set_staff_password"], username, password_hash)
        return done is not None

    async def disable(self, username: str) -> bool:
        """Refuse the account's sign-ins; False for an unknown username."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            done = await connection.fetchval(QUERIES["disable_staff_account"], username)
        return done is not None

    async def failed(self, username: str, *, max_failures: int, lock_s: int) -> Failure:
        """Count a wrong password (locking the account at ``max_failures``)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(
                QUERIES["record_staff_login_failure"], username, max_failures, float(lock_s)
            )
        if row is None:
            return Failure(locked=False, locked_until=None)
        return Failure(locked=row["locked"], locked_until=row["locked_until"])

    async def signed_in(self, username: str, *, new_hash: str | None) -> None:
        """A right password: clear the count and lock, keep the time (and a new hash)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            await connection.execute(QUERIES["record_staff_login"], username, new_hash)

    async def unknown_hospitals(self, hospitals: Sequence[str]) -> list[str]:
        """Those of ``hospitals`` the catalogue has no row for."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            known = {row["id"] for row in await connection.fetch(QUERIES["list_hospitals"])}
        return [h for h in hospitals if h not in known]
