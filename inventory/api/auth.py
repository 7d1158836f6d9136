"""Bearer JWT authentication (PyJWT).

Per RFC 8725: one algorithm (HS256) fixed by configuration, never taken from the
token's header (so ``alg: none`` and algorithm confusion are refused); the key is
chosen by the token's ``kid`` among the configured keys, so keys can rotate; issuer,
audience, expiry and issued-at are required and checked. The account comes only from
``sub``; operators carry ``"operator"`` in ``roles``.

Checking an HS256 signature and the claims is one of the largest single costs of a
reserve (docs/benchmarks.md), and a front end sends the same token for every request of
a session. So each
process remembers the tokens it has verified, by their exact text (signature
included), until they expire: a remembered token is byte-for-byte one that passed
every check, and its expiry is checked again on each use. The keys are fixed for the
life of a process (rotation restarts it), so a remembered answer cannot go stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import jwt
from aiohttp import web

from inventory.errors import ForbiddenError, UnauthenticatedError
from inventory.ops.config import Settings
from inventory.store.keys import ID_RE

ALGORITHM = "HS256"
OPERATOR_ROLE = "operator"
#: Verified tokens remembered per process; past this the oldest are forgotten first.
VERIFIED_CACHE_SIZE: Final = 50_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an account, possibly with the operator role."""

    account_id: str
    operator: bool


class TokenVerifier:
    """Verifies bearer tokens against the configured keys, remembering the verified
    ones until they expire."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(settings.jwt_keys)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        self._cache_size = cache_size
        self._clock = clock
        # token text -> (principal, the instant past which it is refused); insertion
        # order is age order, so the oldest entry is the first one.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`UnauthenticatedError` otherwise."""
        remembered = self._verified.get(token)
        if remembered is not None:
            found, refused_after = remembered
            if self._clock() < refused_after:
                return found
            del self._verified[token]
            raise UnauthenticatedError("token expired")
        found, expires_at = self._verify_fully(token)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (found, expires_at + self._leeway)
        return found

    def _verify_fully(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise UnauthenticatedError("malformed token") from error
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise UnauthenticatedError("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise UnauthenticatedError("token expired") from error
        except jwt.PyJWTError as error:
            raise UnauthenticatedError("invalid token") from error
        subject = claims.get("sub")
        if not isinstance(subject, str) or not ID_RE.fullmatch(subject):
            raise UnauthenticatedError("the token's subject is not a valid account id")
        roles = claims.get("roles", [])
        operator = isinstance(roles, list) and OPERATOR_ROLE in roles
        # PyJWT has checked that exp is present and an integer or float.
        return Principal(account_id=subject, operator=operator), float(claims["exp"])


def mint_token(settings: Settings, subject: str, *, operator: bool = False, ttl_s: int) -> str:
    """A token signed with the current key (for local use and load tests)."""
    if not ID_RE.fullmatch(subject):
        raise ValueError("the subject must be 1-64 ASCII letters, digits, '_' or '-'")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    kid = settings.signing_key_id
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    if operator:
        claims["roles"] = [OPERATOR_ROLE]
    return jwt.encode(claims, settings.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


PRINCIPAL_KEY = "inventory.principal"


def principal(request: web.Request, *, operator: bool = False) -> Principal:
    """The caller, authenticated from the Authorization header (cached per request)."""
    cached = request.get(PRINCIPAL_KEY)
    if not isinstance(cached, Principal):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError()
        verifier: TokenVerifier = request.app[VERIFIER]
        cached = verifier.verify(token.strip())
        request[PRINCIPAL_KEY] = cached
    if operator and not cached.operator:
        raise ForbiddenError("this operation needs an operator token")
    return cached


VERIFIER = web.AppKey("verifier", TokenVerifier)
