"""Payment routes: start and look at a hold's payment, a booking's refund, and the
WeChat Pay notification callback.

The callback has no bearer token: the Wechatpay-* signature over the raw body is its
authentication. It answers 204 only once the payment's effect is committed in Postgres
(the booking, or the refund request); anything else is a non-2xx answer with
``{"code": "FAIL", "message": ...}`` (as problem+json, with the failed check in
``reason``), so WeChat Pay notifies again later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import tzinfo
from enum import StrEnum
from typing import Annotated, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from inventory.api.auth import principal
from inventory.api.bodies import json_response, read_json
from inventory.api.context import SERVICES
from inventory.api.models import Instant, Request
from inventory.api.paths import hold_id_param
from inventory.api.problems import problem_response
from inventory.api.routing import Routes
from inventory.errors import InventoryError, NotFoundError
from inventory.ops import metrics
from inventory.payments.errors import NotificationRefusedError
from inventory.payments.refunds import booking_refunds, refunds_view
from inventory.payments.service import Payments, run_payment_loops
from inventory.payments.wechat import RedisReplayGuard, WeChatPay, WeChatPayConfig
from inventory.record.catalogue import DEFAULT_ZONE
from inventory.record.pool import create_pool

log = structlog.get_logger(__name__)

routes = Routes(tag="payments")

NOTIFY_PATH = "/v1/payments/wechat/notify"


class PaymentMethod(StrEnum):
    """How the payer pays."""

    JSAPI = "jsapi"  #: inside WeChat (mini-program, official account): needs the openid
    NATIVE = "native"  #: a QR code scanned with WeChat


class PaymentCreate(Request):
    method: PaymentMethod = PaymentMethod.JSAPI
    #: The payer's openid under our appid (jsapi).
    openid: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None = None


_REFUND_EXAMPLE: dict[str, JsonValue] = {
    "refund_id": "rf-4b1c9e",
    "booking_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
    "payment_id": "pay-9a8b7c",
    "amount_fen": 5000,
    "reason": "patient_cancelled",
    "status": "pending",
    "created_at": "2026-12-03T10:00:00+08:00",
    "succeeded_at": None,
}
_REFUND_PART_EXAMPLE: dict[str, JsonValue] = dict(_REFUND_EXAMPLE)
_REFUND_EXAMPLE["parts"] = [_REFUND_PART_EXAMPLE]


class RefundPart(BaseModel):
    """One refund: of one payment behind the booking (a registration fee goes back whole,
    once), or of a cheaper move's difference."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [_REFUND_PART_EXAMPLE]}
    )

    refund_id: str
    booking_id: str
    payment_id: str
    amount_fen: int
    reason: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: Instant
    succeeded_at: Instant | None


class RefundView(RefundPart):
    """A booking's refund: the first refund's ids and reason, with the amount of every
    part and the status of them all (succeeded once every part has; a booking reached by
    moves to dearer windows has a payment, so a refund, per move); each one in ``parts``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_REFUND_EXAMPLE]})

    parts: list[RefundPart]


_PAYMENT_EXAMPLE: dict[str, JsonValue] = {
    "payment_id": "pay-9a8b7c",
    "hold_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
    "provider": "wechat",
    "method": "jsapi",
    "status": "pending",
    "amount_fen": 5000,
    "currency": "CNY",
    "deadline": "2026-12-02T08:25:01.250000+08:00",
    "paid_at": None,
    "booking_id": None,
    "created_at": "2026-12-02T08:01:00+08:00",
    "prepay": {
        "appId": "wx0123456789abcdef",
        "timeStamp": "1796169660",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx201410272009395522657a690389285100",
        "signType": "RSA",
        "paySign": "oR9d8PuhnIc+YZ8cBHFCwfgpaK9gd7vaRvkYD7rthRAZ...",
    },
    "refund": None,
}


class PaymentView(BaseModel):
    """A hold's payment: pay with ``prepay``; ``booking_id`` once it booked the hold."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_PAYMENT_EXAMPLE]})

    payment_id: str
    hold_id: str
    provider: str
    method: PaymentMethod
    status: Literal["pending", "paid", "closed", "failed"]
    amount_fen: int
    currency: str
    deadline: Annotated[Instant | None, Field(description="the hold's payment deadline")]
    paid_at: Instant | None
    booking_id: str | None
    created_at: Instant
    #: jsapi: the parameters of wx.requestPayment; native: {"code_url"}; null once paid.
    prepay: Annotated[
        dict[str, str] | None,
        Field(description="jsapi: wx.requestPayment's parameters; native: {code_url}"),
    ]
    refund: RefundView | None


class PaymentList(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [_PAYMENT_EXAMPLE]}]}
    )

    items: list[PaymentView]


PAYMENTS = web.AppKey("payments", Payments)


async def payment_context(app: web.Application) -> AsyncIterator[None]:
    """Open the payments part (provider, its lock pool, the loops) with the app; after
    the core services (it uses their store, pool and catalogue)."""
    services = app[SERVICES]
    settings = services.settings.payments
    provider: WeChatPay | None = None
    if settings.enabled:
        provider = WeChatPay(
            WeChatPayConfig(
                mchid=settings.mchid,
                appid=settings.appid,
                apiv3_key=settings.apiv3_key.encode(),
                merchant_key=settings.merchant_private_key(),
                merchant_serial=settings.merchant_serial,
                platform_keys=settings.platform_public_keys(),
                api_url=settings.api_url,
                notify_url=settings.notify_url,
                window_s=settings.notify_window_s,
                partner=settings.partner,
            ),
            RedisReplayGuard(services.store.client),
        )
    # Settling holds a payment's row lock while it writes the booking through the main
    # pool: the locks get their own small pool, so the two can never starve each other.
    lock_pool = await create_pool(
        services.settings.database_url, min_size=0, max_size=4, init_size=0
    )
    payments = Payments(
        provider=provider,
        store=services.store,
        bookings=services.bookings,
        catalogue=services.catalogue,
        pool=services.db,
        lock_pool=lock_pool,
        settings=settings,
    )
    app[PAYMENTS] = payments
    if provider is not None:
        # Charged moves (改约 or 替诊 to a dearer window): the moves open the difference's
        # payment, and its settlement completes the move.
        payments.moves = services.rescheduling
        services.rescheduling.charges = payments
    stop = asyncio.Event()
    loops: asyncio.Task[None] | None = None
    if provider is not None and settings.run_loops:
        loops = asyncio.create_task(
            run_payment_loops(payments, interval_s=settings.loop_interval_s, stop=stop)
        )
    try:
        yield
    finally:
        stop.set()
        if loops is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await loops
        await lock_pool.close()
        if provider is not None:
            await provider.close()


def _path_id(request: web.Request, name: str) -> str:
    return hold_id_param(request, name)


async def _zone_of_hold(request: web.Request, hold_id: str) -> tzinfo:
    """The time zone of a hold's hospital (its answers' instants are written in it)."""
    services = request.app[SERVICES]
    hold = await services.store.get_hold(hold_id)
    schedule_id = hold.schedule_id if hold is not None else None
    if schedule_id is None:  # gone from Redis (long after the visit): Postgres has it
        schedule_id = await services.bookings.hold_schedule_id(hold_id)
    terms = await services.catalogue.terms(schedule_id) if schedule_id else None
    return terms.zone if terms is not None else DEFAULT_ZONE


@routes.post(
    "/v1/holds/{hold_id}/payments",
    operation_id="start_payment",
    summary="Start paying a hold: the provider's prepay parameters (extends the hold once)",
    ok_status=201,
    response=PaymentView,
    auth="account",
    body=PaymentCreate,
    errors=(400, 401, 404, 409, 422, 502, 503),
    extra_ok=(200,),
    idempotency="recorded",
)
async def start_payment(request: web.Request) -> web.Response:
    """Start paying one of the account's holds: the provider's prepay parameters. The
    first start extends the hold once; a repeat returns the same payment."""
    who = principal(request)
    hold_id = _path_id(request, "hold_id")
    body = await read_json(request, PaymentCreate)
    payment, prepay, created = await request.app[PAYMENTS].start(
        hold_id, who.account_id, method=body.method.value, payer_openid=body.openid or ""
    )
    view = payment.view(prepay=prepay, zone=await _zone_of_hold(request, hold_id))
    return json_response(view, status=201 if created else 200)


@routes.get(
    "/v1/holds/{hold_id}/payments",
    operation_id="list_hold_payments",
    summary="A hold's payment: status, the booking it bought or its refund",
    response=PaymentList,
    auth="account",
    errors=(401, 404, 503),
)
async def list_payments(request: web.Request) -> web.Response:
    """The payment of one of the account's holds (with what it bought or its refund)."""
    who = principal(request)
    hold_id = _path_id(request, "hold_id")
    zone = await _zone_of_hold(request, hold_id)
    items = await request.app[PAYMENTS].of_hold(hold_id, who.account_id, zone=zone)
    return json_response({"items": items})


@routes.get(
    "/v1/bookings/{booking_id}/refund",
    operation_id="get_booking_refund",
    summary="A booking's refund and its status",
    response=RefundView,
    auth="account",
    errors=(401, 404, 503),
)
async def get_refund(request: web.Request) -> web.Response:
    """The refund of one of the account's bookings, with its status."""
    who = principal(request)
    booking_id = _path_id(request, "booking_id")
    refunds = await booking_refunds(request.app[SERVICES].db, who.account_id, booking_id)
    if not refunds:
        raise NotFoundError("no refund for this booking")
    zone = await _zone_of_hold(request, booking_id)
    return json_response(refunds_view(refunds, zone=zone))


def _fail(status: int, reason: str, message: str) -> web.Response:
    """WeChat Pay's failure answer ({"code": "FAIL", "message"}) as problem+json."""
    metrics.observe_notification_refused(reason)
    return problem_response(
        status, "FAIL", "Notification not accepted", message=message, reason=reason
    )


@routes.post(
    NOTIFY_PATH,
    operation_id="wechat_pay_notify",
    summary="WeChat Pay notification (signed Wechatpay-* headers, encrypted resource); "
    "204 once settled, else {code: FAIL, message} so it is sent again",
    ok_status=204,
    response={"type": "object"},
    errors=(400, 401, 404, 409, 413, 503),
)
async def wechat_notify(request: web.Request) -> web.Response:
    """WeChat Pay's payment notification: verified over the raw body, then settled; 204
    only after the booking or the refund request is committed."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _fail(413, "body_too_large", "the notification is too large")
    try:
        settlement = await request.app[PAYMENTS].handle_notification(request.headers, body)
    except NotificationRefusedError as refusal:
        log.warning("payment.notification_refused", reason=refusal.reason)
        return _fail(refusal.http_status, refusal.reason, refusal.detail)
    except InventoryError as error:
        # Redis or Postgres down, a fenced tag...: not settled; WeChat Pay notifies again.
        log.warning("payment.notification_failed", code=error.code)
        status = error.http_status if error.http_status >= 400 else 500
        return _fail(status, error.code, error.title)
    log.info(
        "payment.notification_accepted",
        payment_id=settlement.payment_id,
        duplicate=settlement.duplicate,
    )
    return web.Response(status=204)
