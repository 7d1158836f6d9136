"""Notification routes: an account's WeChat subscriptions (what the mini-program reports
after ``wx.requestSubscribeMessage``), a hospital's notification settings, and the
operator's dead-letter view with a retry of one (docs/notifications.md)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import ConfigDict, Field, JsonValue

from inventory.api.auth import operator_for, principal
from inventory.api.bodies import json_response, read_json, read_query
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES
from inventory.api.models import Id, Request
from inventory.api.routing import Routes
from inventory.api.views import View
from inventory.errors import ConflictError, NotFoundError
from inventory.notify import operators
from inventory.notify.kinds import KINDS
from inventory.notify.settings import parse_wall_time

routes = Routes(tag="notifications")

Kind = Literal[
    "booking_confirmed",
    "his_rejected",
    "schedule_suspended",
    "hospital_cancelled",
    "refund_succeeded",
    "visit_reminder",
    "no_show_recorded",
    "patient_banned",
    "ban_ended",
    "waitlist_offer",
    "substitution_offer",
    "reschedule_done",
]
Channel = Literal["wechat", "sms"]
OpenId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$", examples=["oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"])
]
TemplateId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
WallTime = Annotated[str, Field(pattern=r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$", examples=["08:00"])]
#: A dead letter's id in a path: digits that fit a bigint.
_SERIAL_RE: Final = re.compile(r"^[1-9][0-9]{0,17}$")


class SubscriptionPut(Request):
    """The account accepted the kind's template in the mini-program."""

    openid: OpenId


_SUBSCRIPTION: Final[dict[str, JsonValue]] = {
    "kind": "visit_reminder",
    "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "subscribed_at": "2026-12-01T10:00:00+00:00",
}
_DEAD_LETTER: Final[dict[str, JsonValue]] = {
    "dead_letter_id": 7,
    "delivery_id": 42,
    "kind": "visit_reminder",
    "channel": "sms",
    "recipient": "patient:p7f3a9c0e12d4b5a6c7d8e9f0",
    "attempts": 8,
    "error": "http_503: attempts exhausted",
    "dead_at": "2026-12-08T00:30:00+00:00",
    "fact": "visit_reminder",
    "booking_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
}


def _examples(*examples: dict[str, JsonValue]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class SubscriptionView(View):
    model_config = _examples(_SUBSCRIPTION)

    kind: Kind
    openid: str
    subscribed_at: datetime


class SubscriptionList(View):
    model_config = _examples({"items": [_SUBSCRIPTION]})

    items: list[SubscriptionView]


class SubscriptionDeleted(View):
    model_config = _examples({"kind": "visit_reminder", "subscribed": False})

    kind: Kind
    subscribed: Literal[False]


class HospitalNotificationsPut(Request):
    """A hospital's own reminder time, SMS signature (签名), WeChat template ids and page."""

    reminder_time: WallTime = "08:00"
    #: Printable text (no control characters: Postgres text holds no NUL).
    sms_sign: Annotated[str, Field(max_length=20, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    wechat_templates: dict[Kind, TemplateId] = Field(default_factory=dict)
    wechat_page: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_/?=&.-]*$")] = ""


class HospitalNotificationsView(View):
    model_config = _examples(
        {
            "hospital_id": "h-demo",
            "reminder_time": "08:00",
            "sms_sign": "示例医院",
            "wechat_templates": {"visit_reminder": "Zm9vYmFyLXJlbWluZGVy"},
            "wechat_page": "pages/booking/detail",
        }
    )

    hospital_id: str
    reminder_time: str
    sms_sign: str
    wechat_templates: dict[str, str]
    wechat_page: str


class DeadLetterQuery(Request):
    """Which dead letters: one hospital's (a hospital operator may name only its own), or
    every one the operator may see."""

    hospital_id: Id | None = None


class DeadLetterView(View):
    model_config = _examples(_DEAD_LETTER)

    dead_letter_id: int
    delivery_id: int
    kind: str
    channel: Channel
    #: ``account:<id>`` or ``patient:<id>``: never the openid or the phone.
    recipient: str
    attempts: int
    error: str
    dead_at: datetime
    fact: str
    booking_id: str | None


class DeadLetterList(View):
    model_config = _examples({"items": [_DEAD_LETTER]})

    items: list[DeadLetterView]


class DeadLetterRetried(View):
    model_config = _examples({"dead_letter_id": 7, "delivery_id": 42, "status": "pending"})

    dead_letter_id: int
    delivery_id: int
    status: Literal["pending"]


def _kind(kind: str) -> str:
    """A kind of the table, or 404."""
    if kind not in KINDS:
        raise NotFoundError()
    return kind


def _subscription(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "openid": row["openid"],
        "subscribed_at": row["subscribed_at"].isoformat(),
    }


@routes.get(
    "/v1/notifications/subscriptions",
    operation_id="list_notification_subscriptions",
    summary="The account's WeChat subscribe-message subscriptions",
    response=SubscriptionList,
    auth="account",
    errors=(401, 503),
)
async def list_subscriptions(request: web.Request) -> web.Response:
    """Which kinds the account receives as WeChat subscribe messages."""
    who = principal(request)
    rows = await operators.list_subscriptions(request.app[SERVICES].db, who.account_id)
    return json_response({"items": [_subscription(row) for row in rows]})


@routes.put(
    "/v1/notifications/subscriptions/{kind}",
    operation_id="put_notification_subscription",
    summary="Record that the account accepted a kind's subscribe-message template",
    response=SubscriptionView,
    auth="account",
    body=SubscriptionPut,
    errors=(400, 401, 404, 409, 413, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_subscription(request: web.Request) -> web.Response:
    """The account gets the kind by WeChat from now on (to ``openid``)."""
    who = principal(request)
    # As every route: a path that cannot name anything is 404 before the body is read, a
    # bad body 400/422 before looking the kind up.
    name = path_id(request, "kind")
    body = await read_json(request, SubscriptionPut)
    kind = _kind(name)
    row = await operators.put_subscription(
        request.app[SERVICES].db, who.account_id, kind, body.openid
    )
    return json_response(_subscription(row), status=201 if row["inserted"] else 200)


@routes.delete(
    "/v1/notifications/subscriptions/{kind}",
    operation_id="delete_notification_subscription",
    summary="Stop a kind's WeChat subscribe messages",
    response=SubscriptionDeleted,
    auth="account",
    errors=(400, 401, 404, 409, 422, 503),
    idempotency="recorded",
)
async def delete_subscription(request: web.Request) -> web.Response:
    """No more WeChat messages of the kind (the ones not yet sent are skipped)."""
    who = principal(request)
    kind = _kind(path_id(request, "kind"))
    await operators.delete_subscription(request.app[SERVICES].db, who.account_id, kind)
    return json_response({"kind": kind, "subscribed": False})


@routes.put(
    "/v1/operator/hospitals/{hospital_id}/notifications",
    operation_id="put_hospital_notifications",
    summary="Set a hospital's reminder time, SMS signature and WeChat templates",
    response=HospitalNotificationsView,
    auth="operator",
    body=HospitalNotificationsPut,
    errors=(400, 401, 403, 404, 409, 413, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_hospital_notifications(request: web.Request) -> web.Response:
    """The hospital's part of every message; a kind without a template id here uses the
    service's."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)  # a hospital operator: its own hospitals only
    body = await read_json(request, HospitalNotificationsPut)
    row = await operators.put_hospital_settings(
        request.app[SERVICES].db,
        hospital_id,
        reminder_time=parse_wall_time(body.reminder_time),
        sms_sign=body.sms_sign,
        wechat_templates={str(kind): value for kind, value in body.wechat_templates.items()},
        wechat_page=body.wechat_page,
    )
    if row is None:
        raise NotFoundError()
    return json_response(
        {
            "hospital_id": row["hospital_id"],
            "reminder_time": row["reminder_time"].strftime("%H:%M"),
            "sms_sign": row["sms_sign"],
            "wechat_templates": row["wechat_templates"],
            "wechat_page": row["wechat_page"],
        },
        status=201 if row["inserted"] else 200,
    )


@routes.get(
    "/v1/operator/notifications/dead-letters",
    operation_id="list_notification_dead_letters",
    summary="Notifications given up and not yet retried, newest first",
    response=DeadLetterList,
    auth="operator",
    query=DeadLetterQuery,
    errors=(400, 401, 403, 404, 422, 503),
)
async def list_dead_letters(request: web.Request) -> web.Response:
    """The operator's view: what was not sent, to whom (by id), and why; a hospital
    operator sees its hospitals' only."""
    who = principal(request, operator=True)
    query = read_query(request, DeadLetterQuery)
    hospitals = who.hospitals
    if query.hospital_id is not None:
        operator_for(request, query.hospital_id)  # another hospital's: 404
        hospitals = frozenset({query.hospital_id})
    rows = await operators.list_dead_letters(request.app[SERVICES].db, hospitals=hospitals)
    return json_response({"items": [row | {"dead_at": row["dead_at"].isoformat()} for row in rows]})


@routes.post(
    "/v1/operator/notifications/dead-letters/{dead_letter_id}/retry",
    operation_id="retry_notification_dead_letter",
    summary="Send a dead-lettered notification again (same idempotency key)",
    response=DeadLetterRetried,
    auth="operator",
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def retry_dead_letter(request: web.Request) -> web.Response:
    """The delivery goes back to pending with fresh attempts; 409 if retried before."""
    principal(request, operator=True)
    text = request.match_info["dead_letter_id"]
    if not _SERIAL_RE.fullmatch(text):
        raise NotFoundError()
    db = request.app[SERVICES].db
    hospital_id = await operators.dead_letter_hospital(db, int(text))
    # Another hospital's letter is 404 to a hospital operator, as an unknown one; a ban
    # at every hospital ("*") is the platform's.
    operator_for(request, hospital_id)
    if hospital_id is None:
        raise NotFoundError()
    found = await operators.retry_dead_letter(db, int(text))
    if found == "not_found":
        raise NotFoundError()
    if isinstance(found, str):  # "retried"
        raise ConflictError("this dead letter was retried already")
    return json_response(found)
