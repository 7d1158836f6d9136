"""Staff passwords: argon2id hashes through argon2-cffi (its defaults: RFC 9106's
low-memory profile, 64 MiB and 3 passes), stored as the PHC string it writes (salt and
parameters included), so stronger parameters later are read alongside the old hashes and
replace them at the next right sign-in.

Hashing is deliberately slow (tens of milliseconds of one core): it runs in a worker
thread, at most :data:`MAX_PARALLEL` at a time per process, so the event loop goes on
serving and a burst of sign-ins cannot take every core or much memory.
"""

from __future__ import annotations

import asyncio
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: Length limits of a password (characters): long passphrases welcome, megabytes not.
MIN_LENGTH: Final = 12
MAX_LENGTH: Final = 256
#: Hashes computed at once per process (each takes its memory cost while it runs).
MAX_PARALLEL: Final = 2

_HASHER: Final = PasswordHasher()
#: What an unknown username's password is checked against, so that its answer takes as
#: long as a wrong password's (no timing tells whether a username exists).
_DUMMY_HASH: Final = _HASHER.hash("no account has this password: it only spends the time")


class PasswordRuleError(ValueError):
    """A new password breaks the length rule."""


def check_new_password(password: str) -> None:
    """Refuse a new password outside the length limits (:class:`PasswordRuleError`)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordRuleError(
            f"a password has {MIN_LENGTH}-{MAX_LENGTH} characters (got {len(password)})"
        )


def hash_password(password: str) -> str:
    """The argon2id PHC string of a new password (call :func:`check_new_password` first)."""
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; ``None`` (no such
    account) checks against a dummy hash and answers ``False`` in the same time. The
    comparison is argon2's own (constant time)."""
    try:
        right = _HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return right and stored is not None


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's."""
    return _HASHER.check_needs_rehash(stored)


class Hashing:
    """Password work off the event loop, bounded per process."""

    def __init__(self, parallel: int = MAX_PARALLEL) -> None:
        self._slots = asyncio.Semaphore(parallel)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(verify_password, stored, password)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(hash_password, password)
