"""Credentials for a HIS: OAuth 2.0 client credentials (RFC 6749 §4.4), the client
authenticated by a shared secret (``client_secret_basic``, ``client_secret_post``) or by
a signed JWT assertion (``private_key_jwt``, RFC 7523, as SMART Backend Services
profiles it: RS384 or ES384, ``iss`` = ``sub`` = client id, ``aud`` = the token
endpoint, ``exp`` at most five minutes ahead, a fresh ``jti`` each time, ``kid`` naming
the key the HIS holds in its JWKS).

The access token is cached until shortly before it expires and then fetched again; one
refresh at a time (concurrent callers wait for it). :meth:`TokenAuth.invalidate` drops a
token the HIS refused (401) and makes the next fetch read the secret again, so a rotated
secret or key is picked up at once. Secrets and tokens never reach a log line or an
error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from inventory.his.errors import HisAuthError, HisProtocolError, HisUnavailableError
from inventory.his.secrets import SecretSource

__all__ = [
    "ASSERTION_TYPE",
    "AUTH_METHODS",
    "HisAuth",
    "TokenAuth",
    "TokenAuthConfig",
    "public_jwks",
]

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
AUTH_METHODS: tuple[AuthMethod, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART Backend Services: an assertion expires no more than five minutes from now.
MAX_ASSERTION_LIFETIME_S = 300
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


class HisAuth(Protocol):
    """What the HIS client asks of its credentials."""

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A bearer token to send now (cached or fetched)."""
        ...

    def invalidate(self, token: str) -> None:
        """The HIS refused ``token``: fetch another (reading the secret again) next time."""
        ...


@dataclass(frozen=True, slots=True)
class TokenAuthConfig:
    """One client's registration at a HIS's token endpoint."""

    token_url: str
    client_id: str
    method: AuthMethod
    #: The shared secret (``client_secret_*``).
    secret: SecretSource | None = None
    #: The PEM private key (``private_key_jwt``): RSA for RS384, P-384 for ES384.
    private_key: SecretSource | None = None
    #: The ``kid`` of the assertions; None: the key's RFC 7638 thumbprint, which follows
    #: the key when it is rotated (the JWKS :func:`public_jwks` prints carries the same).
    key_id: str | None = None
    algorithm: Literal["RS384", "ES384"] = "RS384"
    #: Space-separated scopes, e.g. ``system/Schedule.rs system/Appointment.cruds``.
    scope: str | None = None
    #: The assertion's ``aud``; the token endpoint unless a HIS asks for another.
    audience: str | None = None
    #: Fetch a new token this long before the cached one expires (at most half its life).
    refresh_margin_s: float = 30.0
    assertion_lifetime_s: int = MAX_ASSERTION_LIFETIME_S
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.token_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"token_url must be an http(s) URL: {self.token_url!r}")
        if not self.client_id:
            raise ValueError("client_id is required")
        if self.method not in AUTH_METHODS:
            raise ValueError(f"method must be one of {', '.join(AUTH_METHODS)}")
        if self.method == "private_key_jwt":
            if self.private_key is None:
                raise ValueError("private_key_jwt needs a private key (file or env)")
            if self.algorithm not in ("RS384", "ES384"):
                raise ValueError("algorithm must be RS384 or ES384")
            if not 1 <= self.assertion_lifetime_s <= MAX_ASSERTION_LIFETIME_S:
                raise ValueError(f"assertion_lifetime_s must be 1..{MAX_ASSERTION_LIFETIME_S}")
        elif self.secret is None:
            raise ValueError(f"{self.method} needs a client secret (file or env)")
        if self.refresh_margin_s < 0 or self.timeout_s <= 0:
            raise ValueError("refresh_margin_s must not be negative, timeout_s positive")


@dataclass(slots=True)
class _Token:
    value: str
    #: time.monotonic() after which it is not used any more (expiry minus the margin).
    refresh_at: float


class TokenAuth:
    """OAuth 2.0 client credentials with a cached access token (see the module doc)."""

    def __init__(self, config: TokenAuthConfig, *, clock: Any = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._reread = False
        self._key_pem: str | None = None
        self._key: Any = None
        self._kid = ""
        #: Tokens fetched so far (tests and logs count refreshes with it).
        self.fetched = 0

    def __repr__(self) -> str:
        return f"TokenAuth({self.config.method}, client_id={self.config.client_id!r})"

    async def token(self, session: aiohttp.ClientSession) -> str:
        """The cached token while it is fresh; otherwise one fetch for all waiters."""
        cached = self._token
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        async with self._lock:
            cached = self._token
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            self._token = await self._fetch(session)
            return self._token.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (if still cached) and read the secret again next fetch."""
        if self._token is not None and self._token.value == token:
            self._token = None
        self._reread = True

    # -- the token request ------------------------------------------------------------

    async def _fetch(self, session: aiohttp.ClientSession) -> _Token:
        config = self.config
        force, self._reread = self._reread, False
        form = {"grant_type": "client_credentials"}
        if config.scope:
            form["scope"] = config.scope
        headers = {"Accept": "application/json"}
        if config.method == "client_secret_basic":
            assert config.secret is not None
            # RFC 6749 §2.3.1: each part form-encoded before the Basic encoding.
            pair = ":".join(
                urllib.parse.quote_plus(part)
                for part in (config.client_id, config.secret.read(force=force))
            )
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif config.method == "client_secret_post":
            assert config.secret is not None
            form["client_id"] = config.client_id
            form["client_secret"] = config.secret.read(force=force)
        else:
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.assertion(force=force)
        started = self._clock()
        try:
            async with session.post(
                config.token_url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=config.timeout_s),
                allow_redirects=False,
            ) as response:
                status = response.status
                raw = await response.content.read(64 * 1024)
        except TimeoutError as exc:
            raise HisUnavailableError("no answer from the HIS's token endpoint") from exc
        except aiohttp.ClientError as exc:
            raise HisUnavailableError(
                f"the HIS's token endpoint failed: {type(exc).__name__}"
            ) from exc
        if status >= 500 or status in (408, 429):
            raise HisUnavailableError(
                f"the HIS's token endpoint answered {status}", http_status=status
            )
        body = _json(raw)
        if status != 200:
            # The OAuth error code only: a description might echo what we sent.
            code = body.get("error") if isinstance(body, dict) else None
            code = code if isinstance(code, str) and _ERROR_CODE.match(code) else "unknown"
            raise HisAuthError(f"the HIS's token endpoint refused the client: {status} {code}")
        if not isinstance(body, dict):
            raise HisProtocolError("the HIS's token endpoint answered something that is not JSON")
        value = body.get("access_token")
        kind = str(body.get("token_type", "")).lower()
        if not isinstance(value, str) or not value or kind != "bearer":
            raise HisProtocolError("the HIS's token endpoint answered without a bearer token")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        margin = min(config.refresh_margin_s, max(0.0, lifetime) / 2)
        self.fetched += 1
        return _Token(value, started + max(0.0, lifetime - margin))

    def assertion(self, *, force: bool = False) -> str:
        """A fresh signed client assertion (SMART Backend Services)."""
        config = self.config
        assert config.private_key is not None
        now = int(time.time())
        claims = {
            "iss": config.client_id,
            "sub": config.client_id,
            "aud": config.audience or config.token_url,
            "iat": now,
            "exp": now + config.assertion_lifetime_s,
            "jti": secrets.token_urlsafe(24),
        }
        key = self._private_key(force)
        headers = {"typ": "JWT", "kid": config.key_id or self._kid}
        return jwt.encode(claims, key, algorithm=config.algorithm, headers=headers)

    def _private_key(self, force: bool) -> Any:
        config = self.config
        assert config.private_key is not None
        pem = config.private_key.read(force=force)
        if pem != self._key_pem:
            try:
                key = load_pem_private_key(pem.encode(), password=None)
            except (ValueError, TypeError):
                raise HisAuthError(
                    f"the private key {config.private_key.label} is not a PEM private key"
                ) from None
            wanted = (
                isinstance(key, rsa.RSAPrivateKey)
                if config.algorithm == "RS384"
                else isinstance(key, ec.EllipticCurvePrivateKey)
                and isinstance(key.curve, ec.SECP384R1)
            )
            if not wanted:
                raise HisAuthError(
                    f"the private key {config.private_key.label} does not suit {config.algorithm}"
                )
            self._key_pem, self._key = pem, key
            self._kid = str(public_jwk(key)["kid"])
        return self._key


def public_jwk(private_key: Any) -> dict[str, Any]:
    """The public half of an RSA or P-384 key as a JWK with its use, algorithm and
    ``kid`` (the RFC 7638 SHA-256 thumbprint), as a hospital's JWKS registers it."""
    required: tuple[str, ...]
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = dict(RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
        required, algorithm = ("e", "kty", "n"), "RS384"
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        jwk = dict(ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
        required, algorithm = ("crv", "kty", "x", "y"), "ES384"
    else:
        raise TypeError("an RSA or elliptic-curve private key is needed")
    canonical = orjson.dumps({k: jwk[k] for k in required}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {k: jwk[k] for k in required} | {"use": "sig", "alg": algorithm, "kid": kid}


def public_jwks(private_key_pem: bytes) -> dict[str, Any]:
    """The JWKS to give a hospital for the private key in ``private_key_pem``."""
    key = load_pem_private_key(private_key_pem, password=None)
    return {"keys": [public_jwk(key)]}


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
