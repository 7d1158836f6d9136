"""Credentials against a real simulator process serving several hospitals, each with
its own: client secret (Basic and in the form), SMART Backend Services assertions
(RS384, ES384), the token cached and refreshed, a 401 answered with one refresh, and
what is refused: no token, a wrong secret, a wrong key, a wrong audience, an expired or
another hospital's token, a replayed assertion. Secrets and keys are rotated without a
new client. (That they never reach a log line is tested with the worker's own logs, in
test_connections.py.)"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory.his.auth import ASSERTION_TYPE, TokenAuth, TokenAuthConfig
from inventory.his.client import FhirHisClient
from inventory.his.errors import HisAuthError, HisProtocolError
from tests.his.conftest import client_config, tomorrow
from tests.his.hospitals import Hospitals, start_hospitals


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospitals]:
    """One simulator process for four hospitals (three with credentials)."""
    built = start_hospitals(Path(tmp_path_factory.mktemp("his-hospitals")))
    try:
        yield built
    finally:
        built.sim.stop()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A session for raw calls and the admin API."""
    async with aiohttp.ClientSession() as session:
        yield session


async def admin(
    http: aiohttp.ClientSession, hospitals: Hospitals, hospital: str, path: str, body: Any = None
) -> Any:
    """A hospital's admin API."""
    method = "GET" if body is None else "POST"
    url = f"{hospitals.sim.root_of(hospital)}/$admin/{path}"
    async with http.request(method, url, json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def auth_counts(http: aiohttp.ClientSession, hospitals: Hospitals, hospital: str) -> Any:
    """The hospital's token and refusal counts."""
    return (await admin(http, hospitals, hospital, "state"))["auth"]


def client(hospitals: Hospitals, hospital: str, auth: TokenAuth | None, **limits: Any) -> Any:
    """A FHIR client of one hospital with test limits."""
    config = client_config(hospitals.sim, base_url=hospitals.sim.fhir_url_of(hospital), **limits)
    return FhirHisClient(config, auth=auth)


@pytest.mark.parametrize(
    ("hospital", "method"),
    [
        ("hosp-a", "client_secret_basic"),
        ("hosp-a", "client_secret_post"),
        ("hosp-b", "private_key_jwt"),
        ("hosp-c", "private_key_jwt"),
    ],
)
async def test_each_method_gets_a_token_and_reuses_it(
    hospitals: Hospitals, http: aiohttp.ClientSession, hospital: str, method: str
) -> None:
    """Client secret (Basic, form), RS384 and ES384 assertions each get a token; three
    calls share it; each hospital serves its own catalogue (ids of its own)."""
    before = (await auth_counts(http, hospitals, hospital))["tokens_issued"]
    auth = TokenAuth(hospitals.auth_config(hospital, method=method))
    async with client(hospitals, hospital, auth) as his:
        catalogue = await his.fetch_catalogue()
        await his.list_schedules(tomorrow(), tomorrow())
        await his.get_schedule("no-such-schedule")
    assert catalogue.hospital_id == hospital
    prefix = hospital.removeprefix("hosp-") + "-"
    assert all(d.department_id.startswith(prefix) for d in catalogue.departments)
    assert auth.fetched == 1
    assert (await auth_counts(http, hospitals, hospital))["tokens_issued"] == before + 1


async def test_a_hospital_without_credentials_needs_no_token(hospitals: Hospitals) -> None:
    """The hospital registered without a client serves as the single HIS always did."""
    async with client(hospitals, "hosp-open", None) as his:
        catalogue = await his.fetch_catalogue()
    assert catalogue.hospital_id == "hosp-open"


async def test_no_token_is_refused(hospitals: Hospitals, http: aiohttp.ClientSession) -> None:
    """A call without a token gets 401 (a protocol error, never retried); the
    CapabilityStatement stays public."""
    before = (await auth_counts(http, hospitals, "hosp-a"))["fhir_refused"].get("missing", 0)
    async with client(hospitals, "hosp-a", None) as his:
        with pytest.raises(HisProtocolError, match="401"):
            await his.fetch_catalogue()
        assert his.stats.retries == 0
    async with http.get(f"{hospitals.sim.fhir_url_of('hosp-a')}/metadata") as response:
        assert response.status == 200
    refused = (await auth_counts(http, hospitals, "hosp-a"))["fhir_refused"]
    assert refused["missing"] == before + 1


async def refusals(http: aiohttp.ClientSession, hospitals: Hospitals, hospital: str) -> Any:
    """The token endpoint's refusals by reason."""
    return (await auth_counts(http, hospitals, hospital))["token_refused"]


async def test_a_wrong_secret_is_refused(
    hospitals: Hospitals, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A wrong secret: HisAuthError naming the OAuth error only, never the secret."""
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret-1234567890")
    config = hospitals.auth_config("hosp-a")
    auth = TokenAuth(
        TokenAuthConfig(**{**_fields(config), "secret": _source(wrong)})  # type: ignore[arg-type]
    )
    before = (await refusals(http, hospitals, "hosp-a")).get("bad_secret", 0)
    async with client(hospitals, "hosp-a", auth) as his:
        with pytest.raises(HisAuthError, match="invalid_client") as raised:
            await his.fetch_catalogue()
    assert "not-the-secret" not in str(raised.value)
    assert (await refusals(http, hospitals, "hosp-a"))["bad_secret"] == before + 1


@pytest.mark.parametrize("hospital", ["hosp-b", "hosp-c"])
async def test_a_wrong_key_is_refused(
    hospitals: Hospitals, http: aiohttp.ClientSession, tmp_path: Path, hospital: str
) -> None:
    """An assertion signed by a key the hospital does not hold: refused, whether it
    names the registered key's kid (bad signature) or its own (unknown key)."""
    from tests.his.hospitals import new_key, pem

    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(pem(new_key(hospitals.algorithm(hospital))))
    registered_kid = TokenAuth(hospitals.auth_config(hospital)).assertion()
    import jwt

    kid = jwt.get_unverified_header(registered_kid)["kid"]
    before = await refusals(http, hospitals, hospital)
    for key_id, reason in ((kid, "bad_signature"), (None, "unknown_key")):
        auth = TokenAuth(
            hospitals.auth_config(hospital, private_key=_source(stranger), key_id=key_id)
        )
        async with client(hospitals, hospital, auth) as his:
            with pytest.raises(HisAuthError, match="401 invalid_client"):
                await his.fetch_catalogue()
        after = await refusals(http, hospitals, hospital)
        assert after[reason] == before.get(reason, 0) + 1


async def test_an_assertion_for_another_audience_is_refused(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """An assertion whose aud is not this hospital's token endpoint (another
    hospital's) is refused."""
    auth = TokenAuth(hospitals.auth_config("hosp-b", audience=hospitals.sim.token_url_of("hosp-c")))
    before = (await refusals(http, hospitals, "hosp-b")).get("wrong_audience", 0)
    async with client(hospitals, "hosp-b", auth) as his:
        with pytest.raises(HisAuthError):
            await his.fetch_catalogue()
    assert (await refusals(http, hospitals, "hosp-b"))["wrong_audience"] == before + 1


async def raw_token(http: aiohttp.ClientSession, hospitals: Hospitals, hospital: str) -> str:
    """A token of the hospital fetched by hand."""
    auth = TokenAuth(hospitals.auth_config(hospital))
    async with aiohttp.ClientSession() as session:
        return await auth.token(session)


async def fhir_status(
    http: aiohttp.ClientSession, hospitals: Hospitals, hospital: str, token: str
) -> int:
    """The status of one search of the hospital's with the token."""
    url = f"{hospitals.sim.fhir_url_of(hospital)}/Organization"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


async def test_another_hospitals_token_is_refused(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """A token hospital A issued opens A's FHIR only: B refuses it (wrong audience)."""
    token = await raw_token(http, hospitals, "hosp-a")
    assert await fhir_status(http, hospitals, "hosp-a", token) == 200
    before = (await auth_counts(http, hospitals, "hosp-b"))["fhir_refused"]
    assert await fhir_status(http, hospitals, "hosp-b", token) == 401
    after = (await auth_counts(http, hospitals, "hosp-b"))["fhir_refused"]
    assert after["wrong_audience"] == before.get("wrong_audience", 0) + 1
    assert await fhir_status(http, hospitals, "hosp-b", "made-up-token") == 401


async def test_an_expired_token_is_refused_and_the_client_refreshes_once(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """A token past its expiry is refused (401, expired); a client holding one gets
    the 401, fetches a new token and the call succeeds (one retry, nothing else)."""
    auth = TokenAuth(hospitals.auth_config("hosp-c"))
    async with client(hospitals, "hosp-c", auth) as his:
        await his.fetch_catalogue()
        held = await auth.token(his._session_now())
        await admin(http, hospitals, "hosp-c", "auth", {"expire": True})
        assert await fhir_status(http, hospitals, "hosp-c", held) == 401
        before = (await auth_counts(http, hospitals, "hosp-c"))["fhir_refused"]["expired"]
        await his.fetch_catalogue()
        assert his.stats.retries == 0
    assert auth.fetched == 2
    after = (await auth_counts(http, hospitals, "hosp-c"))["fhir_refused"]["expired"]
    assert after == before + 1


async def test_tokens_expiring_mid_run_are_refreshed_before_expiry(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """With tokens living 1 s, two seconds and a half of calls fetch a new token as
    each runs out (half-way through its life), and none is refused."""
    await admin(http, hospitals, "hosp-b", "auth", {"token_ttl_s": 1.0})
    try:
        auth = TokenAuth(hospitals.auth_config("hosp-b"))
        before = dict((await auth_counts(http, hospitals, "hosp-b"))["fhir_refused"])
        async with client(hospitals, "hosp-b", auth) as his:
            deadline = time.monotonic() + 2.5
            calls = 0
            while time.monotonic() < deadline:
                await his.get_schedule("no-such-schedule")
                calls += 1
                await asyncio.sleep(0.05)
        assert calls > 10
        assert 3 <= auth.fetched <= 8
        assert (await auth_counts(http, hospitals, "hosp-b"))["fhir_refused"] == before
    finally:
        await admin(http, hospitals, "hosp-b", "auth", {"token_ttl_s": 300})


async def test_a_revoked_token_is_replaced(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """The HIS forgets its tokens (a restart, a revocation): the next call's 401 gets
    a new token."""
    auth = TokenAuth(hospitals.auth_config("hosp-a"))
    async with client(hospitals, "hosp-a", auth) as his:
        await his.fetch_catalogue()
        await admin(http, hospitals, "hosp-a", "auth", {"revoke": True})
        await his.fetch_catalogue()
    assert auth.fetched == 2


async def test_a_replayed_assertion_is_refused(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """The same assertion (same jti) twice: the second is refused."""
    auth = TokenAuth(hospitals.auth_config("hosp-b"))
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": auth.assertion(),
    }
    statuses = []
    for _ in range(2):
        async with http.post(hospitals.sim.token_url_of("hosp-b"), data=form) as response:
            statuses.append(response.status)
    assert statuses == [200, 401]
    assert (await refusals(http, hospitals, "hosp-b"))["replay"] >= 1


async def test_a_rotated_secret_is_read_without_a_new_client(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """The hospital rotates the secret: while our file has the old one, a new token is
    refused; once the file has the new one, the same client carries on (the file is
    read again because it changed)."""
    auth = TokenAuth(hospitals.auth_config("hosp-a"))
    async with client(hospitals, "hosp-a", auth) as his:
        await his.fetch_catalogue()
        hospitals.rotate_secret("hosp-a", ours=False)
        await his.fetch_catalogue()  # the token still holds
        await admin(http, hospitals, "hosp-a", "auth", {"revoke": True})
        with pytest.raises(HisAuthError):
            await his.fetch_catalogue()
        value = hospitals.secret_file("hosp-a").read_text()
        hospitals.our_secret("hosp-a").write_text(value)
        os.utime(hospitals.our_secret("hosp-a"), ns=(time.time_ns(), time.time_ns() + 1))
        await his.fetch_catalogue()


async def test_a_rotated_key_is_read_without_a_new_client(
    hospitals: Hospitals, http: aiohttp.ClientSession
) -> None:
    """Our key is replaced (the hospital's JWKS holds the new one, then only it): the
    next token is signed with the new key, its kid the new key's thumbprint."""
    auth = TokenAuth(hospitals.auth_config("hosp-c"))
    async with client(hospitals, "hosp-c", auth) as his:
        await his.fetch_catalogue()
        hospitals.rotate_key("hosp-c", keep_old=False)
        await admin(http, hospitals, "hosp-c", "auth", {"revoke": True})
        await his.fetch_catalogue()
    assert auth.fetched == 2


def _source(path: Path) -> Any:
    from inventory.his.secrets import SecretSource

    return SecretSource(file=path)


def _fields(config: TokenAuthConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
