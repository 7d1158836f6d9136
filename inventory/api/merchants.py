"""A hospital's WeChat Pay sub-merchant (partner mode, 服务商): where its registration fees
settle and its refunds come from. Only the platform's operators set it (a hospital's own
operators read it); in partner mode a hospital without one takes no paid bookings."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from inventory.api.audit import note_before
from inventory.api.auth import operator_for
from inventory.api.bodies import json_response, read_json
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES
from inventory.api.models import Request
from inventory.api.routing import Routes
from inventory.api.views import View, examples_config
from inventory.errors import ForbiddenError, NotFoundError
from inventory.record import merchants as record

routes = Routes(tag="operator")


class MerchantPut(Request):
    #: WeChat Pay's sub-merchant id (子商户号).
    sub_mchid: Annotated[str, Field(pattern=r"^[0-9]{8,32}$")]
    #: The hospital's own mini-program, when payers pay inside it ("": the platform's).
    sub_appid: Annotated[str, Field(pattern=r"^([A-Za-z0-9_-]{1,32})?$")] = ""


class MerchantView(View):
    model_config = examples_config(
        {"hospital_id": "hosp-1", "sub_mchid": "1900000109", "sub_appid": ""}
    )

    hospital_id: str
    sub_mchid: str
    sub_appid: str


def _view(row: Any) -> dict[str, str]:
    return {
        "hospital_id": row["hospital_id"],
        "sub_mchid": row["sub_mchid"],
        "sub_appid": row["sub_appid"],
    }


async def _hospital(request: web.Request) -> str:
    """The path's hospital (404 unless it exists and the operator acts for it)."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    if await request.app[SERVICES].catalogue.hospital(hospital_id) is None:
        raise NotFoundError("no such hospital")
    return hospital_id


@routes.put(
    "/v1/operator/hospitals/{hospital_id}/merchant",
    operation_id="put_hospital_merchant",
    summary="Set a hospital's WeChat Pay sub-merchant (partner mode; platform operators only)",
    response=MerchantView,
    auth="operator",
    body=MerchantPut,
    errors=(400, 401, 403, 404, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_hospital_merchant(request: web.Request) -> web.Response:
    """Set where the hospital's fees settle and its refunds come from."""
    hospital_id = path_id(request, "hospital_id")
    if operator_for(request, hospital_id).hospitals is not None:
        # Where a hospital's money goes is the platform's decision, not the hospital's.
        raise ForbiddenError("only the platform's operators set a hospital's merchant")
    body = await read_json(request, MerchantPut)
    if await request.app[SERVICES].catalogue.hospital(hospital_id) is None:
        raise NotFoundError("no such hospital")
    pool = request.app[SERVICES].db
    existing = await record.merchant(pool, hospital_id)
    note_before(request, None if existing is None else _view(existing))
    row = await record.set_merchant(pool, hospital_id, body.sub_mchid, body.sub_appid)
    return json_response(_view(row), status=201 if row["inserted"] else 200)


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/merchant",
    operation_id="get_hospital_merchant",
    summary="A hospital's WeChat Pay sub-merchant (partner mode)",
    response=MerchantView,
    auth="operator",
    errors=(401, 403, 404, 503),
)
async def get_hospital_merchant(request: web.Request) -> web.Response:
    """The hospital's sub-merchant; 404 when it has none."""
    hospital_id = await _hospital(request)
    row = await record.merchant(request.app[SERVICES].db, hospital_id)
    if row is None:
        raise NotFoundError("this hospital has no merchant")
    return json_response(_view(row))
