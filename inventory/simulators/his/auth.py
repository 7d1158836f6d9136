"""The simulator's hospitals and their credentials: an OAuth 2.0 token endpoint per
hospital (client credentials; the client authenticated by its secret, Basic or in the
form, or by a SMART Backend Services assertion checked against the hospital's JWKS), and
the bearer check every FHIR call of a hospital with credentials passes.

What the token endpoint refuses (401 ``invalid_client`` unless said): a wrong secret or
client id; an assertion signed by a key not in the JWKS (``unknown_key``, ``bad_signature``),
for another audience than the token endpoint (``wrong_audience``), expired, more than
five minutes long, without ``jti`` or with a ``jti`` seen before (``replay``), whose
``iss``/``sub`` is not the client. What a FHIR call refuses (401): no token, an unknown
or revoked one, an expired one, and a token issued for another hospital
(``wrong_audience``). Every refusal is counted by reason (``/$admin/state``, ``auth``).

Secrets and JWKS are read from their files at every request, so a test rotates them by
rewriting the file.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson

__all__ = ["SimHospital", "TokenIssuer", "load_hospitals"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300
#: Clock difference tolerated on an assertion's exp and iat.
LEEWAY_S = 5


@dataclass(frozen=True, slots=True)
class SimHospital:
    """One hospital the simulator serves at ``/h/<id>/``."""

    id: str
    name: str
    #: Put before every department, doctor and location id (ids differ between hospitals).
    prefix: str
    client_id: str | None = None
    client_secret_file: Path | None = None
    jwks_file: Path | None = None
    token_ttl_s: float = 300.0

    @property
    def base(self) -> str:
        """Its path prefix."""
        return f"/h/{self.id}"

    @property
    def protected(self) -> bool:
        """Whether its FHIR calls need a token."""
        return self.client_id is not None


def load_hospitals(path: Path) -> list[SimHospital]:
    """The hospitals of a JSON file ``{"hospitals": [{"id", "name"?, "prefix"?,
    "client_id"?, "client_secret_file"?, "jwks_file"?, "token_ttl_s"?}, ...]}``; relative
    paths are relative to the file."""
    data = orjson.loads(path.read_bytes())
    found = []
    for entry in data["hospitals"]:
        hospital_id = str(entry["id"])

        def where(key: str, entry: dict[str, Any] = entry) -> Path | None:
            value = entry.get(key)
            if value is None:
                return None
            file = Path(str(value))
            return file if file.is_absolute() else path.parent / file

        found.append(
            SimHospital(
                id=hospital_id,
                name=str(entry.get("name", hospital_id)),
                prefix=str(entry.get("prefix", f"{hospital_id}-")),
                client_id=str(entry["client_id"]) if entry.get("client_id") else None,
                client_secret_file=where("client_secret_file"),
                jwks_file=where("jwks_file"),
                token_ttl_s=float(entry.get("token_ttl_s", 300.0)),
            )
        )
    if len({h.id for h in found}) != len(found):
        raise ValueError("hospital ids repeat")
    return found


class AuthRefused(Exception):
    """A refusal with the reason counted."""

    def __init__(self, reason: str, error: str = "invalid_client", status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.status = status


@dataclass(slots=True)
class _Issued:
    hospital: str
    expires_at: float


@dataclass
class TokenIssuer:
    """Every hospital's tokens (one issuer, so a token of hospital B shown to hospital A
    is recognised as another hospital's: ``wrong_audience``)."""

    tokens: dict[str, _Issued] = field(default_factory=dict)
    jtis: dict[str, float] = field(default_factory=dict)
    issued: Counter[str] = field(default_factory=Counter)
    token_refused: Counter[str] = field(default_factory=Counter)
    fhir_refused: Counter[str] = field(default_factory=Counter)
    #: Seconds a hospital's new tokens live, changed at run time (``/$admin/auth``).
    ttl_s: dict[str, float] = field(default_factory=dict)

    # -- the token endpoint -----------------------------------------------------------

    def token(
        self,
        hospital: SimHospital,
        token_url: str,
        form: dict[str, str],
        authorization: str | None,
    ) -> dict[str, Any]:
        """Answer a token request, or raise :class:`AuthRefused`."""
        try:
            if form.get("grant_type") != "client_credentials":
                raise AuthRefused("grant_type", "unsupported_grant_type", 400)
            if not hospital.protected:
                raise AuthRefused("no_client_registered")
            if form.get("client_assertion_type") is not None:
                self._check_assertion(hospital, token_url, form)
            else:
                self._check_secret(hospital, form, authorization)
        except AuthRefused as refused:
            self.token_refused[f"{hospital.id}:{refused.reason}"] += 1
            raise
        value = secrets.token_urlsafe(32)
        ttl = self.ttl_s.get(hospital.id, hospital.token_ttl_s)
        now = time.time()
        self.tokens = {k: v for k, v in self.tokens.items() if v.expires_at > now - 60}
        self.tokens[value] = _Issued(hospital.id, now + ttl)
        self.issued[hospital.id] += 1
        return {
            "access_token": value,
            "token_type": "bearer",
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
            "scope": form.get("scope") or "system/*.*",
        }

    def _check_secret(
        self, hospital: SimHospital, form: dict[str, str], authorization: str | None
    ) -> None:
        if authorization is not None and authorization.lower().startswith("basic "):
            try:
                pair = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except ValueError:
                raise AuthRefused("malformed_basic") from None
            raw_id, _, raw_secret = pair.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        elif "client_secret" in form:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:
            raise AuthRefused("no_client_authentication")
        if client_id != hospital.client_id:
            raise AuthRefused("unknown_client")
        if hospital.client_secret_file is None:
            raise AuthRefused("no_secret_registered")
        expected = hospital.client_secret_file.read_text(encoding="utf-8").strip()
        if not hmac.compare_digest(secret.encode(), expected.encode()):
            raise AuthRefused("bad_secret")

    def _check_assertion(self, hospital: SimHospital, token_url: str, form: dict[str, str]) -> None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthRefused("assertion_type")
        assertion = form.get("client_assertion", "")
        if hospital.jwks_file is None:
            raise AuthRefused("no_jwks_registered")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise AuthRefused("malformed_assertion") from None
        algorithm = header.get("alg")
        if algorithm not in ("RS384", "ES384"):
            raise AuthRefused("algorithm")
        keys = jwt.PyJWKSet.from_json(hospital.jwks_file.read_text(encoding="utf-8")).keys
        kid = header.get("kid")
        candidates = [k for k in keys if kid is None or k.key_id == kid]
        if not candidates:
            raise AuthRefused("unknown_key")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    assertion,
                    key.key,
                    algorithms=[algorithm],
                    audience=token_url,
                    issuer=hospital.client_id,
                    leeway=LEEWAY_S,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
                break
            except jwt.InvalidAudienceError:
                raise AuthRefused("wrong_audience") from None
            except jwt.ExpiredSignatureError:
                raise AuthRefused("expired") from None
            except jwt.InvalidIssuerError:
                raise AuthRefused("wrong_issuer") from None
            except jwt.MissingRequiredClaimError as error:
                raise AuthRefused(f"missing_{error.claim}") from None
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                raise AuthRefused("invalid_assertion") from None
        if claims is None:
            raise AuthRefused("bad_signature")
        now = time.time()
        if claims["sub"] != hospital.client_id:
            raise AuthRefused("wrong_subject")
        if float(claims["exp"]) > now + MAX_ASSERTION_LIFETIME_S + LEEWAY_S:
            raise AuthRefused("too_long")
        jti = f"{hospital.id}:{claims['jti']}"
        self.jtis = {k: v for k, v in self.jtis.items() if v > now - LEEWAY_S}
        if jti in self.jtis:
            raise AuthRefused("replay")
        self.jtis[jti] = float(claims["exp"])

    # -- FHIR calls -------------------------------------------------------------------

    def check_bearer(self, hospital: SimHospital, authorization: str | None) -> str | None:
        """None when the call may go on, else the reason it is refused (and counted)."""
        reason = self._bearer_refusal(hospital, authorization)
        if reason is not None:
            self.fhir_refused[f"{hospital.id}:{reason}"] += 1
        return reason

    def _bearer_refusal(self, hospital: SimHospital, authorization: str | None) -> str | None:
        if authorization is None or not authorization.lower().startswith("bearer "):
            return "missing"
        issued = self.tokens.get(authorization[7:].strip())
        if issued is None:
            return "unknown"
        if issued.hospital != hospital.id:
            return "wrong_audience"
        if issued.expires_at <= time.time():
            return "expired"
        return None

    def revoke(self, hospital: str) -> int:
        """Forget every token of ``hospital``; how many."""
        gone = [k for k, v in self.tokens.items() if v.hospital == hospital]
        for key in gone:
            del self.tokens[key]
        return len(gone)

    def expire(self, hospital: str) -> int:
        """Make every token of ``hospital`` expired now (still known: refused as expired)."""
        now = time.time()
        count = 0
        for issued in self.tokens.values():
            if issued.hospital == hospital:
                issued.expires_at = min(issued.expires_at, now)
                count += 1
        return count

    def summary(self, hospital: str) -> dict[str, Any]:
        """A hospital's counts for ``/$admin/state``."""
        mark = f"{hospital}:"
        return {
            "tokens_issued": self.issued[hospital],
            "token_refused": {
                k.removeprefix(mark): v for k, v in self.token_refused.items() if k.startswith(mark)
            },
            "fhir_refused": {
                k.removeprefix(mark): v for k, v in self.fhir_refused.items() if k.startswith(mark)
            },
            "token_ttl_s": self.ttl_s.get(hospital),
        }
