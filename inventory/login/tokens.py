"""The tokens a login hands out.

- The access token is the service's bearer JWT (HS256 under the current key, checked by
  inventory/api/auth.py like every other): ``sub`` the account, ``iss``, ``aud``, ``iat``,
  ``exp``, plus ``sid`` (the login session) and ``amr`` (``["wechat"]`` or ``["sms"]``).
  It carries no role: patients' tokens are never operators'.
- The refresh token is 256 random bits (base64url, 43 characters), opaque to the front
  end; only its SHA-256 is stored.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import jwt

ALGORITHM: Final = "HS256"
_REFRESH_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


@dataclass(frozen=True)
class Signer:
    """What signs access tokens: the keys by id, the current one, issuer and audience
    (the service's ``INVENTORY_JWT_*`` settings)."""

    keys: Mapping[str, bytes] = field(repr=False)
    kid: str
    issuer: str
    audience: str


def mint_access_token(
    signer: Signer, account_id: str, *, session_id: str, method: str, ttl_s: int
) -> str:
    """An access token for a logged-in account, signed with the current key."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": account_id,
        "iss": signer.issuer,
        "aud": signer.audience,
        "iat": now,
        "exp": now + ttl_s,
        "sid": session_id,
        "amr": [method],
    }
    return jwt.encode(
        claims, signer.keys[signer.kid], algorithm=ALGORITHM, headers={"kid": signer.kid}
    )


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh refresh token and the digest it is stored by."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return token, refresh_token_hash(token) or b""


def refresh_token_hash(token: str) -> bytes | None:
    """The digest a refresh token is stored by; None for text that is no refresh token
    (never looked up)."""
    if not _REFRESH_RE.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).digest()
