"""The OpenAPI 3.1 document: the real contract of every route.

Request bodies and query strings are the pydantic models the handlers validate with,
so the document cannot drift from what the server accepts; response bodies are the
view models of ``inventory.api.models``, ``inventory.api.views`` and the payments
routes (they forbid unknown fields, so an answer with a field the contract lacks fails
the contract tests). Every body has an example (:data:`REQUEST_EXAMPLES` for requests,
each view model's own for answers); problem ``code``s are an enum of the code table.
The operations are the routes' own declarations (``inventory.api.routing``), walked in
the order of ``inventory.api.routes``; a test checks that the app serves exactly them.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Any, Final

import orjson
from pydantic import BaseModel, JsonValue

from inventory import __version__
from inventory.api import models, notifications
from inventory.api.desk import DeskCancel
from inventory.api.login import (
    RefreshTokenBody,
    SmsCodeRequest,
    SmsVerify,
    StaffLoginBody,
    WeChatLogin,
)
from inventory.api.merchants import MerchantPut
from inventory.api.payments import PaymentCreate
from inventory.api.releases import ReleaseOpen, TicketCreate
from inventory.api.routes import OPERATIONS
from inventory.api.routing import Operation
from inventory.errors import MESSAGES
from inventory.privacy.identity import make_resident_id

REF = "#/components/schemas/{model}"

#: Codes that are never answered: every 404 is ``not_found`` (see inventory.api.problems).
_NOT_ANSWERED: Final = frozenset(
    {"hold_not_found", "not_owner", "slot_not_found", "schedule_not_found"}
)
#: Every code a problem can carry.
PROBLEM_CODES: Final = sorted(set(MESSAGES) - _NOT_ANSWERED)

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details. `title` and `detail` are in Chinese unless "
    "Accept-Language prefers English; `code` never changes with the language.",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {
            "description": "stable machine code",
            "anyOf": [
                {"type": "string", "enum": PROBLEM_CODES},
                {"type": "string", "pattern": "^http_[0-9]{3}$"},
            ],
        },
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
        "rule": {"type": "string"},
        "retry_after_s": {"type": "integer"},
        "release_ms": {"type": "integer"},
        "deadline_ms": {"type": "integer"},
        "state": {"type": "string"},
        "banned_until_ms": {"type": "integer"},
        "release_id": {"type": "string", "description": "admission_required: join its room"},
        "opens_ms": {"type": "integer", "description": "room_not_open: joins start then"},
        "waitlist": {
            "type": "object",
            "description": "room_sold_out: the waitlist of the release's schedules",
            "properties": {
                "available": {"type": "boolean"},
                "schedule_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "examples": [
        {
            "type": "https://slot-inventory.dev/problems/sold_out",
            "title": "该时段号源已约满",
            "status": 409,
            "code": "sold_out",
        },
        {
            "type": "https://slot-inventory.dev/problems/validation_failed",
            "title": "The request has invalid fields",
            "status": 422,
            "code": "validation_failed",
            "errors": [{"field": "resident_id", "reason": "check digit does not match"}],
        },
    ],
}

#: Every operation reads it for the language of its problems' title and detail.
ACCEPT_LANGUAGE: Final = {
    "name": "Accept-Language",
    "in": "header",
    "required": False,
    "description": "Problems' title and detail are in Chinese (zh-CN) unless this prefers "
    "English (q-values count); the code is the same in both.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9*,;=. -]{0,200}$"},
    "examples": {"chinese": {"value": "zh-CN,zh;q=0.9"}, "english": {"value": "en-US,en;q=0.8"}},
}

_EXAMPLE_DAY = date(1990, 3, 7)
#: An example of every request body, by model (tests/api/test_openapi.py validates each).
REQUEST_EXAMPLES: Final[dict[type[BaseModel], dict[str, JsonValue]]] = {
    models.WaitlistJoinBody: {"patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0", "channel": "wechat"},
    models.HoldCreate: {
        "slot_id": "slot-0800-1",
        "patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0",
        "channel": "wechat",
    },
    models.HoldConfirm: {"payment_ref": "wx-4200001234"},
    models.BookingCancel: {"reason": "patient_cancelled"},
    models.BookingReschedule: {"slot_id": "slot-0830-1"},
    models.SubstitutionAnswer: {"accept": True},
    models.SubstituteOffer: {
        "target_schedule_id": "sch-20261209-am-wang",
        "respond_within_s": 3600,
        "reason": "doctor_unavailable",
    },
    models.PatientCreate: {
        "name": "张三",
        "gender": "male",
        "birth_date": _EXAMPLE_DAY.isoformat(),
        "phone": "13812345678",
        "resident_id": make_resident_id(_EXAMPLE_DAY, "male", seq=1),
        "relation": "self",
    },
    models.HospitalPut: {
        "name": "示例医院",
        "timezone": "Asia/Shanghai",
        "policy": {"hold_ttl_s": 900},
    },
    models.DepartmentPut: {"hospital_id": "h-demo", "parent_id": "dep-internal", "name": "心内科"},
    models.DoctorPut: {
        "hospital_id": "h-demo",
        "department_id": "dep-cardio",
        "name": "李明",
        "title": "主任医师",
        "specialty": "心律失常",
    },
    models.SchedulePut: {
        "hospital_id": "h-demo",
        "department_id": "dep-cardio",
        "doctor_id": "doc-li",
        "visit_date": "2026-12-09",
        "session": "morning",
        "starts_at": "2026-12-09T08:00:00+08:00",
        "ends_at": "2026-12-09T12:00:00+08:00",
        "release_at": "2026-12-02T08:00:00+08:00",
        "cancel_deadline": "2026-12-08T20:00:00+08:00",
        "fee_fen": 5000,
        "location": "门诊楼2层",
        "slots": [
            {
                "slot_id": "slot-0800-1",
                "starts_at": "2026-12-09T08:00:00+08:00",
                "ends_at": "2026-12-09T08:30:00+08:00",
                "capacity": 4,
            }
        ],
    },
    models.CapacityPut: {"capacity": 5},
    models.StatusChange: {"reason": "doctor_ill"},
    models.CheckIn: {"source": "kiosk"},
    models.BanLift: {"reason": "院方核实：爽约系医院原因"},
    PaymentCreate: {"method": "jsapi", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    ReleaseOpen: {"schedule_ids": ["sch-20261209-am"], "name": "am"},
    MerchantPut: {"sub_mchid": "1900000109", "sub_appid": ""},
    DeskCancel: {"reason": "医生临时停诊，已电话告知患者"},
    TicketCreate: {"patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0"},
    notifications.SubscriptionPut: {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    notifications.HospitalNotificationsPut: {
        "reminder_time": "08:00",
        "sms_sign": "示例医院",
        "wechat_templates": {"visit_reminder": "Zm9vYmFyLXJlbWluZGVy"},
        "wechat_page": "pages/booking/detail",
    },
    WeChatLogin: {"code": "0a3Bc4000oVUyO1KZe200Fx0Q93Bc40K"},
    SmsCodeRequest: {"phone": "13812345678"},
    SmsVerify: {"phone": "13812345678", "code": "482913"},
    RefreshTokenBody: {"refresh_token": "q3Xh0b7lJ9c1vYz2n8KdP4sW6tR5mA0eF1gH2iJ3kL4"},
    StaffLoginBody: {"username": "li-ops", "password": "correct horse battery staple"},
}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    if model in REQUEST_EXAMPLES:
        schema["examples"] = [REQUEST_EXAMPLES[model]]
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in [part[1:-1] for part in op.path.split("/") if part.startswith("{")]:
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"},
            }
        )
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    if op.idempotency is not None:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                # Optional where it is recorded in Postgres (inventory/api/idempotency.py).
                "required": op.idempotency == "required",
                "schema": {"type": "string", "pattern": "^[!-~]{1,64}$"},
            }
        )
    params.append(ACCEPT_LANGUAGE)
    return params


def _responses(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    body = op.response if isinstance(op.response, dict) else _schema(op.response, components)
    content = {content_type: {"schema": body} for content_type in op.content_types}
    responses: dict[str, Any] = {str(op.ok_status): {"description": "OK", "content": content}}
    if op.ok_status == 204:
        responses["204"] = {"description": "Done (no body)"}
    for status in op.extra_ok:
        if status == 304:
            responses["304"] = {"description": "Not modified (ETag matched)"}
        else:
            responses[str(status)] = {"description": "OK", "content": content}
    problem = {"$ref": REF.format(model="Problem")}
    for status in sorted({*op.errors, 400, 405, 500}):
        if str(status) in responses:
            continue
        if op.error_body is not None and status not in (405, 500):
            content = {"application/json": {"schema": _schema(op.error_body, components)}}
        else:
            content = {"application/problem+json": {"schema": problem}}
        responses[str(status)] = {"description": "Problem", "content": content}
    return responses


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service."""
    components: dict[str, Any] = {"Problem": PROBLEM}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op, components),
            "responses": _responses(op, components),
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(op.body, components)}},
            }
        entry["security"] = [{"bearer": []}] if op.auth else []
        if op.auth == "operator":
            entry["description"] = "Needs a token with the operator role."
        elif op.auth == "staff":
            entry["description"] = "Needs a token with the staff or the operator role."
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "slot-inventory booking API",
            "version": __version__,
            "description": "Appointment-slot inventory for hospital booking. Errors are "
            "RFC 9457 problem+json with a stable `code`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def document() -> bytes:
    """The document as served (``/openapi.json``): built once per process."""
    return _encoded()


@cache
def _encoded() -> bytes:
    return orjson.dumps(build_openapi())
