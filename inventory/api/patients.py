"""The account's patients (就诊人)."""

from __future__ import annotations

from aiohttp import web

from inventory.api.auth import principal
from inventory.api.bodies import json_response, read_json
from inventory.api.context import SERVICES
from inventory.api.models import PatientCreate

routes = web.RouteTableDef()


@routes.post("/v1/patients")
async def create_patient(request: web.Request) -> web.Response:
    """Register a real-name patient for the account (201), or confirm the link (200)."""
    who = principal(request)
    body = await read_json(request, PatientCreate)
    view, created = await request.app[SERVICES].patients.register(who.account_id, body)
    return json_response(view, status=201 if created else 200)


@routes.get("/v1/patients")
async def list_patients(request: web.Request) -> web.Response:
    """The account's patients, personal data masked."""
    who = principal(request)
    items = await request.app[SERVICES].patients.list_for_account(who.account_id)
    return json_response({"items": items})
