"""Operators for many hospitals: a hospital operator's token reaches its hospitals'
objects only (a matrix over every operator route of the route table), and every operator
action leaves exactly one entry in the append-only audit log, read back by hospital and
time as JSON or CSV.

A hospital operator of B calling any operator route on hospital A's objects gets 404,
exactly as for a missing object; the same call by A's operator is served. The matrix is
generated from ``OPERATIONS``, so a new operator route is in it the day it is declared:
its path ids are filled from hospital A's objects by parameter name
(:attr:`Hospital.ids`), its body is the document's example unless ``CALLS`` gives one.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.api.audit import is_audited
from inventory.api.auth import TokenVerifier, mint_token
from inventory.api.openapi import REQUEST_EXAMPLES
from inventory.api.routes import OPERATIONS
from inventory.api.routing import Operation

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid
from .test_errors import assert_no_server_errors, fill_path, tracking_session

OPERATOR_OPS = [op for op in OPERATIONS if op.auth == "operator"]
#: Staff routes (the front desk, a kiosk): scoped by the token's hospitals claim too.
STAFF_OPS = [op for op in OPERATIONS if op.auth == "staff"]
#: Operator routes that act on no hospital's object (queueing calculators): any operator.
HOSPITAL_FREE = frozenset({"get_capacity", "get_capacity_min_servers", "get_capacity_max_rate"})


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client; the test fails if any answer was a 5xx other than 503."""
    statuses: list[tuple[str, str, int]] = []
    async with tracking_session(statuses, connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session
    assert_no_server_errors(statuses)


class Hospital:
    """Hospital A's catalogue (made by a platform operator) and the ids a route's path
    parameters name, by parameter name."""

    def __init__(
        self, catalogue: Catalogue, schedule_id: str, slot_ids: list[str], booking_id: str
    ) -> None:
        self.catalogue = catalogue
        self.id = catalogue.hospital_id
        self.schedule_id = schedule_id
        self.slot_ids = slot_ids
        self.booking_id = booking_id
        self.ids = {
            "hospital_id": catalogue.hospital_id,
            "department_id": catalogue.department_id,
            "doctor_id": catalogue.doctor_id,
            "schedule_id": schedule_id,
            "slot_id": slot_ids[0],
            "booking_id": booking_id,
        }


async def book(api: ApiServer, http: aiohttp.ClientSession, slot_id: str) -> str:
    """A confirmed booking of ``slot_id`` by a new account (payments are off here)."""
    account = uid("acct")
    patient_id = await register_patient(api, http, account)
    headers = api.headers(account)
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": slot_id, "patient_id": patient_id, "channel": "web"},
        headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        hold = await answer.json()
        assert answer.status == 201, hold
    async with http.post(
        api.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx-scope"},
        headers=headers,
    ) as answer:
        assert answer.status == 200, await answer.text()
    return str(hold["hold_id"])


@pytest.fixture
async def hospital(api_server: ApiServer, client: aiohttp.ClientSession) -> Hospital:
    catalogue = await Catalogue(api_server, client).create()
    schedule_id, slot_ids, _ = await catalogue.schedule([3, 3])
    booking_id = await book(api_server, client, slot_ids[1])
    return Hospital(catalogue, schedule_id, slot_ids, booking_id)


def operator_of(api: ApiServer, *hospitals: str, account: str = "ops-scoped") -> dict[str, str]:
    token = mint_token(api.settings, account, operator=True, hospitals=hospitals, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def staff_of(api: ApiServer, *hospitals: str, account: str = "desk-scoped") -> dict[str, str]:
    token = mint_token(api.settings, account, staff=True, hospitals=hospitals, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def _schedule_body(h: Hospital) -> dict[str, Any]:
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    start = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
    return {
        "hospital_id": h.id,
        "department_id": h.catalogue.department_id,
        "doctor_id": h.catalogue.doctor_id,
        "visit_date": day.isoformat(),
        "session": "afternoon",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=4)).isoformat(),
        "release_at": (datetime.now(tz=UTC) - timedelta(hours=1)).isoformat(),
        "cancel_deadline": (start - timedelta(hours=12)).isoformat(),
        "fee_fen": 5000,
        "location": "Building 2, Room 301",
        "slots": [
            {
                "slot_id": uid("sl"),
                "starts_at": (start + timedelta(minutes=30 * i)).isoformat(),
                "ends_at": (start + timedelta(minutes=30 * (i + 1))).isoformat(),
                "capacity": 2,
            }
            for i in range(2)
        ],
    }


def _audit_query(h: Hospital) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "hospital_id": h.id,
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }


#: A valid call of each operator route on hospital A: (path ids overriding ``IDS``,
#: query, body). A route missing here is still in the matrix, with its body's example.
CALLS: dict[str, Callable[[Hospital], tuple[dict[str, str], dict[str, str], Any]]] = {
    "put_hospital": lambda h: ({}, {}, {"name": "Renamed Hospital"}),
    "put_department": lambda h: ({}, {}, {"hospital_id": h.id, "name": "Neurology"}),
    "put_doctor": lambda h: (
        {},
        {},
        {"hospital_id": h.id, "department_id": h.catalogue.department_id, "name": "Dr Wang"},
    ),
    "put_schedule": lambda h: ({"schedule_id": uid("s")}, {}, _schedule_body(h)),
    "put_capacity": lambda h: ({}, {}, {"capacity": 5}),
    "suspend_schedule": lambda h: ({}, {}, {"reason": "doctor_ill"}),
    "reopen_schedule": lambda h: ({}, {}, {"reason": "doctor_back"}),
    "get_department_capacity": lambda h: (
        {},
        {"from": "2026-01-01", "to": "2026-01-31", "servers": "2", "service_rate": "4"},
        None,
    ),
    "list_operator_audit": lambda h: ({}, _audit_query(h), None),
    "list_notification_dead_letters": lambda h: ({}, {"hospital_id": h.id}, None),
    "put_hospital_notifications": lambda h: ({}, {}, {"reminder_time": "07:30"}),
    "get_hospital_report": lambda h: ({}, {"from": "2026-01-01", "to": "2026-01-31"}, None),
    "get_hospital_report_plot": lambda h: (
        {},
        {"from": "2026-01-01", "to": "2026-01-31", "image": "svg"},
        None,
    ),
    "get_patient_bans": lambda h: ({"patient_id": "p-nobody"}, {}, None),
    "lift_patient_ban": lambda h: ({"patient_id": "p-nobody"}, {}, {"reason": "appeal upheld"}),
    "get_hospital_day": lambda h: (
        {},
        {"date": (datetime.now(tz=UTC) + timedelta(days=3)).date().isoformat()},
        None,
    ),
    "find_hospital_bookings": lambda h: ({}, {"booking_id": h.booking_id}, None),
    "operator_cancel_booking": lambda h: ({}, {}, {"reason": "doctor called away"}),
    "preview_suspension": lambda h: ({}, {}, None),
    "list_hospital_bans": lambda h: ({}, {}, None),
    # mark_no_show is not here: it is served once the session has begun, and hospital A's
    # is days ahead (409 no_show_too_early); tests/api/test_desk.py marks one.
}


async def call(
    http: aiohttp.ClientSession,
    api: ApiServer,
    op: Operation,
    h: Hospital,
    headers: dict[str, str],
) -> tuple[int, Any, str]:
    """Call ``op`` on hospital A's objects: (status, JSON body or text, request id)."""
    example = REQUEST_EXAMPLES.get(op.body) if op.body is not None else None
    ids, query, body = CALLS.get(op.operation_id, lambda _h: ({}, {}, example))(h)
    path = fill_path(op, **(h.ids | ids))
    if op.method == "get":
        body = None
    async with http.request(
        op.method.upper(),
        api.url + path,
        params=query,
        json=body,
        headers=headers | {"X-Request-Id": "audit-" + uuid.uuid4().hex},
    ) as answer:
        text = await answer.text()
        data: Any = await answer.json(content_type=None) if text.startswith(("{", "[")) else text
        return answer.status, data, answer.headers["X-Request-Id"]


def test_the_matrix_names_only_operator_routes() -> None:
    """The calculators exempted and the calls listed are operator routes (a stale name
    would exempt or describe nothing); the calculators name no object."""
    names = {op.operation_id for op in OPERATOR_OPS}
    assert names >= HOSPITAL_FREE
    assert set(CALLS) <= names
    assert all("{" not in op.path for op in OPERATOR_OPS if op.operation_id in HOSPITAL_FREE)


@pytest.mark.parametrize("op", OPERATOR_OPS, ids=lambda op: op.operation_id)
async def test_another_hospitals_operator_gets_404_and_the_hospitals_own_is_served(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital, op: Operation
) -> None:
    other = operator_of(api_server, uid("h-other"))
    own = operator_of(api_server, hospital.id)
    if op.operation_id in HOSPITAL_FREE:
        status, _, _ = await call(client, api_server, op, hospital, other)
        assert status not in (401, 403, 404)
        return
    status, body, _ = await call(client, api_server, op, hospital, other)
    assert status == 404, (op.operation_id, body)
    assert body["code"] == "not_found"
    if op.operation_id in CALLS:
        # Served: past the scope check (a department without bookings has no rates to
        # model, 422, as for a platform operator).
        status, body, _ = await call(client, api_server, op, hospital, own)
        assert status not in (401, 403, 404), (op.operation_id, body)
        assert status in (200, 201) or op.operation_id == "get_department_capacity", body


async def test_a_hospital_operator_cannot_create_or_move_into_another_hospital(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    """A's operator may not create a hospital it is not for, nor move A's department or
    doctor into another hospital; a platform operator may."""
    own = operator_of(api_server, hospital.id)
    stranger = uid("h-new")
    url = api_server.url
    async with client.put(
        f"{url}/v1/operator/hospitals/{stranger}", json={"name": "New"}, headers=own
    ) as answer:
        assert answer.status == 404
    platform = api_server.headers("ops-platform", operator=True)
    async with client.put(
        f"{url}/v1/operator/hospitals/{stranger}", json={"name": "New"}, headers=platform
    ) as answer:
        assert answer.status == 201
    moved = {"hospital_id": stranger, "name": "Cardiology"}
    department = hospital.catalogue.department_id
    async with client.put(
        f"{url}/v1/operator/departments/{department}", json=moved, headers=own
    ) as answer:
        assert answer.status == 404
    async with client.put(
        f"{url}/v1/operator/departments/{uid('d')}", json=moved, headers=own
    ) as answer:
        assert answer.status == 404


async def test_a_malformed_hospitals_claim_is_refused(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    """A hospitals claim that is not a list of ids refuses the token (401): read as
    "no claim" it would reach every hospital."""
    import jwt

    settings = api_server.settings
    kid = settings.signing_key_id
    now = int(datetime.now(tz=UTC).timestamp())
    for bad in ("h1", [], [1], ["a:b"], None):
        claims = {
            "sub": "ops-bad",
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "iat": now,
            "exp": now + 60,
            "roles": ["operator"],
            "hospitals": bad,
        }
        token = jwt.encode(claims, settings.jwt_keys[kid], algorithm="HS256", headers={"kid": kid})
        async with client.post(
            f"{api_server.url}/v1/operator/schedules/{hospital.schedule_id}/suspend",
            json={"reason": "x"},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer:
            assert answer.status == 401, bad


# -- staff routes ----------------------------------------------------------------------------

#: A valid call of each staff route on hospital A's booking (path ids, query, body). Every
#: staff route must be named here (the matrix below needs a booking for its path).
STAFF_CALLS: dict[str, Callable[[str], tuple[dict[str, str], dict[str, str], Any]]] = {
    "check_in_booking": lambda booking: ({"booking_id": booking}, {}, {"source": "staff"}),
}


@pytest.fixture
async def booking(api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital) -> str:
    """A confirmed booking of hospital A (its visit day three days ahead)."""
    account = uid("acct")
    headers = api_server.headers(account)
    patient = await register_patient(api_server, client, account)
    async with client.post(
        api_server.url + "/v1/holds",
        json={"slot_id": hospital.slot_ids[0], "patient_id": patient, "channel": "wechat"},
        headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        hold = await answer.json()
        assert answer.status == 201, hold
    async with client.post(
        api_server.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx-" + uuid.uuid4().hex[:8]},
        headers=headers,
    ) as answer:
        assert answer.status == 200, await answer.text()
    return str(hold["hold_id"])


async def call_staff(
    http: aiohttp.ClientSession,
    api: ApiServer,
    op: Operation,
    booking: str,
    headers: dict[str, str],
) -> tuple[int, Any, str]:
    """Call the staff route ``op`` on hospital A's ``booking``: (status, body, request id)."""
    ids, query, body = STAFF_CALLS[op.operation_id](booking)
    async with http.request(
        op.method.upper(),
        api.url + fill_path(op, **ids),
        params=query,
        json=None if op.method == "get" else body,
        headers=headers | {"X-Request-Id": "audit-" + uuid.uuid4().hex},
    ) as answer:
        data: Any = await answer.json(content_type=None)
        return answer.status, data, answer.headers["X-Request-Id"]


def test_the_staff_matrix_names_every_staff_route() -> None:
    """Every staff route has its call (a new one fails here until it is named)."""
    assert set(STAFF_CALLS) == {op.operation_id for op in STAFF_OPS}
    assert STAFF_OPS


@pytest.mark.parametrize("op", STAFF_OPS, ids=lambda op: op.operation_id)
async def test_another_hospitals_staff_gets_404_and_the_hospitals_own_is_served(
    api_server: ApiServer,
    client: aiohttp.ClientSession,
    hospital: Hospital,
    booking: str,
    op: Operation,
) -> None:
    """Staff (or an operator) whose token names another hospital get 404 for hospital A's
    booking, exactly as for a missing one; A's own staff and operators are served (past
    the scope check: a check-in before the visit day is 409 check_in_not_open); each
    call that is not a GET leaves one audit entry with its role and outcome."""
    hospital_id = hospital.id
    for headers in (staff_of(api_server, uid("h-other")), operator_of(api_server, uid("h-o"))):
        status, body, request_id = await call_staff(client, api_server, op, booking, headers)
        assert (status, body["code"]) == (404, "not_found"), (op.operation_id, body)
        if is_audited(op):
            (row,) = await audit_rows(api_server, request_id)
            assert (row["status"], row["hospital_id"]) == (404, None)
    for headers, role in (
        (staff_of(api_server, hospital_id), "staff"),
        (operator_of(api_server, hospital_id), "hospital"),
    ):
        status, body, request_id = await call_staff(client, api_server, op, booking, headers)
        assert status not in (401, 403, 404), (op.operation_id, body)
        if is_audited(op):
            (row,) = await audit_rows(api_server, request_id)
            assert (row["role"], row["status"]) == (role, status)
            assert row["hospital_id"] == hospital_id
            assert row["scope"] == [hospital_id]


# -- the audit log -----------------------------------------------------------------------------


async def audit_rows(api: ApiServer, request_id: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(api.database_url)
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    try:
        return list(
            await connection.fetch(
                "SELECT * FROM operator_audit WHERE request_id = $1 ORDER BY id", request_id
            )
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("op", OPERATOR_OPS, ids=lambda op: op.operation_id)
async def test_every_operator_action_writes_exactly_one_entry(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital, op: Operation
) -> None:
    """A served action and a refused one (another hospital's object) each leave one
    entry with their outcome; a read (GET) leaves none."""
    for headers in (operator_of(api_server, hospital.id), operator_of(api_server, "h-none")):
        status, _, request_id = await call(client, api_server, op, hospital, headers)
        rows = await audit_rows(api_server, request_id)
        if not is_audited(op):
            assert rows == []
            continue
        assert len(rows) == 1, (op.operation_id, rows)
        (row,) = rows
        assert row["status"] == status
        assert row["actor"] == "ops-scoped"
        assert row["role"] == "hospital"
        assert row["method"] == op.method.upper()
        assert row["route"] == op.path
        assert row["finished_at"] is not None
        if status in (200, 201):
            assert row["hospital_id"] == hospital.id
            assert row["after"] is not None


async def test_an_entry_holds_the_object_before_and_after(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    platform = api_server.headers("ops-platform", operator=True)
    request_id = "audit-" + uuid.uuid4().hex
    async with client.post(
        f"{api_server.url}/v1/operator/schedules/{hospital.schedule_id}/suspend",
        json={"reason": "doctor_ill"},
        headers=platform | {"X-Request-Id": request_id},
    ) as answer:
        assert answer.status == 200
    (row,) = await audit_rows(api_server, request_id)
    assert row["role"] == "platform"
    assert row["scope"] is None
    assert row["hospital_id"] == hospital.id
    assert row["object"] == {"schedule_id": hospital.schedule_id}
    assert row["before"] == {"schedule_id": hospital.schedule_id, "status": "open"}
    assert row["after"] == {"schedule_id": hospital.schedule_id, "status": "suspended"}


async def test_a_replayed_or_unauthenticated_call_adds_no_entry(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    own = operator_of(api_server, hospital.id)
    url = f"{api_server.url}/v1/operator/slots/{hospital.slot_ids[0]}/capacity"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = "audit-" + uuid.uuid4().hex
    async with client.put(
        url, json={"capacity": 4}, headers=own | key | {"X-Request-Id": first}
    ) as answer:
        assert answer.status == 200
    replay = "audit-" + uuid.uuid4().hex
    async with client.put(
        url, json={"capacity": 4}, headers=own | key | {"X-Request-Id": replay}
    ) as answer:
        assert answer.status == 200
        assert answer.headers["Idempotent-Replayed"] == "true"
    assert len(await audit_rows(api_server, first)) == 1
    assert await audit_rows(api_server, replay) == []
    anonymous = "audit-" + uuid.uuid4().hex
    async with client.put(url, json={"capacity": 4}, headers={"X-Request-Id": anonymous}) as answer:
        assert answer.status == 401
    assert await audit_rows(api_server, anonymous) == []


async def test_the_log_is_append_only(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    status, _, request_id = await call(
        client,
        api_server,
        next(op for op in OPERATOR_OPS if op.operation_id == "suspend_schedule"),
        hospital,
        operator_of(api_server, hospital.id),
    )
    assert status == 200
    (row,) = await audit_rows(api_server, request_id)
    connection = await asyncpg.connect(api_server.database_url)
    try:
        for statement in (
            "UPDATE operator_audit SET actor = 'someone-else' WHERE id = $1",
            "UPDATE operator_audit SET status = 200, after = NULL WHERE id = $1",
            "DELETE FROM operator_audit WHERE id = $1",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await connection.execute(statement, row["id"])
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await connection.execute("TRUNCATE operator_audit")
    finally:
        await connection.close()
    assert await audit_rows(api_server, request_id) == [row]


async def test_the_log_is_read_back_by_hospital_as_json_and_csv(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    own = operator_of(api_server, hospital.id)
    suspend = next(op for op in OPERATOR_OPS if op.operation_id == "suspend_schedule")
    _, _, request_id = await call(client, api_server, suspend, hospital, own)
    log_url = f"{api_server.url}/v1/operator/audit"
    query = _audit_query(hospital)
    async with client.get(log_url, params=query, headers=own) as answer:
        assert answer.status == 200
        page = await answer.json()
    mine = [item for item in page["items"] if item["request_id"] == request_id]
    assert len(mine) == 1
    assert mine[0]["hospital_id"] == hospital.id
    assert all(item["hospital_id"] == hospital.id for item in page["items"])
    async with client.get(log_url, params=query | {"format": "csv"}, headers=own) as answer:
        assert answer.status == 200
        assert answer.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await answer.text())))
    assert next(r for r in rows if r["request_id"] == request_id)["route"] == suspend.path
    # Without hospital_id a hospital operator gets its hospitals' entries only.
    async with client.get(
        log_url, params={k: v for k, v in query.items() if k != "hospital_id"}, headers=own
    ) as answer:
        assert {item["hospital_id"] for item in (await answer.json())["items"]} == {hospital.id}
    async with client.get(
        log_url, params=query, headers=operator_of(api_server, "h-elsewhere")
    ) as answer:
        assert answer.status == 404
    async with client.get(
        log_url,
        params=query | {"until": query["since"]},
        headers=own,
    ) as answer:
        assert answer.status == 422


def test_token_cli_mints_a_hospital_operator(api_server: ApiServer) -> None:
    """`inventory token --operator --hospital A --hospital B` names both hospitals;
    `--hospital` without `--operator` is refused (exit 2)."""
    command = [sys.executable, "-m", "inventory", "token", "--sub", "ops-cli"]
    made = subprocess.run(
        [*command, "--operator", "--hospital", "hosp-a", "--hospital", "hosp-b"],
        env=api_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = TokenVerifier(api_server.settings).verify(made.stdout.strip())
    assert found.hospitals == frozenset({"hosp-a", "hosp-b"})
    assert found.role == "hospital"
    refused = subprocess.run(
        [*command, "--hospital", "hosp-a"],
        env=api_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "operator" in refused.stderr


async def test_a_release_is_its_hospitals_only(
    api_server: ApiServer, client: aiohttp.ClientSession, hospital: Hospital
) -> None:
    """Another hospital's operator can neither open a waiting room on A's schedules nor
    see A's release (live view, fairness report): 404 as for a missing one."""
    schedule_id, _, _ = await hospital.catalogue.schedule([2], released=False, session="afternoon")
    own = operator_of(api_server, hospital.id)
    other = operator_of(api_server, uid("h-other"))
    url = f"{api_server.url}/v1/operator/releases"
    async with client.post(url, json={"schedule_ids": [schedule_id]}, headers=other) as answer:
        assert answer.status == 404
    async with client.post(url, json={"schedule_ids": [schedule_id]}, headers=own) as answer:
        assert answer.status == 201, await answer.text()
        release_id = (await answer.json())["release_id"]
    for path in (f"{url}/{release_id}", f"{url}/{release_id}/fairness"):
        async with client.get(path, headers=other) as answer:
            assert answer.status == 404, path
        async with client.get(path, headers=own) as answer:
            assert answer.status == 200, (path, await answer.text())
