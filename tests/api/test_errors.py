"""Every error the booking API can give, through a real HTTP client against the real server
process: the right status, an RFC 9457 problem+json body with a stable ``code`` (and, for
validation, each field and why), and never a 500.

Route-wide checks (wrong method, unreadable bodies, unknown fields, invalid path ids) are
generated from ``inventory.api.routes.OPERATIONS``, so a new endpoint is covered without
touching this file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from yarl import URL

from inventory.api.routes import OPERATIONS
from inventory.api.routing import Operation
from inventory.privacy.identity import make_resident_id
from inventory.store import keys

from .conftest import ApiServer
from .helpers import Catalogue, patient_body, register_patient, uid

PROBLEM = "application/problem+json"

#: A well-formed hold id that names no hold (hold and booking paths need this shape).
DUMMY_HOLD_ID = "d-none.20300101." + "a" * 24
#: A release id of the right shape naming nothing.
DUMMY_RELEASE_ID = "d-none.20991231.none"
#: Path values that can never be ids: each must answer 404 before any database.
INVALID_PATH_IDS = ("%E2%91%A0", "a" * 65, "a%20b", "%00")

BODY_OPS = [op for op in OPERATIONS if op.body is not None]
PATH_OPS = [op for op in OPERATIONS if "{" in op.path]


# -- the client ------------------------------------------------------------------------------


def tracking_session(statuses: list[tuple[str, str, int]], **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session that records (method, url, status) of every answer."""

    async def on_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        statuses.append((params.method, str(params.url), params.response.status))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return aiohttp.ClientSession(trace_configs=[trace], **kwargs)


def assert_no_server_errors(statuses: list[tuple[str, str, int]]) -> None:
    """No answer was a 5xx other than 503 (the one intended server-side status)."""
    bad = [entry for entry in statuses if entry[2] >= 500 and entry[2] != 503]
    assert not bad, f"server errors: {bad}"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client; the test fails if any answer was a 5xx (503 is never expected here)."""
    statuses: list[tuple[str, str, int]] = []
    async with tracking_session(statuses) as session:
        yield session
    assert_no_server_errors(statuses)
    assert not [s for s in statuses if s[2] == 503], statuses


async def problem(
    http: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    status: int,
    code: str,
    **kwargs: Any,
) -> dict[str, Any]:
    """Send one request; assert it is answered with a problem of ``status`` and ``code``."""
    async with http.request(method, url, **kwargs) as answer:
        raw = await answer.read()
        assert answer.status == status, (method, str(url), answer.status, raw[:500])
        assert answer.headers["Content-Type"].startswith(PROBLEM), answer.headers
        body: dict[str, Any] = orjson.loads(raw)
        retry_after = answer.headers.get("Retry-After")
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert isinstance(body["title"], str), body
    assert body["title"], body
    assert body["type"].endswith("/" + code), body
    if "retry_after_s" in body:
        assert retry_after == str(body["retry_after_s"])
    return body


def field_errors(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``errors`` of a validation problem by field (each with a reason)."""
    errors = body["errors"]
    assert errors, body
    for item in errors:
        assert isinstance(item["field"], str), item
        assert item["field"], item
        assert isinstance(item["reason"], str), item
        assert item["reason"], item
    return {item["field"]: item for item in errors}


async def ok(
    http: aiohttp.ClientSession, method: str, url: str, status: int = 200, **kwargs: Any
) -> dict[str, Any]:
    """Send one request; assert ``status`` and return the JSON body."""
    async with http.request(method, url, **kwargs) as answer:
        raw = await answer.read()
        assert answer.status == status, (method, url, answer.status, raw[:500])
    data: dict[str, Any] = orjson.loads(raw) if raw else {}
    return data


# -- building requests from OPERATIONS -------------------------------------------------------


def fill_path(op: Operation, value: str | None = None, **ids: str) -> str:
    """``op.path`` with every parameter set: from ``ids``, else ``value``, else a dummy."""
    names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
    filled = {}
    for name in names:
        if name in ids:
            filled[name] = ids[name]
        elif value is not None:
            filled[name] = value
        elif name in ("hold_id", "booking_id"):
            filled[name] = DUMMY_HOLD_ID
        elif name == "release_id":
            filled[name] = DUMMY_RELEASE_ID
        else:
            filled[name] = f"x-unknown-{name}"
    return op.path.format(**filled)


def auth_headers(api: ApiServer, op: Operation, account: str = "acct-errors") -> dict[str, str]:
    """What ``op`` needs to get past authentication (and an Idempotency-Key if it takes one)."""
    headers: dict[str, str] = {}
    if op.auth:
        headers |= api.headers(account, operator=op.auth in ("operator", "staff"))
    if op.idempotency == "required":
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers


# -- routing: unknown paths, wrong methods, invalid ids ---------------------------------------


async def test_unknown_path_is_a_problem(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """An unknown path answers 404 not_found as problem+json."""
    for path in ("/nope", "/v1", "/v1/holds/", "/v2/hospitals"):
        await problem(client, "GET", api_server.url + path, 404, "not_found")


@pytest.mark.parametrize("path", sorted({op.path for op in OPERATIONS}))
async def test_wrong_method_is_405_problem(
    api_server: ApiServer, client: aiohttp.ClientSession, path: str
) -> None:
    """A method a route does not serve answers 405 problem+json with an Allow header."""
    served = {op.method.upper() for op in OPERATIONS if op.path == path}
    url = api_server.url + fill_path(next(op for op in OPERATIONS if op.path == path))
    for method in ("PATCH", "PUT", "DELETE", "POST"):
        if method in served:
            continue
        async with client.request(method, url) as answer:
            allow = answer.headers.get("Allow", "")
        await problem(client, method, url, 405, "method_not_allowed")
        assert served <= {m.strip() for m in allow.split(",")}, (method, path, allow)


@pytest.mark.parametrize("op", PATH_OPS, ids=lambda op: op.operation_id)
async def test_invalid_path_id_is_404(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """A path value that cannot be an id answers 404 not_found (after authentication)."""
    for bad in INVALID_PATH_IDS:
        url = URL(api_server.url + fill_path(op, bad), encoded=True)
        await problem(
            client,
            op.method.upper(),
            url,
            404,
            "not_found",
            headers=auth_headers(api_server, op),
            json={},
        )


async def test_unknown_ids_are_404(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Well-formed ids naming nothing answer 404 not_found."""
    base = api_server.url
    account = api_server.headers(uid("acct"))
    op = api_server.headers("ops", operator=True)
    await problem(client, "GET", base + "/v1/hospitals/h-none/departments", 404, "not_found")
    await problem(client, "GET", base + "/v1/schedules/s-none/slots", 404, "not_found")
    await problem(
        client, "GET", base + f"/v1/holds/{DUMMY_HOLD_ID}", 404, "not_found", headers=account
    )
    await problem(
        client, "DELETE", base + f"/v1/holds/{DUMMY_HOLD_ID}", 404, "not_found", headers=account
    )
    await problem(
        client,
        "POST",
        base + f"/v1/holds/{DUMMY_HOLD_ID}/confirm",
        404,
        "not_found",
        headers=account,
        json={"payment_ref": "wx-1"},
    )
    await problem(
        client, "GET", base + f"/v1/bookings/{DUMMY_HOLD_ID}", 404, "not_found", headers=account
    )
    await problem(
        client,
        "POST",
        base + f"/v1/bookings/{DUMMY_HOLD_ID}/cancel",
        404,
        "not_found",
        headers=account,
        json={},
    )
    await problem(
        client,
        "PUT",
        base + "/v1/operator/slots/sl-none/capacity",
        404,
        "not_found",
        headers=op,
        json={"capacity": 3},
    )
    for action in ("suspend", "reopen"):
        await problem(
            client,
            "POST",
            base + f"/v1/operator/schedules/s-none/{action}",
            404,
            "not_found",
            headers=op,
            json={"reason": "doctor_ill"},
        )


# -- query strings ----------------------------------------------------------------------------


async def test_invalid_query(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Bad, missing, repeated or unknown query parameters answer 422 naming the parameter."""
    base = api_server.url + "/v1/departments/d-any/schedules"
    for query, field in (
        ("?date=2026-13-01", "date"),
        ("?date=2026-02-30", "date"),
        ("?date=tomorrow", "date"),
        ("", "date"),
        ("?date=2026-01-01&date=2026-01-02", "date"),
        ("?date=2026-01-01&debug=1", "debug"),
    ):
        body = await problem(client, "GET", base + query, 422, "validation_failed")
        assert field in field_errors(body), body
    headers = api_server.headers(uid("acct"))
    for query in ("?limit=0", "?limit=201", "?limit=abc", "?limit=1&limit=2", "?offset=3"):
        body = await problem(
            client,
            "GET",
            api_server.url + "/v1/bookings" + query,
            422,
            "validation_failed",
            headers=headers,
        )
        assert field_errors(body), body


async def test_legacy_errors_keep_their_envelope(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Legacy endpoints answer errors in their {code, message, data} envelope, same status."""
    base = api_server.url
    for path, status, error in (
        ("/api/doctor/schedule?date=2026-01-01", 422, "validation_failed"),
        ("/api/doctor/schedule?deptId=d-x&date=2026-13-01", 422, "validation_failed"),
        ("/api/doctor/schedule?deptId=bad%20id&date=2026-01-01", 422, "validation_failed"),
        ("/api/appointment/available", 422, "validation_failed"),
        ("/api/appointment/available?scheduleId=s-none", 404, "not_found"),
    ):
        async with client.get(base + path) as answer:
            assert answer.status == status, (path, answer.status)
            assert answer.content_type == "application/json"
            body = await answer.json()
        assert body["code"] == status * 100, body
        assert body["error"] == error, body
        assert body["data"] is None, body
        assert isinstance(body["message"], str), body
        assert body["message"], body
        if status == 422:
            assert body["errors"], body
    async with client.get(base + "/api/doctor/schedule?deptId=d-none&date=2026-01-01") as answer:
        assert answer.status == 200
        assert await answer.json() == {"code": 0, "message": "ok", "data": []}


# -- bodies (generated over every operation that takes one) ----------------------------------


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: op.operation_id)
async def test_unreadable_bodies_are_400(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """Wrong content type, broken JSON, over-size or absent bodies answer 400 bad_request."""
    url = api_server.url + fill_path(op)
    method = op.method.upper()

    def headers(content_type: str | None) -> dict[str, str]:
        found = auth_headers(api_server, op)
        if content_type:
            found["Content-Type"] = content_type
        return found

    cases: list[tuple[str | None, bytes]] = [
        ("text/plain", b'{"a": 1}'),
        ("application/x-www-form-urlencoded", b"a=1"),
        ("application/merge-patch+json", b"{}"),
        (None, b""),
        ("application/json", b""),
        ("application/json", b"{"),
        ("application/json", b"{'a': 1}"),
        ("application/json", b'{"a": NaN}'),
        ("application/json", b"\xff\xfe{}"),
        ("application/json", b'{"a": "\xed\xa0\x80"}'),
        ("application/json", b"[" * 2000 + b"]" * 2000),
        ("application/json", b'{"name": "' + b"x" * 20_000 + b'"}'),
    ]
    for content_type, data in cases:
        await problem(
            client, method, url, 400, "bad_request", data=data, headers=headers(content_type)
        )


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: op.operation_id)
async def test_bodies_of_the_wrong_shape_are_422(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """Valid JSON that is not the operation's object answers 422 validation_failed."""
    url = api_server.url + fill_path(op)
    for data in ([], [1, 2], "text", 12, None, True):
        body = await problem(
            client,
            op.method.upper(),
            url,
            422,
            "validation_failed",
            data=orjson.dumps(data),
            headers=auth_headers(api_server, op) | {"Content-Type": "application/json"},
        )
        assert field_errors(body)


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: op.operation_id)
async def test_unknown_fields_are_refused(
    api_server: ApiServer, client: aiohttp.ClientSession, op: Operation
) -> None:
    """Mass assignment: a field the operation does not take answers 422 naming it."""
    assert op.body is not None
    url = api_server.url + fill_path(op)
    for field in ("account_id", "state", "status", "amount_fen", "roles", "__proto__"):
        if field in op.body.model_fields:
            continue
        body = await problem(
            client,
            op.method.upper(),
            url,
            422,
            "validation_failed",
            json={field: "x"},
            headers=auth_headers(api_server, op),
        )
        assert field in field_errors(body), (field, body)


async def test_mass_assignment_on_a_valid_hold(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A valid reserve plus account_id, state or amount_fen is refused and takes nothing."""
    cat = await Catalogue(api_server, client).create()
    schedule_id, slots, _ = await cat.schedule([1])
    account = uid("acct")
    patient_id = await register_patient(api_server, client, account)
    good = {"slot_id": slots[0], "patient_id": patient_id, "channel": "app"}
    for extra in ({"account_id": "someone-else"}, {"state": "booked"}, {"amount_fen": 0}):
        body = await problem(
            client,
            "POST",
            api_server.url + "/v1/holds",
            422,
            "validation_failed",
            json=good | extra,
            headers=api_server.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
        )
        assert set(extra) <= set(field_errors(body))
    availability = await ok(client, "GET", api_server.url + f"/v1/schedules/{schedule_id}/slots")
    assert availability["items"][0]["remaining"] == 1


async def test_idempotency_key_required(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A reserve without a usable Idempotency-Key answers 400 idempotency_key_required."""
    headers = api_server.headers(uid("acct"))
    body = {"slot_id": "sl-x", "patient_id": "p-x", "channel": "app"}
    for key in (None, "", "a" * 65, "has space", "ключ"):
        sent = dict(headers)
        if key is not None:
            sent["Idempotency-Key"] = key
        await problem(
            client,
            "POST",
            api_server.url + "/v1/holds",
            400,
            "idempotency_key_required",
            json=body,
            headers=sent,
        )


# -- patients --------------------------------------------------------------------------------

_FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９x")
_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _id_ending_in_x(born: date) -> str:
    for seq in range(500):
        found = make_resident_id(born, "male", seq=seq)
        if found.endswith("X"):
            return found
    raise AssertionError("no check character X for this date")  # pragma: no cover


async def test_patient_validation(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Each personal-data rule answers 422 with field, reason and code; the input is not echoed."""
    url = api_server.url + "/v1/patients"
    headers = api_server.headers(uid("acct"))
    good = patient_body()
    rid = good["resident_id"]
    wrong_check = rid[:17] + ("0" if rid[17] != "0" else "1")
    other_born = date.fromisoformat(good["birth_date"]) + timedelta(days=1)
    cases = [
        ({"resident_id": wrong_check}, "resident_id", "resident_id_checksum"),
        (
            {"resident_id": rid.translate(_ARABIC_INDIC)},
            "resident_id",
            "resident_id_non_ascii_digit",
        ),
        ({"resident_id": rid[:6] + "2099" + rid[10:]}, "resident_id", None),
        ({"birth_date": other_born.isoformat()}, "birth_date", "birth_date_mismatch"),
        ({"gender": "female"}, "gender", "gender_mismatch"),
        ({"phone": "12345678901"}, "phone", "phone_format"),
        ({"phone": "138123456789"}, "phone", "phone_format"),
        ({"phone": "138١٢٣٤٥٦٧٨"}, "phone", "phone_format"),
        ({"name": "张三123"}, "name", "name_format"),
    ]
    for change, field, code in cases:
        body = await problem(
            client, "POST", url, 422, "validation_failed", json=good | change, headers=headers
        )
        errors = field_errors(body)
        assert field in errors, (change, body)
        if code is not None:
            assert errors[field]["code"] == code, (change, body)
        text = orjson.dumps(body).decode()
        for value in change.values():
            assert value not in text, (change, body)
    for change, field in (
        ({"gender": "other"}, "gender"),
        ({"birth_date": "1990-02-30"}, "birth_date"),
        ({"relation": "boss"}, "relation"),
        ({"resident_id": rid[:15]}, "resident_id"),
        ({"name": ""}, "name"),
    ):
        body = await problem(
            client, "POST", url, 422, "validation_failed", json=good | change, headers=headers
        )
        assert field in field_errors(body), (change, body)
    for missing in ("name", "gender", "birth_date", "phone", "resident_id"):
        body = await problem(
            client,
            "POST",
            url,
            422,
            "validation_failed",
            json={k: v for k, v in good.items() if k != missing},
            headers=headers,
        )
        assert missing in field_errors(body)


async def test_full_width_and_lowercase_x_are_the_same_patient(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """Full-width digits and a lowercase x name the same patient as the ASCII form (200)."""
    born = date(1975, 6, 15) + timedelta(days=uuid.uuid4().int % 3000)
    rid = _id_ending_in_x(born)
    body = patient_body(birth_date=born.isoformat(), gender="male", resident_id=rid)
    headers = api_server.headers(uid("acct"))
    url = api_server.url + "/v1/patients"
    first = await ok(
        client,
        "POST",
        url,
        201,
        json=body | {"resident_id": rid.translate(_FULL_WIDTH)},
        headers=headers,
    )
    second = await ok(client, "POST", url, 200, json=body, headers=headers)
    third = await ok(
        client, "POST", url, 200, json=body | {"resident_id": rid.lower()}, headers=headers
    )
    assert first["patient_id"] == second["patient_id"] == third["patient_id"]
    assert rid not in orjson.dumps([first, second, third]).decode()
    listed = await ok(client, "GET", url, headers=headers)
    assert [p["patient_id"] for p in listed["items"]] == [first["patient_id"]]


async def test_same_id_with_another_name_is_refused(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """An ID number registered with another name answers 409 patient_identity_mismatch."""
    body = patient_body()
    url = api_server.url + "/v1/patients"
    await ok(client, "POST", url, 201, json=body, headers=api_server.headers(uid("acct")))
    answer = await problem(
        client,
        "POST",
        url,
        409,
        "patient_identity_mismatch",
        json=body | {"name": "李四"},
        headers=api_server.headers(uid("acct")),
    )
    assert "patient_id" not in answer


# -- the store's refusals through HTTP --------------------------------------------------------


async def put_schedule(
    cat: Catalogue,
    *,
    starts_at: datetime,
    release_at: datetime,
    cancel_deadline: datetime,
    capacities: list[int],
) -> tuple[str, list[str]]:
    """A schedule with explicit instants (4 hours long, 30-minute slots)."""
    schedule_id = uid("s")
    slots = [
        {
            "slot_id": uid("sl"),
            "starts_at": (starts_at + timedelta(minutes=30 * i)).isoformat(),
            "ends_at": (starts_at + timedelta(minutes=30 * (i + 1))).isoformat(),
            "capacity": cap,
        }
        for i, cap in enumerate(capacities)
    ]
    await cat.put(
        f"/v1/operator/schedules/{schedule_id}",
        {
            "hospital_id": cat.hospital_id,
            "department_id": cat.department_id,
            "doctor_id": cat.doctor_id,
            "visit_date": starts_at.date().isoformat(),
            "session": "morning",
            "starts_at": starts_at.isoformat(),
            "ends_at": (starts_at + timedelta(hours=4)).isoformat(),
            "release_at": release_at.isoformat(),
            "cancel_deadline": cancel_deadline.isoformat(),
            "fee_fen": 5000,
            "slots": slots,
        },
    )
    return schedule_id, [s["slot_id"] for s in slots]


class Booker:
    """One account with its own patients, reserving through HTTP."""

    def __init__(self, api: ApiServer, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.http = http
        self.account = uid("acct")
        self.headers = api.headers(self.account)

    async def patient(self) -> str:
        return await register_patient(self.api, self.http, self.account)

    async def reserve(
        self, slot_id: str, patient_id: str, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            self.api.url + "/v1/holds",
            json={"slot_id": slot_id, "patient_id": patient_id, "channel": "wechat"},
            headers=self.headers | {"Idempotency-Key": key or uuid.uuid4().hex},
        ) as answer:
            return answer.status, await answer.json(content_type=None)

    async def hold(self, slot_id: str, patient_id: str | None = None) -> dict[str, Any]:
        status, body = await self.reserve(slot_id, patient_id or await self.patient())
        assert status == 201, body
        return body

    def url(self, path: str) -> str:
        return self.api.url + path


async def test_reserve_refusals(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Reserve refusals (not_released, sold_out, patient_rule, ...) with status and code."""
    cat = await Catalogue(api_server, client).create()
    booker = Booker(api_server, client)
    now = datetime.now(tz=UTC)
    url = booker.url("/v1/holds")

    _, future_slots, _ = await cat.schedule([1], released=False)
    patient = await booker.patient()
    body = await problem(
        client,
        "POST",
        url,
        409,
        "not_released",
        json={"slot_id": future_slots[0], "patient_id": patient, "channel": "app"},
        headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert body["release_ms"] > time.time() * 1000

    _, past_slots = await put_schedule(
        cat,
        starts_at=now - timedelta(hours=1),
        release_at=now - timedelta(days=1),
        cancel_deadline=now - timedelta(hours=2),
        capacities=[1],
    )
    await problem(
        client,
        "POST",
        url,
        409,
        "schedule_past",
        json={"slot_id": past_slots[0], "patient_id": patient, "channel": "app"},
        headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )

    _, slots, _ = await cat.schedule([1, 2, 2], visit_date=(now + timedelta(days=5)).date())
    await booker.hold(slots[0])
    await problem(
        client,
        "POST",
        url,
        409,
        "sold_out",
        json={"slot_id": slots[0], "patient_id": await booker.patient(), "channel": "app"},
        headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )

    same = await booker.patient()
    await booker.hold(slots[1], same)
    body = await problem(
        client,
        "POST",
        url,
        409,
        "patient_rule",
        json={"slot_id": slots[2], "patient_id": same, "channel": "app"},
        headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert body["rule"] == "one_per_day"

    key = uuid.uuid4().hex
    other = await booker.patient()
    status, first = await booker.reserve(slots[2], other, key)
    assert status == 201, first
    status, replay = await booker.reserve(slots[2], other, key)
    assert (status, replay["hold_id"]) == (201, first["hold_id"])
    await problem(
        client,
        "POST",
        url,
        422,
        "idempotency_key_reused",
        json={"slot_id": slots[1], "patient_id": other, "channel": "wechat"},
        headers=booker.headers | {"Idempotency-Key": key},
    )

    stranger = Booker(api_server, client)
    for slot_id, patient_id in (("sl-none", other), (slots[2], await stranger.patient())):
        await problem(
            client,
            "POST",
            url,
            404,
            "not_found",
            json={"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
            headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
        )


async def test_reserve_refused_over_the_7_day_limit(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A hospital allowing one booking within 7 days: a patient's second hold 3 days
    from the first is refused with patient_weekly_limit (Chinese by default, English on
    request); one 7 days from it is taken."""
    cat = await Catalogue(api_server, client).create(policy={"max_in_7_days_per_patient": 1})
    booker = Booker(api_server, client)
    first_day = (datetime.now(tz=UTC) + timedelta(days=2)).date()
    slots_by_day = [
        (await cat.schedule([3], visit_date=first_day + timedelta(days=offset)))[1][0]
        for offset in (0, 3, 7)
    ]
    patient = await booker.patient()
    await booker.hold(slots_by_day[0], patient)
    for language, title in (("zh-CN", "该就诊人 7 天内的预约数已达上限"), ("en", None)):
        body = await problem(
            client,
            "POST",
            booker.url("/v1/holds"),
            409,
            "patient_weekly_limit",
            json={"slot_id": slots_by_day[1], "patient_id": patient, "channel": "app"},
            headers=booker.headers
            | {"Idempotency-Key": uuid.uuid4().hex, "Accept-Language": language},
        )
        assert (body["rule"], body["limit"]) == ("max_in_7_days", 1)
        assert body["title"] == (title or "The patient has the most bookings allowed within 7 days")
    await booker.hold(slots_by_day[2], patient)


async def test_hold_lifecycle_refusals(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """hold_not_active, already_confirmed, DELETE of a booking (422), cancel of a hold (404)."""
    cat = await Catalogue(api_server, client).create()
    _, slots, _ = await cat.schedule([3])
    booker = Booker(api_server, client)

    hold = await booker.hold(slots[0])
    hold_url = booker.url(f"/v1/holds/{hold['hold_id']}")
    await problem(
        client,
        "POST",
        booker.url(f"/v1/bookings/{hold['hold_id']}/cancel"),
        404,
        "not_found",
        json={},
        headers=booker.headers,
    )
    await problem(
        client,
        "GET",
        booker.url(f"/v1/bookings/{hold['hold_id']}"),
        404,
        "not_found",
        headers=booker.headers,
    )
    released = await ok(client, "DELETE", hold_url, headers=booker.headers)
    assert released["state"] == "released"
    again = await ok(client, "DELETE", hold_url, headers=booker.headers)
    assert again["state"] == "released"
    body = await problem(
        client,
        "POST",
        hold_url + "/confirm",
        409,
        "hold_not_active",
        json={"payment_ref": "wx-1"},
        headers=booker.headers,
    )
    assert body["state"] == "released"

    booked = await booker.hold(slots[0])
    confirm = booker.url(f"/v1/holds/{booked['hold_id']}/confirm")
    await ok(client, "POST", confirm, json={"payment_ref": "wx-2"}, headers=booker.headers)
    replay = await ok(client, "POST", confirm, json={"payment_ref": "wx-2"}, headers=booker.headers)
    assert replay["status"] == "confirmed"
    await problem(
        client,
        "POST",
        confirm,
        409,
        "already_confirmed",
        json={"payment_ref": "wx-other"},
        headers=booker.headers,
    )
    body = await problem(
        client,
        "DELETE",
        booker.url(f"/v1/holds/{booked['hold_id']}"),
        422,
        "validation_failed",
        headers=booker.headers,
    )
    assert "hold_id" in field_errors(body)
    for bad in ({"payment_ref": ""}, {"payment_ref": "a b"}, {}):
        await problem(
            client, "POST", confirm, 422, "validation_failed", json=bad, headers=booker.headers
        )
    await problem(
        client,
        "POST",
        booker.url(f"/v1/bookings/{booked['hold_id']}/cancel"),
        422,
        "validation_failed",
        json={"reason": "Not Allowed!"},
        headers=booker.headers,
    )


async def test_hold_expired(
    api_server: ApiServer, client: aiohttp.ClientSession, redis_server: Any
) -> None:
    """A hold past its payment deadline answers 409 hold_expired on confirm and release."""
    # The shortest policy TTL is 60 s, so the test moves the hold's deadline into the
    # past in its Redis record (the clock that judges deadlines is Redis's TIME).
    cat = await Catalogue(api_server, client).create(policy={"hold_ttl_s": 60})
    _, slots, _ = await cat.schedule([2])
    booker = Booker(api_server, client)
    holds = [await booker.hold(slots[0]), await booker.hold(slots[0])]
    deadline = datetime.fromisoformat(holds[0]["deadline"])
    created = datetime.fromisoformat(holds[0]["created_at"])
    assert 55 <= (deadline - created).total_seconds() <= 65
    redis = aioredis.from_url(api_server.env["INVENTORY_REDIS_URL"])
    try:
        for hold in holds:
            hash_key = keys.tag_keys(keys.tag_of_hold(hold["hold_id"])).holds
            record = orjson.loads(await redis.hget(hash_key, hold["hold_id"]))
            record["deadline"] = int(time.time() * 1000) - 1000
            await redis.hset(hash_key, hold["hold_id"], orjson.dumps(record))
    finally:
        await redis.aclose()
    await problem(
        client,
        "POST",
        booker.url(f"/v1/holds/{holds[0]['hold_id']}/confirm"),
        409,
        "hold_expired",
        json={"payment_ref": "wx-late"},
        headers=booker.headers,
    )
    await problem(
        client,
        "DELETE",
        booker.url(f"/v1/holds/{holds[1]['hold_id']}"),
        409,
        "hold_expired",
        headers=booker.headers,
    )
    seen = await ok(
        client, "GET", booker.url(f"/v1/holds/{holds[0]['hold_id']}"), headers=booker.headers
    )
    assert seen["state"] == "expired"


async def test_cancel_deadline_passed(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Cancelling after the cancellation deadline answers 409 cancel_deadline_passed."""
    cat = await Catalogue(api_server, client).create()
    now = datetime.now(tz=UTC)
    _, slots = await put_schedule(
        cat,
        starts_at=now + timedelta(days=2),
        release_at=now - timedelta(hours=1),
        cancel_deadline=now - timedelta(minutes=1),
        capacities=[1],
    )
    booker = Booker(api_server, client)
    hold = await booker.hold(slots[0])
    await ok(
        client,
        "POST",
        booker.url(f"/v1/holds/{hold['hold_id']}/confirm"),
        json={"payment_ref": "wx-3"},
        headers=booker.headers,
    )
    body = await problem(
        client,
        "POST",
        booker.url(f"/v1/bookings/{hold['hold_id']}/cancel"),
        409,
        "cancel_deadline_passed",
        json={},
        headers=booker.headers,
    )
    assert body["deadline_ms"] <= time.time() * 1000
    booking = await ok(
        client, "GET", booker.url(f"/v1/bookings/{hold['hold_id']}"), headers=booker.headers
    )
    assert booking["status"] == "confirmed"


async def test_suspend_and_reopen(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """A suspended schedule refuses reserve and confirm (409 schedule_suspended) until reopened."""
    cat = await Catalogue(api_server, client).create()
    schedule_id, slots, _ = await cat.schedule([3])
    booker = Booker(api_server, client)
    hold = await booker.hold(slots[0])
    suspend = booker.url(f"/v1/operator/schedules/{schedule_id}/suspend")
    answer = await ok(client, "POST", suspend, json={"reason": "doctor_ill"}, headers=cat.op)
    assert answer == {"schedule_id": schedule_id, "status": "suspended"}
    patient = await booker.patient()
    await problem(
        client,
        "POST",
        booker.url("/v1/holds"),
        409,
        "schedule_suspended",
        json={"slot_id": slots[0], "patient_id": patient, "channel": "app"},
        headers=booker.headers | {"Idempotency-Key": uuid.uuid4().hex},
    )
    await problem(
        client,
        "POST",
        booker.url(f"/v1/holds/{hold['hold_id']}/confirm"),
        409,
        "schedule_suspended",
        json={"payment_ref": "wx-4"},
        headers=booker.headers,
    )
    await problem(
        client,
        "POST",
        suspend,
        422,
        "validation_failed",
        json={"reason": "Doctor ill"},
        headers=cat.op,
    )
    reopen = booker.url(f"/v1/operator/schedules/{schedule_id}/reopen")
    answer = await ok(client, "POST", reopen, json={"reason": "doctor_back"}, headers=cat.op)
    assert answer["status"] == "open"
    await booker.hold(slots[0], patient)
    await ok(
        client,
        "POST",
        booker.url(f"/v1/holds/{hold['hold_id']}/confirm"),
        json={"payment_ref": "wx-4"},
        headers=booker.headers,
    )


async def test_capacity_below_taken(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Capacity below the units taken answers 409 capacity_below_taken; 加号 above works."""
    cat = await Catalogue(api_server, client).create()
    schedule_id, slots, _ = await cat.schedule([2, 1])
    booker = Booker(api_server, client)
    await booker.hold(slots[0])
    await booker.hold(slots[0])
    url = booker.url(f"/v1/operator/slots/{slots[0]}/capacity")
    for capacity in (0, 1):
        await problem(
            client,
            "PUT",
            url,
            409,
            "capacity_below_taken",
            json={"capacity": capacity},
            headers=cat.op,
        )
    for bad in (-1, 10_001, "three", 2.5, None, [3]):
        body = await problem(
            client, "PUT", url, 422, "validation_failed", json={"capacity": bad}, headers=cat.op
        )
        assert "capacity" in field_errors(body)
    view = await ok(client, "PUT", url, json={"capacity": 5}, headers=cat.op)
    assert [(s["capacity"], s["remaining"]) for s in view["items"]] == [(5, 3), (1, 1)]
    assert view["schedule_id"] == schedule_id


async def test_operator_refusals(api_server: ApiServer, client: aiohttp.ClientSession) -> None:
    """Broken references answer 409 conflict; impossible schedules and policies 422."""
    base = api_server.url
    cat = await Catalogue(api_server, client).create()
    op = cat.op
    for path, body in (
        (f"/v1/operator/departments/{uid('d')}", {"hospital_id": "h-none", "name": "X"}),
        (
            f"/v1/operator/departments/{uid('d')}",
            {"hospital_id": cat.hospital_id, "parent_id": "d-none", "name": "X"},
        ),
        (
            f"/v1/operator/doctors/{uid('doc')}",
            {"hospital_id": "h-none", "department_id": cat.department_id, "name": "X"},
        ),
        (
            f"/v1/operator/doctors/{uid('doc')}",
            {"hospital_id": cat.hospital_id, "department_id": "d-none", "name": "X"},
        ),
    ):
        await problem(client, "PUT", base + path, 409, "conflict", json=body, headers=op)

    now = datetime.now(tz=UTC)
    start = (now + timedelta(days=4)).replace(hour=1, minute=0, second=0, microsecond=0)
    schedule = {
        "hospital_id": cat.hospital_id,
        "department_id": cat.department_id,
        "doctor_id": cat.doctor_id,
        "visit_date": start.date().isoformat(),
        "session": "morning",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=4)).isoformat(),
        "release_at": (now - timedelta(hours=1)).isoformat(),
        "cancel_deadline": (start - timedelta(hours=12)).isoformat(),
        "fee_fen": 5000,
        "slots": [
            {
                "slot_id": uid("sl"),
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=30)).isoformat(),
                "capacity": 2,
            }
        ],
    }
    url = base + f"/v1/operator/schedules/{uid('s')}"
    for reference in ("hospital_id", "department_id", "doctor_id"):
        await problem(
            client, "PUT", url, 409, "conflict", json=schedule | {reference: "x-none"}, headers=op
        )
    slot = schedule["slots"][0]
    later = (start + timedelta(hours=1)).isoformat()
    for change, field in (
        ({"ends_at": start.isoformat()}, "ends_at"),
        ({"release_at": later}, "release_at"),
        ({"cancel_deadline": (start + timedelta(hours=5)).isoformat()}, "cancel_deadline"),
        ({"starts_at": start.replace(tzinfo=None).isoformat()}, "starts_at"),
        ({"slots": [slot, slot]}, "slots.1.slot_id"),
        ({"slots": [slot | {"ends_at": start.isoformat()}]}, "slots.0.ends_at"),
        ({"slots": []}, "slots"),
        ({"session": "night"}, "session"),
        ({"fee_fen": -1}, "fee_fen"),
        ({"visit_date": "2026-13-01"}, "visit_date"),
    ):
        body = await problem(
            client, "PUT", url, 422, "validation_failed", json=schedule | change, headers=op
        )
        assert field in field_errors(body), (change, body)

    hospital = base + f"/v1/operator/hospitals/{uid('h')}"
    for change, field in (
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"policy": {"hold_ttl_s": 10}}, "policy.hold_ttl_s"),
        ({"policy": {"surprise": 1}}, "policy.surprise"),
        ({"name": ""}, "name"),
    ):
        body = await problem(
            client,
            "PUT",
            hospital,
            422,
            "validation_failed",
            json={"name": "H"} | change,
            headers=op,
        )
        assert field in field_errors(body), (change, body)
    created = await ok(client, "PUT", hospital, 201, json={"name": "H"}, headers=op)
    replaced = await ok(client, "PUT", hospital, 200, json={"name": "H2"}, headers=op)
    assert (created["name"], replaced["name"]) == ("H", "H2")

    schedule_id, slots, _ = await cat.schedule([1])
    other = await Catalogue(api_server, client).create()
    moved = schedule | {
        "hospital_id": other.hospital_id,
        "department_id": other.department_id,
        "doctor_id": other.doctor_id,
    }
    # A slot of another schedule, and a schedule moved to another department.
    for path, body in (
        (f"/v1/operator/schedules/{uid('s')}", moved | {"slots": [slot | {"slot_id": slots[0]}]}),
        (f"/v1/operator/schedules/{schedule_id}", moved),
    ):
        await problem(client, "PUT", base + path, 409, "conflict", json=body, headers=op)


async def test_body_arriving_in_pieces_is_read_whole(
    api_server: ApiServer, client: aiohttp.ClientSession
) -> None:
    """A body that arrives in two TCP segments is read whole (a slow mobile client)."""
    body = orjson.dumps(patient_body())
    head = (
        "POST /v1/patients HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {api_server.token(uid('acct'))}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(api_server.env["INVENTORY_PORT"])
    )
    try:
        writer.write(head + body[:10])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body[10:])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=15)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 201 "), response[:400]


async def test_nul_in_free_text_is_422(api_server: ApiServer) -> None:
    """A NUL character in any free-text field answers 422 validation_failed, not 500."""
    async with aiohttp.ClientSession() as http:
        cat = await Catalogue(api_server, http).create()
        now = datetime.now(tz=UTC)
        start = now + timedelta(days=2)
        schedule = {
            "hospital_id": cat.hospital_id,
            "department_id": cat.department_id,
            "doctor_id": cat.doctor_id,
            "visit_date": start.date().isoformat(),
            "session": "morning",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
            "release_at": now.isoformat(),
            "cancel_deadline": now.isoformat(),
            "fee_fen": 0,
            "location": "Room\x00301",
            "slots": [
                {
                    "slot_id": uid("sl"),
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=1)).isoformat(),
                    "capacity": 1,
                }
            ],
        }
        doctor = {"hospital_id": cat.hospital_id, "department_id": cat.department_id}
        for path, body in (
            (f"/v1/operator/hospitals/{uid('h')}", {"name": "H\x00"}),
            (
                f"/v1/operator/departments/{uid('d')}",
                {"hospital_id": cat.hospital_id, "name": "D\x00"},
            ),
            (f"/v1/operator/doctors/{uid('doc')}", doctor | {"name": "Dr\x00"}),
            (f"/v1/operator/doctors/{uid('doc')}", doctor | {"name": "Dr", "title": "\x00"}),
            (f"/v1/operator/schedules/{uid('s')}", schedule),
        ):
            await problem(
                http,
                "PUT",
                api_server.url + path,
                422,
                "validation_failed",
                json=body,
                headers=cat.op,
            )
