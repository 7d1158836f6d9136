"""The simulator's HTTP face: FHIR R4 under ``/fhir`` (read, search, conditional
create, cancel by JSON Patch, CapabilityStatement) and the admin API under
``/$admin`` (faults, schedule changes, other channels' bookings, a state summary).

Every FHIR request passes the fault middleware first (see faults.py); every FHIR error
is an OperationOutcome. Search parameters we do not support are refused (400) rather
than silently ignored, so a client bug shows at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from fhir.resources.R4B.appointment import Appointment
from pydantic import ValidationError

from inventory.his.fhir import (
    CHANNELS,
    FHIR_JSON,
    FHIR_VERSION,
    SESSIONS,
    SYSTEMS,
    operation_outcome,
)
from inventory.simulators.his import render
from inventory.simulators.his.auth import AuthRefused, SimHospital, TokenIssuer
from inventory.simulators.his.faults import FaultConfig, FaultInjector
from inventory.simulators.his.seed import TITLES, build_schedule
from inventory.simulators.his.state import Row, SimNotFound, SimRefusal, SimState

FHIR_BASE = "/fhir"
ADMIN_BASE = "/$admin"
TOKEN_PATH = "/auth/token"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_COUNT = 100
MAX_COUNT = 500

SIM_STATE = web.AppKey("sim_state", SimState)
SIM_FAULTS = web.AppKey("sim_faults", FaultInjector)
#: The path prefix of a hospital (``/h/<id>``) when the simulator serves several; "".
SIM_BASE = web.AppKey("sim_base", str)
SIM_HOSPITAL = web.AppKey("sim_hospital", SimHospital)
SIM_ISSUER = web.AppKey("sim_issuer", TokenIssuer)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FhirError(Exception):
    """An error answered as an OperationOutcome."""

    def __init__(self, status: int, code: str, message: str, refusal: str | None = None):
        super().__init__(message)
        self.status = status
        self.outcome = operation_outcome(code, message, refusal=refusal)


def fhir_response(
    resource: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A FHIR JSON answer."""
    return web.Response(
        body=orjson.dumps(resource),
        status=status,
        content_type=FHIR_JSON,
        charset="utf-8",
        headers=headers,
    )


def admin_response(data: Any, *, status: int = 200) -> web.Response:
    """An admin (plain JSON) answer."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# --------------------------------------------------------------------------------------
# middleware: faults for FHIR, errors for both
# --------------------------------------------------------------------------------------


@web.middleware
async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults and OperationOutcomes for ``/fhir``; JSON errors for ``/$admin``; a
    hospital with credentials refuses a FHIR call without a valid token of its own."""
    path = request.path.removeprefix(request.app[SIM_BASE])
    if path == TOKEN_PATH:
        # A HIS that is down or slow is so for its token endpoint too (resource "token").
        return await _token_faults(handler, request)
    if not path.startswith(FHIR_BASE + "/"):
        return await _admin_answer(handler, request)
    resource = path[len(FHIR_BASE) + 1 :].split("/", 1)[0]
    injector = request.app[SIM_FAULTS]
    injector.stats.enter(request.method, resource)
    try:
        decision = injector.decide(request.method, resource)
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        if decision.timeout:
            await asyncio.sleep(injector.config.hang_s)
            return fhir_response(
                operation_outcome("timeout", "the HIS timed out (injected)"), status=503
            )
        if decision.error:
            status = injector.config.error_status
            code = "transient" if status == 503 else "exception"
            return fhir_response(
                operation_outcome(code, f"injected failure {status}"), status=status
            )
        refusal = _bearer_refusal(request, resource)
        if refusal is not None:
            return refusal
        response = await _fhir_answer(handler, request)
        if decision.duplicate:
            # A replaying proxy delivered the request twice: the second answer wins.
            response = await _fhir_answer(handler, request)
            response.headers["X-Sim-Duplicated"] = "1"
        if decision.drop and request.transport is not None:
            # Committed, but the answer never leaves: the connection just closes.
            request.transport.close()
        return response
    finally:
        injector.stats.leave()


async def _token_faults(handler: Handler, request: web.Request) -> web.StreamResponse:
    """The token endpoint under the latency, timeout and error faults (never dropped or
    duplicated: a token request is not a write)."""
    injector = request.app[SIM_FAULTS]
    decision = injector.decide(request.method, "token")
    if decision.delay_s > 0:
        await asyncio.sleep(decision.delay_s)
    if decision.timeout:
        await asyncio.sleep(injector.config.hang_s)
        return admin_response({"error": "temporarily_unavailable"}, status=503)
    if decision.error:
        return admin_response(
            {"error": "temporarily_unavailable"}, status=injector.config.error_status
        )
    return await handler(request)


def _bearer_refusal(request: web.Request, resource: str) -> web.Response | None:
    """401 for a FHIR call of a hospital with credentials without a valid token of its
    own (the CapabilityStatement stays public, as SMART servers keep it)."""
    hospital = request.app.get(SIM_HOSPITAL)
    if hospital is None or not hospital.protected or resource == "metadata":
        return None
    reason = request.app[SIM_ISSUER].check_bearer(hospital, request.headers.get("Authorization"))
    if reason is None:
        return None
    response = fhir_response(
        operation_outcome("security", f"the access token is refused: {reason}"), status=401
    )
    response.headers["WWW-Authenticate"] = (
        f'Bearer error="invalid_token", error_description="{reason}"'
    )
    return response


async def _fhir_answer(handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        return await handler(request)
    except FhirError as error:
        return fhir_response(error.outcome, status=error.status)
    except SimRefusal as refusal:
        code = "not-found" if refusal.reason == "not-found" else "business-rule"
        if refusal.reason == "invalid":
            code = "invalid"
        return fhir_response(
            operation_outcome(code, refusal.message, refusal=refusal.reason),
            status=refusal.status,
        )
    except SimNotFound as missing:
        return fhir_response(
            operation_outcome("not-found", f"{missing} is not known", refusal="not-found"),
            status=404,
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = "not-supported" if error.status in (404, 405) else "processing"
        return fhir_response(operation_outcome(code, error.reason), status=error.status)


async def _admin_answer(handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        return await handler(request)
    except SimRefusal as refusal:
        return admin_response({"error": refusal.reason, "detail": refusal.message}, status=409)
    except SimNotFound as missing:
        return admin_response({"error": "not-found", "detail": str(missing)}, status=404)
    except (ValueError, KeyError, TypeError) as error:
        return admin_response({"error": "invalid", "detail": str(error)}, status=400)


# --------------------------------------------------------------------------------------
# FHIR: reads
# --------------------------------------------------------------------------------------

_RENDER: dict[str, Callable[[Row], dict[str, Any]]] = {
    "Organization": render.organization,
    "Location": render.location,
    "Practitioner": render.practitioner,
    "PractitionerRole": render.practitioner_role,
    "Schedule": render.schedule,
    "Slot": render.slot,
    "Appointment": render.appointment,
}


def _rows(state: SimState, kind: str, ids: list[str]) -> list[Row]:
    if kind == "Organization":
        return state.organizations(ids=ids)
    if kind == "Location":
        return state.locations(ids=ids)
    if kind == "Practitioner":
        return state.practitioners(ids=ids)
    if kind == "PractitionerRole":
        return state.practitioners(ids=[_practitioner_of_role(i) for i in ids])
    if kind == "Schedule":
        return state.schedules(ids=ids)
    if kind == "Slot":
        return state.slots(ids=ids)
    if kind == "Appointment":
        return state.appointments(ids=ids)
    raise FhirError(404, "not-supported", f"resource type {kind} is not served here")


def _practitioner_of_role(role: str) -> str:
    return role.removeprefix("role-")


async def read(request: web.Request) -> web.Response:
    """GET [base]/{type}/{id}."""
    kind, resource_id = request.match_info["kind"], request.match_info["id"]
    rows = _rows(request.app[SIM_STATE], kind, [resource_id])
    if not rows:
        raise SimNotFound(f"{kind}/{resource_id}")
    resource = _RENDER[kind](rows[0])
    return fhir_response(resource, headers=_etag(resource))


def _etag(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'W/"{resource["meta"]["versionId"]}"'}


async def metadata(request: web.Request) -> web.Response:
    """GET [base]/metadata: what this server does."""

    def rest(kind: str, params: Iterable[str], interactions: Iterable[str]) -> dict[str, Any]:
        return {
            "type": kind,
            "interaction": [{"code": code} for code in interactions],
            "searchParam": [{"name": name, "type": "string"} for name in params],
        }

    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "publisher": "slot-inventory HIS simulator",
        "kind": "instance",
        "software": {"name": "inventory his-sim"},
        "implementation": {
            "description": "HIS simulator",
            "url": str(request.url.origin()) + request.app[SIM_BASE] + FHIR_BASE,
        },
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    rest(kind, sorted(params), ("read", "search-type"))
                    for kind, params in _SEARCH_PARAMS.items()
                    if kind != "Appointment"
                ]
                + [
                    {
                        **rest(
                            "Appointment",
                            sorted(_SEARCH_PARAMS["Appointment"]),
                            ("read", "search-type", "create", "patch"),
                        ),
                        "conditionalCreate": True,
                    }
                ],
            }
        ],
    }
    return fhir_response(statement)


# --------------------------------------------------------------------------------------
# FHIR: search
# --------------------------------------------------------------------------------------

_COMMON = {"_count", "_getpagesoffset", "_id"}
_SEARCH_PARAMS: dict[str, set[str]] = {
    "Organization": {"partof", "type"},
    "Location": {"organization"},
    "Practitioner": set(),
    "PractitionerRole": {"organization", "practitioner", "_include"},
    "Schedule": {"date", "actor", "active", "_include", "_revinclude"},
    "Slot": {"schedule", "start", "status"},
    "Appointment": {"identifier", "date", "slot", "slot.schedule", "status"},
}
_INCLUDES = {
    "PractitionerRole": {"PractitionerRole:practitioner"},
    "Schedule": {"Schedule:actor"},
}
_REVINCLUDES = {"Schedule": {"Slot:schedule"}}
_DATE_OPS = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _date_bounds(values: list[str]) -> list[tuple[str, str]]:
    bounds = []
    for value in values:
        prefix = value[:2] if value[:2].isalpha() else "eq"
        day = value[2:] if value[:2].isalpha() else value
        if prefix not in _DATE_OPS:
            raise FhirError(400, "not-supported", f"date prefix {prefix!r} is not supported")
        try:
            date.fromisoformat(day)
        except ValueError:
            raise FhirError(400, "invalid", f"date {day!r} is not YYYY-MM-DD") from None
        bounds.append((_DATE_OPS[prefix], day))
    return bounds


def _reference(value: str, kind: str) -> str:
    if "/" not in value:
        return value
    found, _, ref_id = value.rpartition("/")
    if found.rsplit("/", 1)[-1] != kind or not ref_id:
        raise FhirError(400, "invalid", f"{value!r} is not a {kind} reference")
    return ref_id


def _ids(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _token(value: str) -> tuple[str | None, str]:
    if "|" not in value:
        return None, value
    system, _, code = value.partition("|")
    if not code:
        raise FhirError(400, "not-supported", "identifier searches need a value")
    return system or None, code


async def search(request: web.Request) -> web.Response:
    """GET [base]/{type}?params -> a searchset Bundle, paged by _count/_getpagesoffset."""
    kind = request.match_info["kind"]
    if kind not in _SEARCH_PARAMS:
        raise FhirError(404, "not-supported", f"resource type {kind} is not served here")
    query = request.query
    allowed = _SEARCH_PARAMS[kind] | _COMMON
    for key in query:
        if key not in allowed:
            raise FhirError(400, "not-supported", f"search parameter {key!r} is not supported")
    params = {key: query.getall(key) for key in set(query)}
    count = _int_param(params, "_count", DEFAULT_COUNT, 1, MAX_COUNT)
    offset = _int_param(params, "_getpagesoffset", 0, 0, 10**9)
    for name, table in (("_include", _INCLUDES), ("_revinclude", _REVINCLUDES)):
        for value in params.get(name, ()):
            if value not in table.get(kind, set()):
                raise FhirError(400, "not-supported", f"{name}={value} is not supported")
    state = request.app[SIM_STATE]
    matches = _search_rows(state, kind, params)
    page = matches[offset : offset + count]
    included = _included(state, kind, page, params)
    resources = [_RENDER[kind](row) for row in page]
    return fhir_response(_bundle(request, resources, included, len(matches), offset, count))


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    try:
        return max(low, min(high, int(values[-1])))
    except ValueError:
        raise FhirError(400, "invalid", f"{name} must be an integer") from None


def _search_rows(state: SimState, kind: str, params: dict[str, list[str]]) -> list[Row]:
    ids = _ids(params.get("_id", []))
    one = _single(params)
    if kind == "Organization":
        rows = state.organizations(ids=ids)
        if "partof" in params:
            parent = _reference(one("partof"), "Organization")
            rows = [r for r in rows if r["part_of"] == parent]
        if "type" in params:
            want = one("type").rpartition("|")[2]
            rows = [r for r in rows if ("dept" if r["part_of"] else "prov") == want]
        return rows
    if kind == "Location":
        organization = one("organization") if "organization" in params else None
        return state.locations(
            ids=ids,
            organization=_reference(organization, "Organization") if organization else None,
        )
    if kind == "Practitioner":
        return state.practitioners(ids=ids)
    if kind == "PractitionerRole":
        rows = state.practitioners(
            ids=[_practitioner_of_role(i) for i in ids],
            department=(
                _reference(one("organization"), "Organization")
                if "organization" in params
                else None
            ),
        )
        if "practitioner" in params:
            wanted = _reference(one("practitioner"), "Practitioner")
            rows = [r for r in rows if r["id"] == wanted]
        return rows
    if kind == "Schedule":
        practitioners: list[str] = []
        locations: list[str] = []
        for actor in params.get("actor", []):
            if "PractitionerRole/" in actor:
                practitioners.append(_practitioner_of_role(_reference(actor, "PractitionerRole")))
            elif "Location/" in actor:
                locations.append(_reference(actor, "Location"))
            else:
                raise FhirError(400, "invalid", "actor must be PractitionerRole/.. or Location/..")
        active = None
        if "active" in params:
            active = one("active") == "true"
        return state.schedules(
            ids=ids,
            date_bounds=_date_bounds(params.get("date", [])),
            practitioners=practitioners,
            locations=locations,
            active=active,
        )
    if kind == "Slot":
        rows = state.slots(
            ids=ids,
            schedules=[_reference(v, "Schedule") for v in params.get("schedule", [])],
            date_bounds=_date_bounds(params.get("start", [])),
        )
        if "status" in params:
            rows = [r for r in rows if render.slot_status(r) == one("status")]
        return rows
    # Appointment
    return state.appointments(
        ids=ids,
        identifiers=[_token(v) for v in params.get("identifier", [])],
        date_bounds=_date_bounds(params.get("date", [])),
        slots=[_reference(v, "Slot") for v in params.get("slot", [])],
        schedules=[_reference(v, "Schedule") for v in params.get("slot.schedule", [])],
        statuses=_ids(params.get("status", [])),
    )


def _single(params: dict[str, list[str]]) -> Callable[[str], str]:
    def one(name: str) -> str:
        values = params[name]
        if len(values) != 1:
            raise FhirError(400, "not-supported", f"{name} may be given once")
        return values[0]

    return one


def _included(
    state: SimState, kind: str, page: list[Row], params: dict[str, list[str]]
) -> list[dict[str, Any]]:
    included: dict[tuple[str, str], dict[str, Any]] = {}

    def add(resources: Iterable[dict[str, Any]]) -> None:
        for resource in resources:
            included.setdefault((resource["resourceType"], resource["id"]), resource)

    if kind == "Schedule" and page:
        if "Schedule:actor" in params.get("_include", []):
            add(
                render.practitioner_role(r)
                for r in state.practitioners(ids=sorted({r["practitioner_id"] for r in page}))
            )
            add(
                render.location(r)
                for r in state.locations(ids=sorted({r["location_id"] for r in page}))
            )
        if "Slot:schedule" in params.get("_revinclude", []):
            add(render.slot(r) for r in state.slots(schedules=[r["id"] for r in page]))
    if (
        kind == "PractitionerRole"
        and page
        and "PractitionerRole:practitioner" in params.get("_include", [])
    ):
        add(render.practitioner(r) for r in page)
    return list(included.values())


def _bundle(
    request: web.Request,
    matches: list[dict[str, Any]],
    included: list[dict[str, Any]],
    total: int,
    offset: int,
    count: int,
) -> dict[str, Any]:
    base = str(request.url.origin()) + request.app[SIM_BASE] + FHIR_BASE

    def entry(resource: dict[str, Any], mode: str) -> dict[str, Any]:
        return {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": mode},
        }

    links = [{"relation": "self", "url": str(request.url)}]
    if offset + count < total:
        links.append(
            {
                "relation": "next",
                "url": str(
                    request.url.update_query(
                        {"_getpagesoffset": str(offset + count), "_count": str(count)}
                    )
                ),
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [entry(r, "match") for r in matches] + [entry(r, "include") for r in included],
    }


# --------------------------------------------------------------------------------------
# FHIR: create and cancel
# --------------------------------------------------------------------------------------


async def _json_body(request: web.Request, types: tuple[str, ...]) -> Any:
    if request.content_type not in types:
        raise FhirError(415, "not-supported", f"send {' or '.join(types)}")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FhirError(400, "structure", "the body is not JSON") from None


def _condition(header: str) -> tuple[str | None, str]:
    parsed = parse_qs(header, keep_blank_values=True)
    if set(parsed) != {"identifier"} or len(parsed["identifier"]) != 1:
        raise FhirError(400, "not-supported", "If-None-Exist supports one identifier=system|value")
    return _token(parsed["identifier"][0])


def _channel_of(system: str) -> str:
    for channel in CHANNELS:
        if system == SYSTEMS.channel_identifier(channel):
            return channel
    return "platform" if system == SYSTEMS.booking else "external"


async def create_appointment(request: web.Request) -> web.Response:
    """POST [base]/Appointment, conditional on If-None-Exist: 201 new, 200 existing."""
    body = await _json_body(request, (FHIR_JSON, "application/json"))
    if not isinstance(body, dict) or body.get("resourceType") != "Appointment":
        raise FhirError(400, "structure", "the body is not an Appointment")
    try:
        appointment = Appointment.model_validate(body)
    except ValidationError as error:
        raise FhirError(
            422, "invalid", f"invalid Appointment: {error.errors()[0]['msg']}", "invalid"
        ) from None
    if appointment.status not in ("booked", "proposed", "pending"):
        raise FhirError(422, "invalid", "a new Appointment must be booked", "invalid")
    slots = [r.reference for r in appointment.slot or () if r.reference]
    if len(slots) != 1 or not str(slots[0]).startswith("Slot/"):
        raise FhirError(422, "invalid", "name exactly one Slot/<id>", "invalid")
    identifiers = [
        (str(i.system), str(i.value)) for i in appointment.identifier or () if i.system and i.value
    ]
    state = request.app[SIM_STATE]
    header = request.headers.get("If-None-Exist")
    if header is not None:
        condition = _condition(header)
        found = state.appointments(identifiers=[condition])
        if len(found) > 1:
            raise FhirError(412, "duplicate", "several appointments match", "conflict")
        if found:
            resource = render.appointment(found[0])
            return fhir_response(resource, headers=_etag(resource))
        if any(s == condition[0] and v != condition[1] for s, v in identifiers):
            raise FhirError(400, "invalid", "If-None-Exist names another identifier", "invalid")
        if condition[0] is not None and condition not in identifiers:
            identifiers.insert(0, (condition[0], condition[1]))
    if not identifiers:
        raise FhirError(422, "invalid", "an Appointment needs an identifier", "invalid")
    system, value = next(((s, v) for s, v in identifiers if s == SYSTEMS.booking), identifiers[0])
    patient_name = patient_system = patient_value = None
    for participant in appointment.participant or ():
        actor = participant.actor
        if actor is not None and actor.display and not actor.reference:
            patient_name = str(actor.display)
            if actor.identifier is not None:
                patient_system = str(actor.identifier.system or "") or None
                patient_value = str(actor.identifier.value or "") or None
            break
    row, created = state.create_appointment(
        system=system,
        value=value,
        slot_id=str(slots[0]).split("/", 1)[1],
        channel=_channel_of(system),
        patient_name=patient_name,
        patient_system=patient_system,
        patient_value=patient_value,
    )
    if not created and header is None:
        raise FhirError(409, "duplicate", f"identifier {system}|{value} is taken", "conflict")
    resource = render.appointment(row)
    headers = _etag(resource)
    if created:
        headers["Location"] = (
            f"{request.url.origin()}{request.app[SIM_BASE]}{FHIR_BASE}/Appointment/"
            f"{row['id']}/_history/{row['version']}"
        )
    return fhir_response(resource, status=201 if created else 200, headers=headers)


async def patch_appointment(request: web.Request) -> web.Response:
    """PATCH [base]/Appointment/{id} with a JSON Patch that sets status to cancelled."""
    patch = await _json_body(request, ("application/json-patch+json",))
    if not isinstance(patch, list) or not patch:
        raise FhirError(400, "structure", "a JSON Patch is a non-empty list")
    status = None
    reason = "cancelled by the platform"
    for op in patch:
        if not isinstance(op, dict) or op.get("op") not in ("replace", "add"):
            raise FhirError(422, "not-supported", "only replace/add operations", "invalid")
        if op.get("path") == "/status":
            status = op.get("value")
        elif op.get("path") == "/cancelationReason":
            value = op.get("value")
            if isinstance(value, dict) and isinstance(value.get("text"), str):
                reason = value["text"][:200]
        else:
            raise FhirError(422, "not-supported", f"cannot patch {op.get('path')!r}", "invalid")
    if status != "cancelled":
        raise FhirError(422, "not-supported", "the only change supported is a cancel", "invalid")
    row = request.app[SIM_STATE].cancel_appointment(request.match_info["id"], reason)
    resource = render.appointment(row)
    return fhir_response(resource, headers=_etag(resource))


# --------------------------------------------------------------------------------------
# admin
# --------------------------------------------------------------------------------------


async def _admin_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("send a JSON object")
    return data


async def admin_state(request: web.Request) -> web.Response:
    """GET /$admin/state[?arrivals=1]: counts, request stats, faults in force."""
    injector = request.app[SIM_FAULTS]
    answer = {
        "state": request.app[SIM_STATE].summary(),
        "requests": injector.stats.to_json(with_arrivals=request.query.get("arrivals") == "1"),
        "faults": injector.config.to_json(),
    }
    hospital = request.app.get(SIM_HOSPITAL)
    if hospital is not None:
        answer["auth"] = request.app[SIM_ISSUER].summary(hospital.id)
    return admin_response(answer)


async def admin_faults(request: web.Request) -> web.Response:
    """GET the faults; POST merges changes; DELETE clears every fault."""
    injector = request.app[SIM_FAULTS]
    if request.method not in ("GET", "POST", "DELETE"):
        return admin_response({"error": "method-not-allowed"}, status=405)
    if request.method == "POST":
        injector.config = injector.config.updated(await _admin_body(request))
    elif request.method == "DELETE":
        injector.config = FaultConfig()
    return admin_response(injector.config.to_json())


async def admin_reset_stats(request: web.Request) -> web.Response:
    """POST /$admin/stats/reset: forget request counts and arrival times."""
    request.app[SIM_FAULTS].reset_stats()
    return admin_response({"ok": True})


async def admin_suspend(request: web.Request) -> web.Response:
    """POST /$admin/schedules/{id}/suspend {reason?, cancel_appointments?}: 停诊."""
    body = await _admin_body(request)
    cancelled = request.app[SIM_STATE].set_schedule_active(
        request.match_info["id"],
        False,
        str(body.get("reason") or "停诊"),
        cancel_appointments=bool(body.get("cancel_appointments", False)),
    )
    return admin_response({"schedule": request.match_info["id"], "cancelled": cancelled})


async def admin_resume(request: web.Request) -> web.Response:
    """POST /$admin/schedules/{id}/resume: open a suspended schedule again."""
    request.app[SIM_STATE].set_schedule_active(
        request.match_info["id"], True, None, cancel_appointments=False
    )
    return admin_response({"schedule": request.match_info["id"], "active": True})


async def admin_add_schedule(request: web.Request) -> web.Response:
    """POST /$admin/schedules {doctor?, date, session, slots?, capacity?, fee_fen?,
    release_at?, id?}: a new schedule appears in the HIS. Without ``doctor`` the first
    doctor is taken; ``id`` names the schedule (its slots are ``<id>-1``, ...), so a
    doctor can have a second schedule in a session (a load test's). The answer names
    the schedule, its slots, department and date."""
    body = await _admin_body(request)
    state = request.app[SIM_STATE]
    doctors = state.practitioners(ids=[str(body["doctor"])] if "doctor" in body else [])
    if not doctors:
        raise SimNotFound(f"Practitioner/{body.get('doctor', '')}")
    doctor = doctors[0]
    session = str(body.get("session", "morning"))
    if session not in SESSIONS:
        raise ValueError(f"session must be one of {SESSIONS}")
    slots = int(body.get("slots", 4))
    capacity = body.get("capacity", 4)
    capacities = capacity if isinstance(capacity, list) else [int(capacity)] * slots
    if len(capacities) != slots or slots < 1 or any(int(c) < 0 for c in capacities):
        raise ValueError("give one non-negative capacity per slot")
    fees = dict(TITLES)
    release = body.get("release_at")
    schedule = build_schedule(
        doctor=doctor,
        day=date.fromisoformat(str(body["date"])),
        session=session,
        slots=slots,
        capacities=[int(c) for c in capacities],
        fee_fen=int(body.get("fee_fen", fees[doctor["title_code"]])),
        release_at=datetime.fromisoformat(str(release)) if release else None,
        schedule_id=str(body["id"]) if body.get("id") else None,
    )
    if not state.add_schedules([schedule]):
        raise SimRefusal("conflict", f"Schedule/{schedule.schedule_id} exists")
    return admin_response(
        {
            "schedule": schedule.schedule_id,
            "slots": [s.slot_id for s in schedule.slots],
            "department": doctor["department_id"],
            "date": schedule.visit_date.isoformat(),
        },
        status=201,
    )


async def admin_capacity(request: web.Request) -> web.Response:
    """POST /$admin/slots/{id}/capacity {"add": n} (加号; negative reduces) or {"set": n}."""
    body = await _admin_body(request)
    add, to = body.get("add"), body.get("set")
    if (add is None) == (to is None):
        raise ValueError('give "add" or "set"')
    row = request.app[SIM_STATE].change_capacity(
        request.match_info["id"],
        add=int(add) if add is not None else None,
        to=int(to) if to is not None else None,
    )
    return admin_response({"slot": row["id"], "capacity": row["capacity"], "booked": row["booked"]})


async def admin_book(request: web.Request) -> web.Response:
    """POST /$admin/slots/{id}/book {channel: window|phone, count?, patient?}: bookings
    made at the hospital's window or by phone, with their own identifiers."""
    body = await _admin_body(request)
    channel = str(body.get("channel", "window"))
    if channel not in ("window", "phone"):
        raise ValueError("channel must be window or phone")
    state = request.app[SIM_STATE]
    made = []
    for _ in range(int(body.get("count", 1))):
        row, _created = state.create_appointment(
            system=SYSTEMS.channel_identifier(channel),
            value=state.next_external_id(channel),
            slot_id=request.match_info["id"],
            channel=channel,
            patient_name=str(body.get("patient") or "窗口患者"),
        )
        made.append(
            {"id": row["id"], "identifier": row["identifier_value"], "number": row["number"]}
        )
    return admin_response({"appointments": made}, status=201)


async def admin_cancel(request: web.Request) -> web.Response:
    """POST /$admin/appointments/{id}/cancel {reason?}: the hospital cancels."""
    body = await _admin_body(request)
    row = request.app[SIM_STATE].cancel_appointment(
        request.match_info["id"], str(body.get("reason") or "cancelled by the hospital"), force=True
    )
    return admin_response({"appointment": row["id"], "status": row["status"]})


async def admin_visit(request: web.Request) -> web.Response:
    """POST /$admin/appointments/{id}/status {status: arrived|fulfilled|noshow,
    consultation_start?, consultation_end?}: the hospital records the visit (签到, the
    consultation, a no-show)."""
    body = await _admin_body(request)
    times = []
    for name in ("consultation_start", "consultation_end"):
        value = body.get(name)
        if value is not None and datetime.fromisoformat(str(value)).tzinfo is None:
            raise ValueError(f"{name} needs a time zone offset")
        times.append(str(value) if value is not None else None)
    row = request.app[SIM_STATE].mark_visit(
        request.match_info["id"], str(body.get("status", "")), consultation=(times[0], times[1])
    )
    return admin_response({"appointment": row["id"], "status": row["status"]})


async def admin_delete(request: web.Request) -> web.Response:
    """DELETE /$admin/appointments/{id}: the HIS loses an appointment."""
    request.app[SIM_STATE].delete_appointment(request.match_info["id"])
    return admin_response({"appointment": request.match_info["id"], "deleted": True})


async def token(request: web.Request) -> web.Response:
    """POST /h/<id>/auth/token: OAuth 2.0 client credentials (see auth.py)."""
    hospital = request.app[SIM_HOSPITAL]
    if request.content_type != "application/x-www-form-urlencoded":
        return admin_response({"error": "invalid_request"}, status=400)
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = f"{request.url.origin()}{request.app[SIM_BASE]}{TOKEN_PATH}"
    try:
        answer = request.app[SIM_ISSUER].token(
            hospital, url, form, request.headers.get("Authorization")
        )
    except AuthRefused as refused:
        # The reason goes to the counters, not to the caller (as a real server does).
        response = admin_response({"error": refused.error}, status=refused.status)
        if refused.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="token"'
        return response
    response = admin_response(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


async def admin_auth(request: web.Request) -> web.Response:
    """POST /h/<id>/$admin/auth {"token_ttl_s"?, "revoke"?, "expire"?}: a shorter life
    for new tokens; every token revoked (unknown from now on) or expired now."""
    hospital = request.app[SIM_HOSPITAL]
    issuer = request.app[SIM_ISSUER]
    body = await _admin_body(request)
    if "token_ttl_s" in body:
        ttl = float(body["token_ttl_s"])
        if ttl <= 0:
            raise ValueError("token_ttl_s must be positive")
        issuer.ttl_s[hospital.id] = ttl
    answer: dict[str, Any] = {}
    if body.get("revoke"):
        answer["revoked"] = issuer.revoke(hospital.id)
    if body.get("expire"):
        answer["expired"] = issuer.expire(hospital.id)
    return admin_response(answer | issuer.summary(hospital.id))


def create_sim_app(
    state: SimState,
    faults: FaultConfig,
    rng: random.Random,
    *,
    hospital: SimHospital | None = None,
    issuer: TokenIssuer | None = None,
) -> web.Application:
    """The simulator's application over an open state: the single HIS at the root, or
    one hospital of several (mounted at ``hospital.base`` by :func:`create_multi_app`,
    with its token endpoint at ``auth/token``)."""
    app = web.Application(middlewares=[sim_middleware], client_max_size=MAX_BODY_BYTES)
    app[SIM_STATE] = state
    app[SIM_FAULTS] = FaultInjector(faults, rng)
    app[SIM_BASE] = hospital.base if hospital is not None else ""
    if hospital is not None:
        app[SIM_HOSPITAL] = hospital
        app[SIM_ISSUER] = issuer or TokenIssuer()
    r = app.router
    if hospital is not None:
        r.add_post(TOKEN_PATH, token)
        r.add_post(f"{ADMIN_BASE}/auth", admin_auth)
    r.add_get(f"{FHIR_BASE}/metadata", metadata)
    r.add_post(f"{FHIR_BASE}/Appointment", create_appointment)
    r.add_patch(f"{FHIR_BASE}/Appointment/{{id}}", patch_appointment)
    r.add_get(f"{FHIR_BASE}/{{kind}}", search)
    r.add_get(f"{FHIR_BASE}/{{kind}}/{{id}}", read)
    r.add_get(f"{ADMIN_BASE}/state", admin_state)
    r.add_route("*", f"{ADMIN_BASE}/faults", admin_faults)
    r.add_post(f"{ADMIN_BASE}/stats/reset", admin_reset_stats)
    r.add_post(f"{ADMIN_BASE}/schedules", admin_add_schedule)
    r.add_post(f"{ADMIN_BASE}/schedules/{{id}}/suspend", admin_suspend)
    r.add_post(f"{ADMIN_BASE}/schedules/{{id}}/resume", admin_resume)
    r.add_post(f"{ADMIN_BASE}/slots/{{id}}/capacity", admin_capacity)
    r.add_post(f"{ADMIN_BASE}/slots/{{id}}/book", admin_book)
    r.add_post(f"{ADMIN_BASE}/appointments/{{id}}/cancel", admin_cancel)
    r.add_post(f"{ADMIN_BASE}/appointments/{{id}}/status", admin_visit)
    r.add_delete(f"{ADMIN_BASE}/appointments/{{id}}", admin_delete)
    return app


def create_multi_app(
    hospitals: list[tuple[SimHospital, SimState]], faults: FaultConfig, rng: random.Random
) -> web.Application:
    """Several hospitals' HIS in one server, each under ``/h/<id>/`` with its own state,
    faults (``/h/<id>/$admin/faults``) and credentials; one token issuer for all."""
    root = web.Application(client_max_size=MAX_BODY_BYTES)
    issuer = TokenIssuer()
    for hospital, state in hospitals:
        sub = create_sim_app(
            state, faults, random.Random(rng.random()), hospital=hospital, issuer=issuer
        )
        root.add_subapp(hospital.base + "/", sub)
    return root
