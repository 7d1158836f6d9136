"""Idempotency-Key on the mutating routes other than a reserve, recorded in Postgres
(inventory/api/idempotency.py): concurrent duplicates run once and all get the first
answer; a different request with the key is idempotency_key_reused; refusals are not
recorded; a retry while the first still runs waits, then 409; an abandoned claim is taken
over. Against the session's API process and its real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson

from inventory.api.idempotency import ROUTES, WAIT_S, digest_of
from inventory.api.routes import OPERATIONS

from .conftest import ApiServer
from .helpers import Catalogue, patient_body, register_patient, uid

DUPLICATES = 8


async def _call(
    http: aiohttp.ClientSession,
    api: ApiServer,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
) -> tuple[int, Any, bool]:
    """Status, JSON body and whether the answer was a replay."""
    async with http.request(method, api.url + path, json=body, headers=headers) as answer:
        raw = await answer.read()
        return (
            answer.status,
            orjson.loads(raw) if raw else None,
            answer.headers.get("Idempotent-Replayed") == "true",
        )


async def test_concurrent_duplicate_registrations_run_once(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Eight copies of one registration with one key, sent at once: all answer the
    first's 201 and body, all but one as replays, and the account has one patient."""
    account = uid("acct")
    headers = api_server.headers(account) | {"Idempotency-Key": uuid.uuid4().hex}
    body = patient_body()
    answers = await asyncio.gather(
        *(_call(http, api_server, "POST", "/v1/patients", headers, body) for _ in range(DUPLICATES))
    )
    assert [(status, data) for status, data, _ in answers] == [(201, answers[0][1])] * DUPLICATES
    assert sum(replayed for _, _, replayed in answers) == DUPLICATES - 1
    status, listed, _ = await _call(http, api_server, "GET", "/v1/patients", headers)
    assert (status, len(listed["items"])) == (200, 1)


async def test_concurrent_duplicate_cancels_answer_the_same_booking(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Duplicates of a confirm, then of a cancel, each with one key, all answer 200;
    the cancels all answer the first's cancelled booking, all but one as replays."""
    catalogue = await Catalogue(api_server, http).create()
    _, (slot_id,), _ = await catalogue.schedule([2])
    account = uid("acct")
    patient_id = await register_patient(api_server, http, account)
    own = api_server.headers(account)
    status, hold, _ = await _call(
        http,
        api_server,
        "POST",
        "/v1/holds",
        own | {"Idempotency-Key": uuid.uuid4().hex},
        {"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
    )
    assert status == 201, hold
    booking_id = hold["hold_id"]
    confirm_key = own | {"Idempotency-Key": uuid.uuid4().hex}
    confirms = await asyncio.gather(
        *(
            _call(
                http,
                api_server,
                "POST",
                f"/v1/holds/{booking_id}/confirm",
                confirm_key,
                {"payment_ref": "pay-" + booking_id[-8:]},
            )
            for _ in range(DUPLICATES)
        )
    )
    assert {status for status, _, _ in confirms} == {200}, confirms[0]
    cancel_key = own | {"Idempotency-Key": uuid.uuid4().hex}
    cancels = await asyncio.gather(
        *(
            _call(http, api_server, "POST", f"/v1/bookings/{booking_id}/cancel", cancel_key, {})
            for _ in range(DUPLICATES)
        )
    )
    assert [(status, data) for status, data, _ in cancels] == [(200, cancels[0][1])] * DUPLICATES
    assert cancels[0][1]["status"] == "cancelled"
    assert sum(replayed for _, _, replayed in cancels) == DUPLICATES - 1


async def test_a_key_reused_for_another_request_is_refused(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """The key of a registration sent with another body, or on another route, answers
    422 idempotency_key_reused; another account may use the same key."""
    account = uid("acct")
    key = uuid.uuid4().hex
    headers = api_server.headers(account) | {"Idempotency-Key": key}
    status, _, _ = await _call(http, api_server, "POST", "/v1/patients", headers, patient_body())
    assert status == 201
    for method, path, body in [
        ("POST", "/v1/patients", patient_body()),
        ("POST", f"/v1/bookings/{uid('h')}/cancel", {}),
    ]:
        status, problem, _ = await _call(http, api_server, method, path, headers, body)
        assert (status, problem["code"]) == (422, "idempotency_key_reused"), problem
    other = api_server.headers(uid("acct")) | {"Idempotency-Key": key}
    status, _, replayed = await _call(
        http, api_server, "POST", "/v1/patients", other, patient_body()
    )
    assert (status, replayed) == (201, False)


async def test_a_refusal_is_not_recorded(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A department put before its hospital exists is refused (409); the same request
    with the same key, once the hospital exists, runs and succeeds."""
    operator = api_server.headers("ops", operator=True) | {"Idempotency-Key": uuid.uuid4().hex}
    hospital_id, department_id = uid("h"), uid("d")
    put = ("PUT", f"/v1/operator/departments/{department_id}")
    body = {"hospital_id": hospital_id, "name": "Cardiology"}
    status, problem, _ = await _call(http, api_server, *put, operator, body)
    assert (status, problem["code"]) == (409, "conflict"), problem
    status, _, _ = await _call(
        http,
        api_server,
        "PUT",
        f"/v1/operator/hospitals/{hospital_id}",
        api_server.headers("ops", operator=True),
        {"name": "Demo Hospital"},
    )
    assert status in (200, 201)
    status, _, replayed = await _call(http, api_server, *put, operator, body)
    assert (status, replayed) in {(200, False), (201, False)}
    again = await _call(http, api_server, *put, operator, body)
    assert again[0] == status
    assert again[2]


async def test_a_malformed_key_is_refused(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A key that is not 1-64 printable ASCII characters answers 400."""
    headers = api_server.headers(uid("acct")) | {"Idempotency-Key": "x" * 65}
    status, problem, _ = await _call(http, api_server, "POST", "/v1/patients", headers, {})
    assert (status, problem["code"]) == (400, "idempotency_key_required")


async def test_a_running_claim_makes_a_retry_wait_then_409_and_a_dead_one_is_taken_over(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A claim without an answer (its request still running) makes a retry wait and
    answer 409 idempotency_key_in_use with Retry-After; the same claim from a process
    that died minutes ago is taken over and the request runs."""
    account = uid("acct")
    body = patient_body()
    raw = orjson.dumps(body)
    digest = digest_of("POST", "/v1/patients", raw)
    connection = await asyncpg.connect(api_server.database_url)
    try:
        running, dead = uuid.uuid4().hex, uuid.uuid4().hex
        await connection.execute(
            "INSERT INTO idempotency_keys (account_id, key, operation, fingerprint, created_at)"
            " VALUES ($1, $2, 'POST /v1/patients', $4, now()),"
            " ($1, $3, 'POST /v1/patients', $4, now() - interval '10 minutes')",
            account,
            running,
            dead,
            digest,
        )
        headers = api_server.headers(account) | {"Content-Type": "application/json"}
        started = asyncio.get_running_loop().time()
        async with http.post(
            api_server.url + "/v1/patients",
            data=raw,
            headers=headers | {"Idempotency-Key": running},
        ) as answer:
            problem = await answer.json(content_type=None)
            assert (answer.status, problem["code"]) == (409, "idempotency_key_in_use")
            assert int(answer.headers["Retry-After"]) >= 1
        assert asyncio.get_running_loop().time() - started >= WAIT_S - 0.5
        async with http.post(
            api_server.url + "/v1/patients",
            data=raw,
            headers=headers | {"Idempotency-Key": dead},
        ) as answer:
            assert answer.status == 201, await answer.text()
        row = await connection.fetchrow(
            "SELECT response_status FROM idempotency_keys WHERE account_id = $1 AND key = $2",
            account,
            dead,
        )
        assert row["response_status"] == 201
    finally:
        await connection.close()


def test_every_mutating_route_but_a_reserve_and_the_notification_takes_a_key() -> None:
    """The recorded routes are every POST, PUT, PATCH and DELETE of the API except the
    reserve, the reschedule and the substitution's answer (their key names the hold or
    booking they make, in Redis), the waitlist join (its key names the entry, in Redis),
    WeChat Pay's notification (no account; de-duplicated by the payment), the login
    routes (no account yet: a key is scoped to one; a code, a refresh token serves once
    anyway) and the waiting room's open and join (keyed by themselves: the same release,
    or the same account and patient, answers the same)."""
    mutating = {
        (op.method.upper(), op.path)
        for op in OPERATIONS
        if op.method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
        and not op.path.startswith("/v1/auth/")
    }
    assert mutating - ROUTES == {
        ("POST", "/v1/holds"),
        ("POST", "/v1/bookings/{booking_id}/reschedule"),
        ("POST", "/v1/bookings/{booking_id}/substitution"),
        ("POST", "/v1/schedules/{schedule_id}/waitlist"),
        # Like a schedule's: the key names the entry inside the script's step.
        ("POST", "/v1/doctors/{doctor_id}/days/{visit_date}/waitlist"),
        # The waiting room's open and join answer the same release and ticket again
        # by themselves (no recorded key yet).
        ("POST", "/v1/operator/releases"),
        ("POST", "/v1/releases/{release_id}/tickets"),
        ("POST", "/v1/payments/wechat/notify"),
        ("POST", "/v1/operator/releases"),
        ("POST", "/v1/releases/{release_id}/tickets"),
    }
    assert mutating >= ROUTES
