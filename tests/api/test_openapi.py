"""The OpenAPI document as a contract a front end can build on: every request and
response body of every route is a generated schema with an example that is valid,
statuses and codes are enums, field names are in the schemas; real answers match their
view models exactly; and the docs page (Swagger UI) and its assets are served by the
service itself."""

from __future__ import annotations

import re
import secrets
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from inventory.api import models, views
from inventory.api.openapi import PROBLEM_CODES, REQUEST_EXAMPLES, build_openapi
from inventory.api.routes import OPERATIONS
from inventory.app import create_app
from inventory.errors import MESSAGES
from inventory.ops.config import Settings

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid

DOCUMENT = build_openapi()
SCHEMAS = DOCUMENT["components"]["schemas"]


def _component(ref: dict[str, Any]) -> dict[str, Any]:
    assert "$ref" in ref, ref
    schema: dict[str, Any] = SCHEMAS[ref["$ref"].rsplit("/", 1)[1]]
    return schema


def _examples(model: type[BaseModel]) -> list[Any]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict), model
    examples = extra.get("examples")
    assert isinstance(examples, list), model
    assert examples, model
    return examples


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_every_body_is_a_generated_schema_with_a_valid_example(op: Any) -> None:
    """Request and JSON answer bodies come from models, each with an example it accepts."""
    entry = DOCUMENT["paths"][op.path][op.method]
    if op.body is not None:
        schema = _component(entry["requestBody"]["content"]["application/json"]["schema"])
        assert schema["examples"] == [REQUEST_EXAMPLES[op.body]]
        op.body.model_validate(REQUEST_EXAMPLES[op.body])
    ok = entry["responses"][str(op.ok_status)]
    pages = (
        "metrics",
        "docs",
        "docs_asset",
        "openapi",
        "stream_ticket",
        "root",
        "app_shell",
        "app_asset",
        "app_view",
        "console_shell",
        "console_asset",
        "console_view",
        "shared_asset",
        "get_hospital_report_plot",
    )
    if op.ok_status == 204 or op.operation_id in pages:
        return
    assert isinstance(op.response, type), op.operation_id
    schema = _component(ok["content"]["application/json"]["schema"])
    assert schema["examples"], op.operation_id
    assert schema.get("additionalProperties") is False, op.operation_id
    for example in _examples(op.response):
        op.response.model_validate(example)


def test_every_served_route_is_exactly_one_declared_operation() -> None:
    """The app serves each declared operation once and nothing undeclared, and operation
    ids are unique: the routes and the document come from the same declarations."""
    settings = Settings(
        redis_url="redis://127.0.0.1:1",
        database_url="postgresql://127.0.0.1:1/none",
        jwt_keys={"k1": secrets.token_bytes(32)},
        jwt_current_key="k1",
    )
    app = create_app(settings)  # routes only: its resources open on start-up
    served = Counter(
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        # aiohttp answers HEAD for every GET by itself.
        if route.method != "HEAD" and route.resource is not None
    )
    declared = Counter((op.method, op.path) for op in OPERATIONS)
    assert served == declared
    assert set(served.values()) == {1}
    assert set(Counter(op.operation_id for op in OPERATIONS).values()) == {1}
    assert list(DOCUMENT["paths"]) == list(dict.fromkeys(op.path for op in OPERATIONS))


def test_statuses_and_codes_are_enums() -> None:
    """Booking statuses, hold states and problem codes are enumerated in the document."""
    statuses = SCHEMAS["BookingStatus"]["enum"]
    assert {"confirmed", "his_confirmed", "rejected", "cancelled"} <= set(statuses)
    assert SCHEMAS["BookingView"]["properties"]["status"] == {
        "$ref": "#/components/schemas/BookingStatus"
    }
    assert set(SCHEMAS["HoldState"]["enum"]) == {
        "held",
        "booked",
        "released",
        "expired",
        "cancelled",
    }
    codes = SCHEMAS["Problem"]["properties"]["code"]["anyOf"][0]["enum"]
    assert codes == PROBLEM_CODES
    assert {"sold_out", "not_found", "validation_failed", "cancel_deadline_passed"} <= set(codes)
    assert not {"hold_not_found", "not_owner", "slot_not_found"} & set(codes)
    assert set(codes) <= set(MESSAGES)


def test_every_operation_documents_accept_language() -> None:
    """Accept-Language (the problems' language) is a parameter of every operation."""
    for op in OPERATIONS:
        names = [p["name"] for p in DOCUMENT["paths"][op.path][op.method]["parameters"]]
        assert "Accept-Language" in names, op.operation_id


def test_field_names_are_in_the_schemas() -> None:
    """Field names a front end needs appear in the schemas, with their rules."""
    patient = SCHEMAS["PatientCreate"]
    assert {"name", "gender", "birth_date", "phone", "resident_id"} <= set(patient["required"])
    assert patient["properties"]["resident_id"]["format"] == "cn-resident-id"
    booking = SCHEMAS["BookingView"]["properties"]
    for name in ("his_appointment_no", "visit_time", "place", "cancel_deadline", "cancellable"):
        assert name in booking, name
    for name in ("cancel_deadline", "cancellable"):
        for view in ("HoldView", "ScheduleItem", "SlotItem", "Availability"):
            assert name in SCHEMAS[view]["properties"], (view, name)


async def _json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with http.get(url, **kwargs) as answer:
        body = await answer.json()
        assert answer.status == 200, body
        return body


async def test_real_answers_are_exactly_their_views(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """The catalogue, patient, hold and booking answers validate against their models."""
    cat = await Catalogue(api_server, http).create()
    schedule_id, slots, day = await cat.schedule([2])
    base = api_server.url
    views.HospitalList.model_validate(await _json(http, base + "/v1/hospitals"))
    views.DepartmentTree.model_validate(
        await _json(http, base + f"/v1/hospitals/{cat.hospital_id}/departments")
    )
    views.DoctorList.model_validate(
        await _json(http, base + f"/v1/departments/{cat.department_id}/doctors")
    )
    views.ScheduleDay.model_validate(
        await _json(
            http, base + f"/v1/departments/{cat.department_id}/schedules?date={day.isoformat()}"
        )
    )
    views.Availability.model_validate(
        await _json(http, base + f"/v1/schedules/{schedule_id}/slots")
    )
    account = uid("acct")
    headers = api_server.headers(account)
    patient_id = await register_patient(api_server, http, account)
    views.PatientList.model_validate(await _json(http, base + "/v1/patients", headers=headers))
    async with http.post(
        base + "/v1/holds",
        json={"slot_id": slots[0], "patient_id": patient_id, "channel": "app"},
        headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        hold = models.HoldView.model_validate(await answer.json())
    async with http.post(
        base + f"/v1/holds/{hold.hold_id}/confirm", json={"payment_ref": "wx-9"}, headers=headers
    ) as answer:
        models.BookingView.model_validate(await answer.json())
    models.BookingList.model_validate(await _json(http, base + "/v1/bookings", headers=headers))


async def test_the_docs_page_and_its_assets_are_served_offline(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """/docs is Swagger UI over /openapi.json; every file it loads is served here."""
    async with http.get(api_server.url + "/docs") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/html"
        page = await answer.text()
    assert 'url: "/openapi.json"' in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    # Nothing is fetched from elsewhere: every file is one of ours.
    assert all(source.startswith("/") for source in sources), sources
    for source in sources:
        async with http.get(api_server.url + source) as answer:
            body = await answer.read()
            assert answer.status == 200, source
            assert body, source
            if source.endswith(".js"):
                assert answer.content_type == "text/javascript"
    async with http.get(api_server.url + "/docs/assets/swagger-ui-bundle.js") as answer:
        assert b"SwaggerUIBundle" in await answer.read()
    for name in ("nothing.js", "..%2Fcore.py", "swagger-ui.js.map"):
        async with http.get(api_server.url + "/docs/assets/" + name) as answer:
            assert answer.status == 404, name
            assert (await answer.json())["code"] == "not_found"


async def test_a_session_count_past_64_bits_is_refused(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """max-rate whose patients per session would not fit JSON's integers answers 422."""
    query = {
        "service_rate": "1.1411929080885133e166",
        "servers": "486",
        "max_wait_minutes": "4.2159869499387227e307",
        "session_hours": "1",
    }
    async with http.get(
        api_server.url + "/v1/operator/capacity/max-rate",
        params=query,
        headers=api_server.headers("ops", operator=True),
    ) as answer:
        body = await answer.json(content_type=None)
        assert answer.status == 422, body
    assert body["errors"][0]["field"] == "session_hours"
