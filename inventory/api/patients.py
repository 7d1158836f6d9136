"""The account's patients (就诊人)."""

from __future__ import annotations

from aiohttp import web

from inventory.api import views
from inventory.api.auth import principal
from inventory.api.bodies import json_response, read_json
from inventory.api.context import SERVICES
from inventory.api.models import PatientCreate, PatientView
from inventory.api.routing import Routes

routes = Routes(tag="patients")


@routes.post(
    "/v1/patients",
    operation_id="create_patient",
    summary="Register a real-name patient",
    ok_status=201,
    response=PatientView,
    auth="account",
    body=PatientCreate,
    errors=(400, 401, 409, 422, 503),
    extra_ok=(200,),
    idempotency="recorded",
)
async def create_patient(request: web.Request) -> web.Response:
    """Register a real-name patient for the account (201), or confirm the link (200)."""
    who = principal(request)
    body = await read_json(request, PatientCreate)
    view, created = await request.app[SERVICES].patients.register(who.account_id, body)
    return json_response(view, status=201 if created else 200)


@routes.get(
    "/v1/patients",
    operation_id="list_patients",
    summary="The account's patients (masked)",
    response=views.PatientList,
    auth="account",
    errors=(401, 503),
)
async def list_patients(request: web.Request) -> web.Response:
    """The account's patients, personal data masked."""
    who = principal(request)
    items = await request.app[SERVICES].patients.list_for_account(who.account_id)
    return json_response({"items": items})
