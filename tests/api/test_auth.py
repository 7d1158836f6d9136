"""Who may call what, and how much: the authorization matrix (G13), rate limits and spike
protection (G17), and the server process itself (workers, graceful stop, `inventory token`).

The matrix is generated from ``inventory.api.routes.OPERATIONS``: every operation that
needs a token is tried with every kind of bad token, with the old rotation key, with an
account token where an operator is needed, and with another account's objects.
Rate limits and admission run against a second server process configured with small
limits, so they never disturb the shared one.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import orjson
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from multidict import CIMultiDict
from redis.asyncio import Redis

from inventory.api.auth import TokenVerifier, mint_token
from inventory.api.models import (
    BookingCancel,
    BookingReschedule,
    HoldConfirm,
    HoldCreate,
    PatientCreate,
    SubstitutionAnswer,
    WaitlistJoinBody,
)
from inventory.api.releases import TicketCreate
from inventory.api.routes import OPERATIONS
from inventory.api.routing import Operation
from inventory.app import create_app
from inventory.devtools.servers import free_port
from inventory.errors import UnauthenticatedError
from inventory.ops.config import Settings
from inventory.store import keys
from tests.databases import Databases

from .conftest import ApiServer, configured_api, launch_api, stop_api
from .helpers import Catalogue, patient_body, register_patient, uid
from .test_errors import (
    assert_no_server_errors,
    fill_path,
    problem,
    tracking_session,
)

AUTHED = [op for op in OPERATIONS if op.auth]
ACCOUNT_OPS = [op for op in OPERATIONS if op.auth == "account"]
OPERATOR_OPS = [op for op in OPERATIONS if op.auth == "operator"]
#: Routes for front-desk staff and kiosks (an operator token passes them too).
STAFF_OPS = [op for op in OPERATIONS if op.auth == "staff"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client; the test fails if any answer was a 5xx other than 503."""
    statuses: list[tuple[str, str, int]] = []
    async with tracking_session(statuses, connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session
    assert_no_server_errors(statuses)


# -- tokens ------------------------------------------------------------------------------------


def claims(settings: Settings, **changes: Any) -> dict[str, Any]:
    """Valid claims for an operator (so a wrongly accepted token would get everywhere)."""
    now = int(time.time())
    found: dict[str, Any] = {
        "sub": "acct-matrix",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
        "roles": ["operator"],
    }
    found.update(changes)
    return {k: v for k, v in found.items() if v is not None}


def sign(payload: dict[str, Any], key: bytes, *, kid: str, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # HS512 with a 32-byte key (the algorithm-confusion case) warns about its length.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def bad_authorizations(settings: Settings) -> dict[str, str | None]:
    """Authorization header values that must each be refused with 401."""
    k1, k2 = settings.jwt_keys["k1"], settings.jwt_keys["k2"]
    now = int(time.time())
    good = claims(settings)
    alg_none = (
        _b64(orjson.dumps({"alg": "none", "kid": "k2", "typ": "JWT"}))
        + "."
        + _b64(orjson.dumps(good))
        + "."
    )
    signed = sign(good, k2, kid="k2")
    head, _, sig = signed.split(".")
    tampered = f"{head}.{_b64(orjson.dumps(good | {'sub': 'someone-else'}))}.{sig}"
    tokens = {
        "garbage": "not.a.jwt",
        "expired": sign(claims(settings, iat=now - 3600, exp=now - 120), k2, kid="k2"),
        "not yet valid": sign(claims(settings, nbf=now + 3600), k2, kid="k2"),
        "no exp": sign(claims(settings, exp=None), k2, kid="k2"),
        "no iat": sign(claims(settings, iat=None), k2, kid="k2"),
        "wrong audience": sign(claims(settings, aud="another-api"), k2, kid="k2"),
        "no audience": sign(claims(settings, aud=None), k2, kid="k2"),
        "wrong issuer": sign(claims(settings, iss="https://evil.example"), k2, kid="k2"),
        "alg none": alg_none,
        "alg none, no kid": _b64(orjson.dumps({"alg": "none"})) + alg_none[alg_none.index(".") :],
        "HS512": sign(good, k2, kid="k2", algorithm="HS512"),
        "unknown kid": sign(good, secrets.token_bytes(32), kid="k9"),
        "no kid": jwt.encode(good, k2, algorithm="HS256"),
        "kid k2 signed with k1": sign(good, k1, kid="k2"),
        "tampered payload": tampered,
        "subject not an id": sign(claims(settings, sub="a b/../c"), k2, kid="k2"),
        "subject not a string": sign(claims(settings, sub=None) | {"sub": 42}, k2, kid="k2"),
    }
    found: dict[str, str | None] = {name: f"Bearer {token}" for name, token in tokens.items()}
    found |= {
        "no token": None,
        "empty bearer": "Bearer ",
        "basic scheme": "Basic " + _b64(b"ops:secret"),
        "token without scheme": signed,
    }
    return found


# -- the authorization matrix ---------------------------------------------------------------


@pytest.mark.parametrize("op", AUTHED, ids=lambda op: op.operation_id)
async def test_bad_tokens_are_401(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """Every bad token on every authenticated operation answers 401, before body or key."""
    url = api_server.url + fill_path(op)
    for name, value in bad_authorizations(api_server.settings).items():
        headers = {"Content-Type": "application/json"}
        if value is not None:
            headers["Authorization"] = value
        try:
            # A broken body and no Idempotency-Key: authentication must come first.
            await problem(
                client, op.method.upper(), url, 401, "unauthenticated", data=b"{", headers=headers
            )
        except AssertionError as error:
            raise AssertionError(f"{op.operation_id}: {name}: {error}") from None


@pytest.mark.parametrize("op", AUTHED, ids=lambda op: op.operation_id)
async def test_rotated_key_is_still_accepted(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """A token signed with the previous key k1 gets past authentication everywhere."""
    token = sign(
        claims(
            api_server.settings,
            sub=uid("acct"),
            roles=["operator"] if op.auth in ("operator", "staff") else [],
        ),
        api_server.settings.jwt_keys["k1"],
        kid="k1",
    )
    async with client.request(
        op.method.upper(),
        api_server.url + fill_path(op),
        json={},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        assert answer.status not in (401, 403), (op.operation_id, await answer.text())
        assert answer.status < 500


async def test_rotated_key_does_real_work(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """k1 tokens really act: register and list patients, create a hospital."""
    k1 = api_server.settings.jwt_keys["k1"]
    account = uid("acct")
    headers = {
        "Authorization": "Bearer "
        + sign(claims(api_server.settings, sub=account, roles=[]), k1, kid="k1")
    }
    async with client.post(
        api_server.url + "/v1/patients", json=patient_body(), headers=headers
    ) as answer:
        assert answer.status == 201
    async with client.get(api_server.url + "/v1/patients", headers=headers) as answer:
        assert len((await answer.json())["items"]) == 1
    operator = {"Authorization": "Bearer " + sign(claims(api_server.settings), k1, kid="k1")}
    async with client.put(
        api_server.url + f"/v1/operator/hospitals/{uid('h')}", json={"name": "H"}, headers=operator
    ) as answer:
        assert answer.status == 201


@pytest.mark.parametrize("op", OPERATOR_OPS, ids=lambda op: op.operation_id)
async def test_account_token_on_operator_route_is_403(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """An account token on an operator route answers 403 forbidden, before the body."""
    settings = api_server.settings
    for kid in ("k2", "k1"):
        for roles in ([], ["admin"], "operator", ["Operator"]):
            token = sign(claims(settings, roles=roles), settings.jwt_keys[kid], kid=kid)
            await problem(
                client,
                op.method.upper(),
                api_server.url + fill_path(op),
                403,
                "forbidden",
                data=b"{",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )


@pytest.mark.parametrize("op", STAFF_OPS, ids=lambda op: op.operation_id)
async def test_staff_routes_take_staff_and_operator_tokens_only(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """An account token (any roles but staff or operator) on a staff route is 403; a
    staff or an operator token gets past authorization."""
    settings = api_server.settings
    url = api_server.url + fill_path(op)
    for roles in ([], ["admin"], "staff", ["Staff"]):
        token = sign(claims(settings, roles=roles), settings.jwt_keys["k2"], kid="k2")
        await problem(
            client,
            op.method.upper(),
            url,
            403,
            "forbidden",
            data=b"{",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    for roles in (["staff"], ["operator"]):
        token = sign(claims(settings, roles=roles), settings.jwt_keys["k2"], kid="k2")
        async with client.request(
            op.method.upper(),
            url,
            json={},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            assert answer.status not in (401, 403), (roles, await answer.text())
            assert answer.status < 500


def test_token_cli_mints_a_staff_token(api_server: ApiServer) -> None:
    """`inventory token --staff` mints a token with the staff role only."""
    made = subprocess.run(
        [sys.executable, "-m", "inventory", "token", "--sub", "kiosk-3", "--staff"],
        env=api_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = TokenVerifier(api_server.settings).verify(made.stdout.strip())
    assert (found.account_id, found.staff, found.operator) == ("kiosk-3", True, False)


async def test_staff_token_is_not_an_operator_token(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A staff token on an operator route is 403."""
    settings = api_server.settings
    token = sign(claims(settings, roles=["staff"]), settings.jwt_keys["k2"], kid="k2")
    await problem(
        client,
        "PUT",
        api_server.url + f"/v1/operator/hospitals/{uid('h')}",
        403,
        "forbidden",
        data=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


class Victim:
    """Account A's objects: a patient, a hold that is held and a confirmed booking."""

    account: str
    patient_id: str
    slot_id: str
    hold_id: str
    booking_id: str
    headers: dict[str, str]

    def secrets(self) -> list[str]:
        return [self.account, self.patient_id, self.hold_id, self.booking_id]


@pytest.fixture(scope="module")
async def victim(api_server: ApiServer) -> Victim:
    """Account A with a patient, a held hold and a confirmed booking."""
    found = Victim()
    async with aiohttp.ClientSession() as http:
        cat = await Catalogue(api_server, http).create(policy={"one_per_day": False})
        _, slots, _ = await cat.schedule([3])
        found.account = uid("victim")
        found.headers = api_server.headers(found.account)
        found.patient_id = await register_patient(api_server, http, found.account)
        found.slot_id = slots[0]
        ids = []
        for _ in range(2):
            async with http.post(
                api_server.url + "/v1/holds",
                json={"slot_id": slots[0], "patient_id": found.patient_id, "channel": "app"},
                headers=found.headers | {"Idempotency-Key": uuid.uuid4().hex},
            ) as answer:
                assert answer.status == 201
                ids.append((await answer.json())["hold_id"])
        found.hold_id, found.booking_id = ids
        async with http.post(
            api_server.url + f"/v1/holds/{found.booking_id}/confirm",
            json={"payment_ref": "wx-victim"},
            headers=found.headers,
        ) as answer:
            assert answer.status == 200
    return found


def attack_bodies(victim: Victim) -> dict[type[Any], dict[str, Any]]:
    """The body another account sends, per request model (other models get ``{}``)."""
    return {
        HoldCreate: {"slot_id": victim.slot_id, "patient_id": victim.patient_id, "channel": "app"},
        HoldConfirm: {"payment_ref": "wx-attacker"},
        BookingCancel: {},
        BookingReschedule: {"slot_id": victim.slot_id},
        SubstitutionAnswer: {"accept": True},
        PatientCreate: patient_body(),
        TicketCreate: {"patient_id": victim.patient_id},
        WaitlistJoinBody: {"patient_id": victim.patient_id, "channel": "app"},
    }


@pytest.mark.parametrize("op", ACCOUNT_OPS, ids=lambda op: op.operation_id)
async def test_other_accounts_objects_are_404_and_never_leak(
    api_server: ApiServer, client: aiohttp.ClientSession, victim: Victim, op: Operation
) -> None:
    """B using A's hold, booking or patient gets 404, changes nothing, sees none of A's ids."""
    attacker = api_server.headers(uid("attacker"))
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    targets = [victim.hold_id, victim.booking_id] if names else [""]
    body = attack_bodies(victim).get(op.body, {}) if op.body else None
    for target in targets:
        path = fill_path(op, target) if names else op.path
        async with client.request(
            op.method.upper(),
            api_server.url + path,
            json=body,
            headers=attacker | {"Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            text = await answer.text()
            status = answer.status
        for secret in victim.secrets():
            assert secret not in text, (op.operation_id, secret, text)
        if names or op.body in (HoldCreate, WaitlistJoinBody):
            assert status == 404, (op.operation_id, target, status, text)
            assert orjson.loads(text)["code"] == "not_found", text
        else:
            assert status in (200, 201), (op.operation_id, status, text)
    async with client.get(
        api_server.url + f"/v1/holds/{victim.hold_id}", headers=victim.headers
    ) as answer:
        assert (await answer.json())["state"] == "held"
    async with client.get(
        api_server.url + f"/v1/bookings/{victim.booking_id}", headers=victim.headers
    ) as answer:
        assert (await answer.json())["status"] == "confirmed"


async def test_lists_are_per_account(
    api_server: ApiServer, client: aiohttp.ClientSession, victim: Victim
) -> None:
    """A's patients and bookings are listed for A only."""
    async with client.get(api_server.url + "/v1/patients", headers=victim.headers) as answer:
        assert victim.patient_id in {p["patient_id"] for p in (await answer.json())["items"]}
    async with client.get(api_server.url + "/v1/bookings", headers=victim.headers) as answer:
        assert victim.booking_id in {b["booking_id"] for b in (await answer.json())["items"]}
    attacker = api_server.headers(uid("attacker"))
    for path in ("/v1/patients", "/v1/bookings"):
        async with client.get(api_server.url + path, headers=attacker) as answer:
            assert (await answer.json()) == {"items": []}


def test_matrix_covers_every_authenticated_operation(api_server: ApiServer) -> None:
    """The app serves exactly the documented operations, so the matrices cover every route."""
    app = create_app(api_server.settings)  # routes only: its resources open on start-up
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == {(op.method, op.path) for op in OPERATIONS}
    assert {op.auth for op in OPERATIONS} == {None, "account", "operator", "staff"}
    assert ACCOUNT_OPS
    assert OPERATOR_OPS
    assert STAFF_OPS


# -- the verified-token memory -----------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _verifier_settings() -> Settings:
    return Settings(
        redis_url="redis://127.0.0.1:1",
        database_url="postgresql://127.0.0.1:1/none",
        jwt_keys={"k1": secrets.token_bytes(32)},
        jwt_current_key="k1",
        jwt_leeway_s=5,
    )


def test_remembered_token_still_expires() -> None:
    """A token verified once is answered from memory, but only until exp + leeway."""
    settings = _verifier_settings()
    clock = _Clock()
    verifier = TokenVerifier(settings, clock=clock)
    token = mint_token(settings, "acct-memo", ttl_s=60)
    assert verifier.verify(token).account_id == "acct-memo"
    clock.now += 64  # 60 s ttl + 5 s leeway: still inside
    assert verifier.verify(token).account_id == "acct-memo"
    clock.now += 2
    with pytest.raises(UnauthenticatedError, match="expired"):
        verifier.verify(token)


def test_memory_is_by_exact_token_text() -> None:
    """Once a token is remembered, any other text (another signature, another payload
    with the old signature) is verified in full and refused."""
    settings = _verifier_settings()
    verifier = TokenVerifier(settings)
    token = mint_token(settings, "acct-memo", operator=True, ttl_s=60)
    assert verifier.verify(token).operator
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    forged_payload = _b64(
        orjson.dumps(
            jwt.decode(token, options={"verify_signature": False}) | {"sub": "someone-else"}
        )
    )
    for forged in (f"{head}.{payload}.{flipped}", f"{head}.{forged_payload}.{signature}"):
        with pytest.raises(UnauthenticatedError):
            verifier.verify(forged)
    assert verifier.verify(token).account_id == "acct-memo"


def test_memory_is_bounded() -> None:
    """Past its size the oldest tokens are forgotten, and verified again when they
    come back."""
    settings = _verifier_settings()
    verifier = TokenVerifier(settings, cache_size=2)
    tokens = [mint_token(settings, f"acct-{n}", ttl_s=60) for n in range(5)]
    for _ in range(2):
        for n, token in enumerate(tokens):
            assert verifier.verify(token).account_id == f"acct-{n}"
    assert len(verifier._verified) == 2


# -- `inventory token` -------------------------------------------------------------------------


def _cli_token(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inventory", "token", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_token_cli(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """`inventory token` prints tokens the server accepts (operator or account); bad sub exits 2."""
    made = await asyncio.to_thread(_cli_token, api_server.env, "--sub", "cli-ops", "--operator")
    assert made.returncode == 0, made.stderr
    operator = {"Authorization": "Bearer " + made.stdout.strip()}
    async with client.put(
        api_server.url + f"/v1/operator/hospitals/{uid('h')}",
        json={"name": "CLI"},
        headers=operator,
    ) as answer:
        assert answer.status == 201, await answer.text()
    made = await asyncio.to_thread(_cli_token, api_server.env, "--sub", "cli-acct", "--ttl", "60")
    account = {"Authorization": "Bearer " + made.stdout.strip()}
    async with client.get(api_server.url + "/v1/patients", headers=account) as answer:
        assert answer.status == 200
    await problem(
        client,
        "PUT",
        api_server.url + f"/v1/operator/hospitals/{uid('h')}",
        403,
        "forbidden",
        json={"name": "CLI"},
        headers=account,
    )
    bad = await asyncio.to_thread(_cli_token, api_server.env, "--sub", "not an id")
    assert bad.returncode == 2
    assert not bad.stdout
    assert "subject" in bad.stderr


# -- a second server with small limits ---------------------------------------------------------

ACCOUNT_LIMIT = 5
IP_LIMIT = 8


@pytest.fixture(scope="module")
def limited_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process with 5 reserves / 60 s per account, 8 per address (taken from
    X-Forwarded-For), at most 2 requests in flight (Retry-After 3-12 s), and no access
    log."""
    # The store verified as the worker would: without it the store is unverified when this
    # module runs alone.
    settings = {
        "INVENTORY_RESERVE_RATE_PER_ACCOUNT": f"{ACCOUNT_LIMIT}/60",
        "INVENTORY_RESERVE_RATE_PER_IP": f"{IP_LIMIT}/60",
        "INVENTORY_MAX_IN_FLIGHT": "2",
        "INVENTORY_CLIENT_IP_HEADER": "X-Forwarded-For",
        "INVENTORY_ACCESS_LOG": "false",
        "INVENTORY_RETRY_AFTER_S": "3",
        "INVENTORY_RETRY_AFTER_MAX_S": "12",
    }
    folder = tmp_path_factory.mktemp("limited")
    with configured_api(redis_server.url, databases, folder, settings) as server:
        yield server


def _address() -> str:
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


async def _reserve(
    http: aiohttp.ClientSession, api: ApiServer, account: str, address: str
) -> aiohttp.ClientResponse:
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"},
        headers=api.headers(account)
        | {"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": address},
    ) as answer:
        await answer.read()
        return answer


async def test_access_log_off(limited_api: ApiServer, client: aiohttp.ClientSession) -> None:
    """INVENTORY_ACCESS_LOG=false: no line per request, the request id is still echoed
    and the request still counted in the latency metric."""
    sent = f"rid-{uuid.uuid4().hex}"
    async with client.get(
        limited_api.url + "/v1/hospitals", headers={"X-Request-Id": sent}
    ) as answer:
        assert answer.status == 200
        assert answer.headers["X-Request-Id"] == sent
    async with client.get(limited_api.url + "/metrics") as answer:
        scrape = await answer.text()
    assert 'inventory_http_request_duration_seconds_count{method="GET",route="/v1/hospitals"' in (
        scrape
    )
    await asyncio.sleep(0.3)  # a line, were one written, is out after one loop iteration
    log = limited_api.log_path.read_text(errors="replace")
    assert "serving on" in log  # the process does log
    assert sent not in log
    assert '"http.request"' not in log


async def test_account_rate_limit(limited_api: ApiServer, client: aiohttp.ClientSession) -> None:
    """The 6th reserve of one account within the window answers 429 with Retry-After."""
    account = uid("acct")
    for _ in range(ACCOUNT_LIMIT):
        answer = await _reserve(client, limited_api, account, _address())
        assert answer.status == 404  # past the limiter: the slot does not exist
    body = await problem(
        client,
        "POST",
        limited_api.url + "/v1/holds",
        429,
        "rate_limited",
        json={"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"},
        headers=limited_api.headers(account)
        | {"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": _address()},
    )
    assert 1 <= body["retry_after_s"] <= 60
    other = await _reserve(client, limited_api, uid("acct"), _address())
    assert other.status == 404


async def _rate_limited_count(client: aiohttp.ClientSession, api: ApiServer, bucket: str) -> float:
    async with client.get(api.url + "/metrics") as answer:
        scrape = await answer.text()
    prefix = f'inventory_rate_limited_total{{bucket="{bucket}"}} '
    lines = [line for line in scrape.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_account_rate_limit_on_a_real_slot(
    limited_api: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Reserves of a known slot and patient are counted inside the reserve call itself:
    the 6th within the window answers 429 with Retry-After, holds nothing, and is
    counted by bucket in the metrics; the five before it hold five units."""
    catalogue = await Catalogue(limited_api, client).create(policy={"one_per_day": False})
    schedule_id, (slot_id,), _ = await catalogue.schedule([20])
    account = uid("acct")
    patient_id = await register_patient(limited_api, client, account)
    before = await _rate_limited_count(client, limited_api, "account")

    async def reserve() -> aiohttp.ClientResponse:
        async with client.post(
            limited_api.url + "/v1/holds",
            json={"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
            headers=limited_api.headers(account)
            | {"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": _address()},
        ) as answer:
            await answer.read()
            return answer

    for _ in range(ACCOUNT_LIMIT):
        assert (await reserve()).status == 201
    refused = await reserve()
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    async with client.get(limited_api.url + f"/v1/schedules/{schedule_id}/slots") as answer:
        availability = await answer.json()
    assert [slot["remaining"] for slot in availability["items"]] == [20 - ACCOUNT_LIMIT]
    assert await _rate_limited_count(client, limited_api, "account") == before + 1


async def test_address_rate_limit(limited_api: ApiServer, client: aiohttp.ClientSession) -> None:
    """The 9th reserve from one address answers 429 whatever the account; others pass."""
    address = _address()
    for _ in range(IP_LIMIT):
        answer = await _reserve(client, limited_api, uid("acct"), address)
        assert answer.status == 404
    async with client.post(
        limited_api.url + "/v1/holds",
        json={"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"},
        headers=limited_api.headers(uid("acct"))
        | {"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": address},
    ) as answer:
        assert answer.status == 429
        retry_after = int(answer.headers["Retry-After"])
        assert (await answer.json())["code"] == "rate_limited"
    assert 1 <= retry_after <= 60
    answer = await _reserve(client, limited_api, uid("acct"), _address())
    assert answer.status == 404


async def _reserve_via(
    http: aiohttp.ClientSession, api: ApiServer, forwarded: dict[str, str] | list[tuple[str, str]]
) -> int:
    """A reserve of a missing slot with the proxy header(s) ``forwarded``: 404 when
    past the limiter, 429 when the address is over its limit."""
    headers = CIMultiDict(api.headers(uid("acct")) | {"Idempotency-Key": uuid.uuid4().hex})
    headers.extend(forwarded)
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"},
        headers=headers,
    ) as answer:
        await answer.read()
        return answer.status


async def test_address_spoofed_on_the_left_is_still_limited(
    limited_api: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Behind an appending proxy (nginx's $proxy_add_x_forwarded_for) a client that
    writes a new address of its own on the left of each request is still one address:
    the entry the proxy appended counts, and the 9th reserve answers 429."""
    real = _address()
    statuses = [
        await _reserve_via(client, limited_api, {"X-Forwarded-For": f"198.51.100.{i + 1}, {real}"})
        for i in range(IP_LIMIT + 3)
    ]
    assert statuses == [404] * IP_LIMIT + [429] * 3
    # Another real client behind the same proxy is unaffected by the spoofer.
    assert await _reserve_via(client, limited_api, {"X-Forwarded-For": _address()}) == 404


async def test_address_behind_an_overwriting_proxy(
    limited_api: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Behind a proxy that overwrites the header with one address, that address is the
    client's, and a header the proxy split into two lines is read as one list."""
    real = _address()
    statuses = [
        await _reserve_via(client, limited_api, {"X-Forwarded-For": real}) for _ in range(IP_LIMIT)
    ]
    assert statuses == [404] * IP_LIMIT
    lines = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", real)]
    assert await _reserve_via(client, limited_api, lines) == 429


async def test_malformed_client_header_falls_back_to_the_peer(
    limited_api: ApiServer, client: aiohttp.ClientSession, redis_server: Any
) -> None:
    """Garbage, an empty entry or a name in the client header counts against the peer
    address (the proxy's), never against a bucket the client picks."""
    garbage = [f"not-an-address-{i}" for i in range(IP_LIMIT)] + ["", " , ", "unknown"]
    peer_bucket = keys.rate_limit_key("ip", "127.0.0.1")
    redis = Redis.from_url(redis_server.url)
    try:
        statuses = [
            await _reserve_via(client, limited_api, {"X-Forwarded-For": value}) for value in garbage
        ]
        # They all share 127.0.0.1's bucket: it runs out within this run, and stays out.
        assert 429 in statuses
        assert statuses[statuses.index(429) :] == [429] * (len(statuses) - statuses.index(429))
        assert not await redis.exists(keys.rate_limit_key("ip", garbage[0]))
    finally:
        # Every test server of the session counts loopback in this one bucket (with
        # its own rate): this server's 8/60 must not leave it exhausted for them.
        await redis.delete(peer_bucket)
        await redis.aclose()


async def test_admission_sheds_with_503_but_never_health(
    limited_api: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Past 2 in flight, requests get 503 overloaded with a Retry-After drawn between
    INVENTORY_RETRY_AFTER_S and INVENTORY_RETRY_AFTER_MAX_S, spread (not one wave) while
    the process sheds far more than it answers; health is never shed."""
    url = limited_api.url

    async def register() -> tuple[int, str, dict[str, Any]]:
        async with client.post(
            url + "/v1/patients",
            json=patient_body(),
            headers=limited_api.headers(uid("acct")),
        ) as answer:
            return (
                answer.status,
                answer.headers.get("Retry-After", ""),
                await answer.json(content_type=None),
            )

    async def health(path: str) -> int:
        async with client.get(url + path) as answer:
            await answer.read()
            return answer.status

    registrations = [register() for _ in range(200)]
    probes = [health("/healthz" if i % 4 else "/readyz") for i in range(40)]
    results = await asyncio.gather(*registrations, *probes)
    answers = results[:200]
    health_statuses = results[200:]
    assert set(health_statuses) == {200}, health_statuses
    shed = [a for a in answers if a[0] == 503]
    assert shed, "nothing was shed at 2 in flight"
    assert {a[0] for a in answers} <= {201, 503}, {a[0] for a in answers}
    assert len(shed) < len(answers)
    for _, retry_after, body in shed:
        assert body["code"] == "overloaded", body
        assert 3 <= int(retry_after) <= 12
        assert body["retry_after_s"] == int(retry_after)
    assert len({int(retry_after) for _, retry_after, _ in shed}) > 1, shed
    async with client.get(url + "/v1/hospitals") as answer:
        assert answer.status == 200  # it recovers at once


async def test_an_admitted_patients_reserve_is_never_shed(
    limited_api: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A reserve carrying a waiting room's admission token passes a full gate (the room
    admitted its patient; a 503 would let later patients take the units first), while
    reserves without one and other requests are shed as before. The tokens here are
    forged (the slot does not exist either): the gate decides on the field alone, the
    reserve script is what refuses a forged one."""
    url = limited_api.url

    async def register() -> int:
        async with client.post(
            url + "/v1/patients", json=patient_body(), headers=limited_api.headers(uid("acct"))
        ) as answer:
            await answer.read()
            return answer.status

    async def reserve(token: str) -> tuple[int, str]:
        body = {"slot_id": "sl-none", "patient_id": "p-none", "channel": "app"}
        if token:
            body["admission_token"] = token
        async with client.post(
            url + "/v1/holds",
            json=body,
            headers=limited_api.headers(uid("acct"))
            | {"Idempotency-Key": uuid.uuid4().hex, "X-Forwarded-For": _address()},
        ) as answer:
            data = await answer.json(content_type=None)
            return answer.status, str(data.get("code"))

    admitted: list[tuple[int, str]] = []
    others: list[tuple[int, str]] = []
    for _ in range(3):
        # Six admitted reserves at a time: within the lane (four times the bound of 2).
        results = await asyncio.gather(
            *(register() for _ in range(150)),
            *(reserve("") for _ in range(30)),
            *(reserve(secrets.token_hex(20)) for _ in range(6)),
        )
        others += [(s, "") for s in results[:150]] + list(results[150:180])
        admitted += list(results[180:])
    assert any(status == 503 for status, _ in others), "the gate never filled"
    assert all(status != 503 for status, _ in admitted), admitted
    assert {code for _, code in admitted} <= {"not_found", "rate_limited"}, admitted


# -- `inventory serve --workers 2`: requests, SIGTERM, graceful stop ----------------------------


async def _status(
    http: aiohttp.ClientSession, api: ApiServer, method: str, path: str, **kwargs: Any
) -> int:
    async with http.request(
        method, api.url + path, headers=api.headers(uid("acct")), **kwargs
    ) as answer:
        await answer.read()
        return answer.status


async def _wait_for_lock_waiter(connection: asyncpg.Connection) -> None:
    """Until some other session waits for a lock (the request is inside Postgres)."""
    for _ in range(200):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'patients'::regclass"
        )
        if waiting:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the request never reached Postgres")


async def _wait_for_workers(log_path: Path, count: int) -> None:
    for _ in range(600):
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        if text.count("serving on ") >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers started:\n{text[-3000:]}")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_workers_serve_and_stop_gracefully(
    api_server: ApiServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """--workers 2 serves; on SIGTERM an in-flight request completes, exit 0, port closed."""
    port = free_port()
    env = api_server.env | {"INVENTORY_PORT": str(port)}
    server = await asyncio.to_thread(launch_api, env, tmp_path / "api.log", workers=2)
    process = server.process
    try:
        # start_api returns once one worker answers; wait for both (a worker that gets
        # SIGTERM before its handlers are installed dies of it: reported, see the report).
        await _wait_for_workers(server.log_path, 2)
        assert len(_children(process.pid)) >= 2
        for _ in range(10):
            async with client.get(server.url + "/v1/hospitals") as answer:
                assert answer.status == 200
        async with client.post(
            server.url + "/v1/patients", json=patient_body(), headers=server.headers(uid("acct"))
        ) as answer:
            assert answer.status == 201

        # A registration held up inside Postgres (a test transaction locks the table
        # against inserts) is in flight when SIGTERM comes; once the lock goes it completes.
        locker = await asyncpg.connect(api_server.database_url)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE patients IN SHARE MODE")
            in_flight = asyncio.create_task(
                _status(client, server, "POST", "/v1/patients", json=patient_body())
            )
            await _wait_for_lock_waiter(locker)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert not in_flight.done()
            await transaction.rollback()
        finally:
            await locker.close()
        assert await asyncio.wait_for(in_flight, timeout=20) == 201
        started = time.monotonic()
        code = await asyncio.to_thread(process.wait, 25)
        assert code == 0, server.log_path.read_text(errors="replace")[-2000:]
        assert time.monotonic() - started < 10
        assert not _port_open(port)
    finally:
        stop_api(process)


async def test_single_worker_exits_cleanly(
    api_server: ApiServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """One worker: SIGTERM with nothing in flight exits 0 promptly and frees the port."""
    port = free_port()
    env = api_server.env | {"INVENTORY_PORT": str(port)}
    server = await asyncio.to_thread(launch_api, env, tmp_path / "a.log")
    process = server.process
    try:
        async with client.get(server.url + "/readyz") as answer:
            assert answer.status == 200
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 25) == 0
        assert time.monotonic() - started < 10
        assert not _port_open(port)
    finally:
        stop_api(process)


def test_mint_token_refuses_bad_input() -> None:
    """mint_token refuses a subject that is not an id and a non-positive ttl."""
    settings = Settings.from_env(
        {
            "INVENTORY_JWT_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "INVENTORY_FIELD_KEYS": "f1:" + base64.b64encode(os.urandom(32)).decode(),
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": "i1:" + base64.b64encode(os.urandom(32)).decode(),
        }
    )
    with pytest.raises(ValueError, match="subject"):
        mint_token(settings, "a b", ttl_s=60)
    with pytest.raises(ValueError, match="ttl"):
        mint_token(settings, "ok", ttl_s=0)
