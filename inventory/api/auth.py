"""Bearer JWT authentication (PyJWT).

Per RFC 8725: one algorithm (HS256) fixed by configuration, never taken from the
token's header (so ``alg: none`` and algorithm confusion are refused); the key is
chosen by the token's ``kid`` among the configured keys, so keys can rotate; issuer,
audience, expiry and issued-at are required and checked. The account comes only from
``sub``; operators carry ``"operator"`` in ``roles``. An operator's token may name the
hospitals it acts for (``"hospitals": ["h1", ...]``, a hospital operator): every object
of another hospital then answers 404, as a missing one (:func:`operator_for`). An
operator token without that claim is the platform's, for every hospital. Front-desk
staff and check-in kiosks carry ``"staff"``.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import jwt
from aiohttp import web

from inventory.errors import ForbiddenError, NotFoundError, UnauthenticatedError
from inventory.ops.config import Settings
from inventory.store.keys import ID_RE

ALGORITHM = "HS256"
OPERATOR_ROLE = "operator"
#: The claim naming the hospitals a hospital operator acts for.
HOSPITALS_CLAIM = "hospitals"
#: The most hospitals one operator token may name (a platform operator names none).
MAX_TOKEN_HOSPITALS: Final = 256
#: Front-desk staff and check-in kiosks (签到/取号): they check patients in, nothing else.
STAFF_ROLE = "staff"
#: Verified tokens remembered per process; past this the oldest are forgotten first.
VERIFIED_CACHE_SIZE: Final = 50_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an account, possibly with the operator role; an operator's
    ``hospitals`` are those it acts for (``None``: the platform's, every hospital)."""

    account_id: str
    operator: bool
    hospitals: frozenset[str] | None = None
    #: Front-desk staff or a check-in kiosk (the ``staff`` role).
    staff: bool = False

    @property
    def role(self) -> str:
        """``platform`` (an operator for every hospital), ``hospital`` (an operator for
        some), ``staff`` (front desk or kiosk) or ``account``: what an audit entry
        records."""
        if self.operator:
            return "platform" if self.hospitals is None else "hospital"
        return "staff" if self.staff else "account"

    def acts_for(self, hospital_id: str) -> bool:
        """Whether this operator may act on ``hospital_id``'s objects."""
        return self.operator and (self.hospitals is None or hospital_id in self.hospitals)

    def serves(self, hospital_id: str) -> bool:
        """Whether this staff member or operator may work on ``hospital_id``'s objects
        at the desk (a staff token names its hospitals like an operator's; without the
        claim it serves every hospital, as a platform operator acts on every one)."""
        return (self.staff or self.operator) and (
            self.hospitals is None or hospital_id in self.hospitals
        )


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
        staff = isinstance(roles, list) and STAFF_ROLE in roles
        hospitals = _hospitals_claim(claims) if operator or staff else None
        # PyJWT has checked that exp is present and an integer or float.
        found = Principal(account_id=subject, operator=operator, hospitals=hospitals, staff=staff)
        return found, float(claims["exp"])


def _hospitals_claim(claims: dict[str, object]) -> frozenset[str] | None:
    """An operator's or a staff token's hospitals (``None`` without the claim). A
    malformed claim refuses the token: read as "no claim" it would grant every hospital."""
    if HOSPITALS_CLAIM not in claims:
        return None
    named = claims[HOSPITALS_CLAIM]
    if (
        not isinstance(named, list)
        or not 1 <= len(named) <= MAX_TOKEN_HOSPITALS
        or not all(isinstance(h, str) and ID_RE.fullmatch(h) for h in named)
    ):
        raise UnauthenticatedError("the token's hospitals claim is not a list of hospital ids")
    return frozenset(named)


def mint_token(
    settings: Settings,
    subject: str,
    *,
    operator: bool = False,
    hospitals: Iterable[str] | None = None,
    staff: bool = False,
    ttl_s: int,
) -> str:
    """A token signed with the current key (for local use and load tests); with
    ``hospitals``, an operator or staff token for those hospitals only."""
    if not ID_RE.fullmatch(subject):
        raise ValueError("the subject must be 1-64 ASCII letters, digits, '_' or '-'")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    scope = None if hospitals is None else sorted(set(hospitals))
    if scope is not None:
        if not (operator or staff):
            raise ValueError("only an operator or a staff token names hospitals")
        if not 1 <= len(scope) <= MAX_TOKEN_HOSPITALS or not all(map(ID_RE.fullmatch, scope)):
            raise ValueError(
                f"hospitals: 1-{MAX_TOKEN_HOSPITALS} ids of 1-64 letters, digits, '_' or '-'"
            )
    kid = settings.signing_key_id
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    roles = [OPERATOR_ROLE] if operator else []
    roles += [STAFF_ROLE] if staff else []
    if roles:
        claims["roles"] = roles
    if scope is not None:
        claims[HOSPITALS_CLAIM] = scope
    return jwt.encode(claims, settings.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)


def principal(request: web.Request, *, operator: bool = False, staff: bool = False) -> Principal:
    """The caller, authenticated from the Authorization header (cached per request);
    ``staff`` routes take a staff or an operator token."""
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
    if staff and not (cached.staff or cached.operator):
        raise ForbiddenError("this operation needs a staff or operator token")
    return cached


#: Where :func:`operator_for` notes the hospital a request acted on (for its audit entry).
ACTED_ON_KEY: Final = web.RequestKey("acted_on_hospital", str)


def operator_for(request: web.Request, hospital_id: str | None) -> Principal:
    """The calling operator, when it may act on ``hospital_id``'s objects (401/403 as
    :func:`principal`); a hospital operator gets :class:`NotFoundError` for another
    hospital's, exactly as for an object that does not exist, so ids of other hospitals
    cannot be probed. ``None`` (the object does not exist) is refused the same way for a
    hospital operator; a platform operator goes on to the route's own 404."""
    who = principal(request, operator=True)
    if hospital_id is None:
        if who.hospitals is not None:
            raise NotFoundError()
        return who
    if not who.acts_for(hospital_id):
        raise NotFoundError()
    request[ACTED_ON_KEY] = hospital_id
    return who


def staff_for(request: web.Request, hospital_id: str | None) -> Principal:
    """The calling staff member (or operator), when it may work on ``hospital_id``'s
    objects (401/403 as :func:`principal` with ``staff``); one whose token names other
    hospitals gets :class:`NotFoundError`, exactly as for an object that does not exist
    (as :func:`operator_for`). ``None`` (no such object) is a 404 for everyone."""
    who = principal(request, staff=True)
    if hospital_id is None or not who.serves(hospital_id):
        raise NotFoundError()
    request[ACTED_ON_KEY] = hospital_id
    return who


VERIFIER = web.AppKey("verifier", TokenVerifier)
