"""Operator routes of capacity planning: the M/M/s figures, the inverse questions, and a
department's estimate from its bookings in Postgres fed into the model (docs/capacity.md).

Rates are per hour, waits in the query string in minutes, times in answers in hours.
Every refusal of the capacity module (nonsense input, an unstable system, an unreachable
target, too little data) is a 422 validation problem whose error item carries the
module's code (``capacity_invalid_input``, ``capacity_unstable``,
``capacity_target_unreachable``, ``capacity_insufficient_data``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import Field

from inventory.api import views
from inventory.api.auth import operator_for, principal
from inventory.api.bodies import json_response, read_query
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES
from inventory.api.models import Day, Request
from inventory.api.routing import Routes
from inventory.capacity.errors import CapacityError, InsufficientDataError
from inventory.capacity.estimate import DepartmentEstimate
from inventory.capacity.mms import MMsResult, mms_metrics
from inventory.capacity.planning import max_arrival_rate_for_wait, min_servers_for_wait
from inventory.capacity.records import estimate_department
from inventory.capacity.validation import MAX_SERVERS
from inventory.errors import ValidationFailedError

routes = Routes(tag="operator")
#: What every capacity route may answer instead of figures: an operator's token is needed
#: (401, 403), and a malformed or unanswerable question is refused (400, 422).
_ERRORS = (400, 401, 403, 422)

_MINUTES_PER_HOUR = 60.0
#: The longest period a department estimate reads, in days.
MAX_PERIOD_DAYS = 366

T = TypeVar("T")


#: A rate per hour, a wait or a duration: a finite number above 0 (the bound is part of
#: the OpenAPI document, and a refusal names the parameter that broke it).
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: Doctors: the model's supported range.
Servers = Annotated[int, Field(ge=1, le=MAX_SERVERS)]


class CapacityQuery(Request):
    """The M/M/s system: arrival and service rates per hour, doctors."""

    arrival_rate: Positive
    service_rate: Positive
    servers: Servers


class MinServersQuery(Request):
    """Rates per hour and the target mean wait in queue, in minutes."""

    arrival_rate: Positive
    service_rate: Positive
    max_wait_minutes: Positive


class MaxRateQuery(Request):
    """Service rate per hour, doctors, target mean wait (minutes), optional session length."""

    service_rate: Positive
    servers: Servers
    max_wait_minutes: Positive
    session_hours: Positive | None = None


class DepartmentCapacityQuery(Request):
    """Period of visit dates (inclusive), doctors, and the service rate when none is known."""

    from_: Day = Field(alias="from")
    to: Annotated[Day, Field(description="not before from, at most 366 days after it")]
    servers: Servers
    service_rate: Positive | None = None


def _refused(field: str, error: CapacityError) -> ValidationFailedError:
    return ValidationFailedError(
        str(error), errors=[{"field": field, "reason": str(error), "code": error.code}]
    )


def _guard(field: str, compute: Callable[[], T]) -> T:
    try:
        return compute()
    except CapacityError as error:
        raise _refused(field, error) from None
    except ArithmeticError:
        # Rates so large (or small) that the figures overflow: the input is nonsense.
        raise ValidationFailedError(
            errors=[{"field": field, "reason": "the numbers are out of a computable range"}]
        ) from None


def _figures(result: MMsResult) -> dict[str, Any]:
    return {
        "arrival_rate": result.arrival_rate,
        "service_rate": result.service_rate,
        "servers": result.servers,
        "utilization": result.utilization,
        "p_wait": result.p_wait,
        "wq_hours": result.wq_hours,
        "w_hours": result.w_hours,
        "lq": result.lq,
        "l": result.l,
    }


def _wait_hours(minutes: float) -> float:
    return minutes / _MINUTES_PER_HOUR


@routes.get(
    "/v1/operator/capacity",
    operation_id="get_capacity",
    summary="M/M/s figures of a clinic session (rates per hour; 422 when unstable)",
    response=views.MmsFigures,
    auth="operator",
    query=CapacityQuery,
    errors=_ERRORS,
)
async def get_capacity(request: web.Request) -> web.Response:
    """The exact M/M/s figures of a system (422 when unstable or nonsense)."""
    principal(request, operator=True)
    query = read_query(request, CapacityQuery)
    result = _guard(
        "arrival_rate", lambda: mms_metrics(query.arrival_rate, query.service_rate, query.servers)
    )
    return json_response(_figures(result))


@routes.get(
    "/v1/operator/capacity/min-servers",
    operation_id="get_capacity_min_servers",
    summary="The fewest doctors keeping the mean wait in queue under max_wait_minutes",
    response=views.MinServersAnswer,
    auth="operator",
    query=MinServersQuery,
    errors=_ERRORS,
)
async def get_min_servers(request: web.Request) -> web.Response:
    """The fewest doctors that keep the mean wait in queue under the target."""
    principal(request, operator=True)
    query = read_query(request, MinServersQuery)
    target = _wait_hours(query.max_wait_minutes)
    servers = _guard(
        "max_wait_minutes",
        lambda: min_servers_for_wait(query.arrival_rate, query.service_rate, target),
    )
    result = mms_metrics(query.arrival_rate, query.service_rate, servers)
    return json_response(
        {
            "servers": servers,
            "max_wait_minutes": query.max_wait_minutes,
            "figures": _figures(result),
        }
    )


@routes.get(
    "/v1/operator/capacity/max-rate",
    operation_id="get_capacity_max_rate",
    summary="The most patients per hour (and per session) the doctors take under the target",
    response=views.MaxRateAnswer,
    auth="operator",
    query=MaxRateQuery,
    errors=_ERRORS,
)
async def get_max_rate(request: web.Request) -> web.Response:
    """The most patients per hour (and per session) the doctors take under the target."""
    principal(request, operator=True)
    query = read_query(request, MaxRateQuery)
    target = _wait_hours(query.max_wait_minutes)
    rate = _guard(
        "max_wait_minutes",
        lambda: max_arrival_rate_for_wait(query.service_rate, query.servers, target),
    )
    answer: dict[str, Any] = {
        "max_arrival_rate": rate,
        "servers": query.servers,
        "service_rate": query.service_rate,
        "max_wait_minutes": query.max_wait_minutes,
        "patients_per_session": None,
    }
    if query.session_hours is not None:
        hours = query.session_hours
        if not (hours > 0.0 and hours < float("inf")):
            raise ValidationFailedError(
                errors=[{"field": "session_hours", "reason": "must be a finite number > 0"}]
            )
        per_session = rate * hours
        # A count JSON can carry (orjson writes 64-bit integers; past that, and at inf,
        # the rate is too large for a session count to mean anything).
        if not per_session < 2**63:
            raise ValidationFailedError(
                errors=[{"field": "session_hours", "reason": "too large for the arrival rate"}]
            )
        answer["session_hours"] = hours
        answer["patients_per_session"] = int(per_session)
    return json_response(answer)


def _estimate_view(estimate: DepartmentEstimate) -> dict[str, Any]:
    view = asdict(estimate)
    view["effective_arrival_rate_per_hour"] = estimate.effective_arrival_rate_per_hour
    return view


@routes.get(
    "/v1/operator/departments/{department_id}/capacity",
    operation_id="get_department_capacity",
    summary="A department's rates estimated from its bookings, fed into the M/M/s model "
    "(service_rate is needed while consultation lengths are not recorded)",
    response=views.DepartmentCapacityAnswer,
    auth="operator",
    query=DepartmentCapacityQuery,
    errors=(*_ERRORS, 404, 503),
)
async def get_department_capacity(request: web.Request) -> web.Response:
    """A department's rates estimated from its bookings, fed into the M/M/s model."""
    department_id = path_id(request, "department_id")
    department = await request.app[SERVICES].catalogue.department(department_id)
    # A hospital operator sees its hospitals' departments only (another's answers 404).
    operator_for(request, None if department is None else department["hospital_id"])
    query = read_query(request, DepartmentCapacityQuery)
    if query.to < query.from_:
        raise ValidationFailedError(errors=[{"field": "to", "reason": "must not be before from"}])
    if (query.to - query.from_).days >= MAX_PERIOD_DAYS:
        raise ValidationFailedError(
            errors=[{"field": "to", "reason": f"the period is limited to {MAX_PERIOD_DAYS} days"}]
        )
    rows = await request.app[SERVICES].bookings.department_outcomes(
        department_id, query.from_, query.to
    )
    estimate = _guard("from", lambda: estimate_department(department_id, rows))
    arrival = estimate.effective_arrival_rate_per_hour
    if arrival is None or arrival <= 0.0:
        raise _refused(
            "from",
            InsufficientDataError(
                f"department {department_id!r}: no attended booking in the period, so "
                "there is no arrival rate to model"
            ),
        )
    service_rate = query.service_rate
    service_source = "query"
    if service_rate is None:
        service_rate = estimate.service_rate_per_hour
        service_source = "bookings"
    if service_rate is None:
        raise _refused(
            "service_rate",
            InsufficientDataError(
                "no consultation lengths are recorded, so the service rate must be given "
                "as the service_rate query parameter"
            ),
        )
    result = _guard("servers", lambda: mms_metrics(arrival, service_rate, query.servers))
    return json_response(
        {
            "department_id": department_id,
            "from": query.from_.isoformat(),
            "to": query.to.isoformat(),
            "estimate": _estimate_view(estimate),
            "service_rate_source": service_source,
            "figures": _figures(result),
        }
    )
