"""Strict types at the edge, through the real API process: dates in query strings are
``YYYY-MM-DD`` only, JSON bodies are validated in pydantic's strict mode (a JSON
integer is no boolean and the reverse, a number is no date), every 422 names the field
to change, and the bounds the handlers enforce are in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import ApiServer
from .helpers import Catalogue, uid
from .test_errors import field_errors, problem

NOT_DAYS = ("0", "1700000000", "20260101", "2026-1-1", "2026-01-01T00:00:00", "+2026-01-01")


@pytest.mark.parametrize("value", NOT_DAYS)
async def test_query_dates_are_yyyy_mm_dd(
    api_server: ApiServer, http: aiohttp.ClientSession, value: str
) -> None:
    """``?date=0`` (once read as 1970-01-01) and other non-dates answer 422 naming
    the parameter, on the schedules route, the legacy route and the capacity route."""
    base = api_server.url
    body = await problem(
        http,
        "GET",
        base + "/v1/departments/d-any/schedules",
        422,
        "validation_failed",
        params={"date": value},
    )
    assert "date" in field_errors(body)
    async with http.get(
        base + "/api/doctor/schedule", params={"deptId": "d-any", "date": value}
    ) as answer:
        assert answer.status == 422
        assert (await answer.json())["code"] == 42200
    op = api_server.headers("ops", operator=True)
    body = await problem(
        http,
        "GET",
        base + "/v1/operator/departments/d-any/capacity",
        422,
        "validation_failed",
        params={"from": value, "to": "2026-01-02", "servers": "2"},
        headers=op,
    )
    assert "from" in field_errors(body)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"one_per_day": 0}, "policy.one_per_day"),
        ({"one_per_day": False, "blacklist": 1}, "policy.blacklist"),
        ({"blacklist": "true"}, "policy.blacklist"),
        ({"hold_ttl_s": True}, "policy.hold_ttl_s"),
        ({"hold_ttl_s": 900.0}, "policy.hold_ttl_s"),
        ({"max_open_per_patient": "3"}, "policy.max_open_per_patient"),
        ({"hold_ttl_s": 900, "max_hold_s": 600}, "policy.max_hold_s"),
        ({"rerelease_min_s": 60, "rerelease_max_s": 30}, "policy.rerelease_max_s"),
    ],
)
async def test_hospital_policy_types_do_not_cross_over(
    api_server: ApiServer, http: aiohttp.ClientSession, policy: dict[str, Any], field: str
) -> None:
    """An integer where a boolean belongs (an operator's typo that would switch a rule
    off), a boolean or a float where an integer belongs, text for either, and the rules
    between two fields: 422 naming the policy field; nothing is written."""
    url = api_server.url + f"/v1/operator/hospitals/{uid('h')}"
    op = api_server.headers("ops", operator=True)
    body = await problem(
        http, "PUT", url, 422, "validation_failed", json={"name": "H", "policy": policy}, headers=op
    )
    assert field in field_errors(body), body
    async with http.get(api_server.url + "/v1/hospitals") as answer:
        listed = {h["hospital_id"] for h in (await answer.json())["items"]}
    assert url.rsplit("/", 1)[1] not in listed


async def test_hospital_policy_with_json_types_is_kept(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """JSON booleans and integers are accepted and kept as sent."""
    policy = {"one_per_day": False, "blacklist": True, "hold_ttl_s": 600, "max_hold_s": 600}
    async with http.put(
        api_server.url + f"/v1/operator/hospitals/{uid('h')}",
        json={"name": "H", "policy": policy},
        headers=api_server.headers("ops", operator=True),
    ) as answer:
        data = await answer.json()
        assert answer.status == 201, data
    assert {name: data["policy"][name] for name in policy} == policy


async def test_schedule_body_types_are_strict(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A schedule whose fee is text, whose capacity is a float or whose visit date or
    instant is a number answers 422 naming that field."""
    cat = await Catalogue(api_server, http).create()
    schedule_id, _, day = await cat.schedule([1])
    base = {
        "hospital_id": cat.hospital_id,
        "department_id": cat.department_id,
        "doctor_id": cat.doctor_id,
        "visit_date": day.isoformat(),
        "session": "morning",
        "starts_at": f"{day.isoformat()}T01:00:00+00:00",
        "ends_at": f"{day.isoformat()}T05:00:00+00:00",
        "release_at": "2020-01-01T00:00:00+00:00",
        "cancel_deadline": f"{day.isoformat()}T00:00:00+00:00",
        "fee_fen": 5000,
        "slots": [
            {
                "slot_id": uid("sl"),
                "starts_at": f"{day.isoformat()}T01:00:00+00:00",
                "ends_at": f"{day.isoformat()}T01:30:00+00:00",
                "capacity": 1,
            }
        ],
    }
    url = api_server.url + f"/v1/operator/schedules/{uid('s')}"
    op = api_server.headers("ops", operator=True)
    slot = base["slots"][0]
    for change, field in (
        ({"fee_fen": "5000"}, "fee_fen"),
        ({"visit_date": 0}, "visit_date"),
        ({"release_at": 0}, "release_at"),
        ({"slots": [slot | {"capacity": 1.0}]}, "slots.0.capacity"),
        ({"slots": [slot | {"capacity": True}]}, "slots.0.capacity"),
    ):
        body = await problem(
            http, "PUT", url, 422, "validation_failed", json=base | change, headers=op
        )
        assert field in field_errors(body), (change, body)
    assert schedule_id  # the catalogue's own schedule was made with JSON types


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/operator/capacity?arrival_rate=1&service_rate=-1&servers=3", "service_rate"),
        ("/v1/operator/capacity?arrival_rate=1&service_rate=nan&servers=3", "service_rate"),
        ("/v1/operator/capacity?arrival_rate=1&service_rate=4&servers=0", "servers"),
        ("/v1/operator/capacity?arrival_rate=inf&service_rate=4&servers=3", "arrival_rate"),
        (
            "/v1/operator/capacity/min-servers?arrival_rate=-1&service_rate=4&max_wait_minutes=6",
            "arrival_rate",
        ),
        (
            "/v1/operator/capacity/min-servers?arrival_rate=1&service_rate=0&max_wait_minutes=6",
            "service_rate",
        ),
        ("/v1/operator/capacity/max-rate?service_rate=4&servers=0&max_wait_minutes=6", "servers"),
        (
            "/v1/operator/capacity/max-rate?service_rate=4&servers=3&max_wait_minutes=6"
            "&session_hours=0",
            "session_hours",
        ),
        (
            "/v1/operator/departments/d-any/capacity?from=2026-01-01&to=2026-01-02&servers=0",
            "servers",
        ),
        (
            "/v1/operator/departments/d-any/capacity?from=2026-01-01&to=2026-01-02&servers=2"
            "&service_rate=-4",
            "service_rate",
        ),
    ],
)
async def test_capacity_refusals_name_the_right_field(
    api_server: ApiServer, http: aiohttp.ClientSession, path: str, field: str
) -> None:
    """A bad rate, doctor count or session length is refused naming that parameter
    (not always the arrival rate or the wait)."""
    body = await problem(
        http,
        "GET",
        api_server.url + path,
        422,
        "validation_failed",
        headers=api_server.headers("ops", operator=True),
    )
    assert list(field_errors(body)) == [field], body


async def test_bounds_are_in_the_openapi_document(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """limit 1-200, rates > 0, doctors >= 1, max_hold_s >= hold_ttl_s, ends_at after
    starts_at and YYYY-MM-DD dates are in /openapi.json."""
    async with http.get(api_server.url + "/openapi.json") as answer:
        document = await answer.json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    def query(path: str, name: str) -> dict[str, Any]:
        (found,) = [p for p in paths[path]["get"]["parameters"] if p["name"] == name]
        schema: dict[str, Any] = found["schema"]
        return schema

    assert query("/v1/bookings", "limit")["minimum"] == 1
    assert query("/v1/bookings", "limit")["maximum"] == 200
    for name in ("arrival_rate", "service_rate"):
        assert query("/v1/operator/capacity", name)["exclusiveMinimum"] == 0
    assert query("/v1/operator/capacity", "servers")["minimum"] == 1
    assert query("/v1/operator/capacity/max-rate", "max_wait_minutes")["exclusiveMinimum"] == 0
    day = query("/v1/departments/{department_id}/schedules", "date")
    assert day["pattern"] == "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
    policy = schemas["HospitalPolicyBody"]["properties"]
    assert "hold_ttl_s" in policy["max_hold_s"]["description"]
    assert "rerelease_min_s" in policy["rerelease_max_s"]["description"]
    assert "after starts_at" in schemas["SchedulePut"]["properties"]["ends_at"]["description"]
    assert "after starts_at" in schemas["SlotPut"]["properties"]["ends_at"]["description"]
