"""A hospital's report for its operators and the staff console: per department over a
range of visit dates, as JSON or CSV, and drawn as PNG or SVG (inventory/reports)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import Field

from inventory.api.auth import operator_for
from inventory.api.bodies import json_response, read_query
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES
from inventory.api.models import Day, Request
from inventory.api.routing import Routes
from inventory.api.views import View, examples_config
from inventory.errors import NotFoundError, ValidationFailedError
from inventory.reports.build import hospital_report
from inventory.reports.figures import HospitalReport
from inventory.reports.render import MEDIA_TYPES, report_csv, report_plot

routes = Routes(tag="operator")

#: The longest range of visit dates one report covers.
MAX_DAYS: Final = 366


class ReportQuery(Request):
    from_: Day = Field(alias="from")
    to: Annotated[Day, Field(description="not before from, at most 366 days after it")]
    format: Literal["json", "csv"] = "json"


class PlotQuery(Request):
    from_: Day = Field(alias="from")
    to: Annotated[Day, Field(description="not before from, at most 366 days after it")]
    kind: Literal["rates", "cancellations"] = "rates"
    image: Literal["png", "svg"] = "png"


_FIGURES_EXAMPLE: dict[str, Any] = {
    "schedules": 20,
    "capacity": 600,
    "booked": 540,
    "utilisation": 0.9,
    "filled_first_hour": 0.85,
    "sold_out": 15,
    "sold_out_share": 0.75,
    "median_sell_out_s": 42.0,
    "p90_sell_out_s": 310.5,
    "cancelled": 30,
    "cancellation_rate": 0.0526,
    "cancellation_leads": {
        "over_3d": 10,
        "1d_to_3d": 8,
        "2h_to_24h": 9,
        "under_2h": 3,
        "after_start": 0,
    },
    "rejected": 1,
    "visited": 400,
    "no_show": 25,
    "no_show_rate": 0.0588,
}


class HospitalReportView(View):
    model_config = examples_config(
        {
            "hospital_id": "hosp-1",
            "from": "2026-12-01",
            "to": "2026-12-31",
            "total": _FIGURES_EXAMPLE,
            "departments": [
                {
                    "department_id": "dep-cardio",
                    "name": "心内科",
                    **_FIGURES_EXAMPLE,
                    "queue": {"unavailable": "no consultation lengths are recorded"},
                }
            ],
        }
    )

    hospital_id: str
    from_: date = Field(alias="from")
    to: date
    total: dict[str, Any]
    departments: list[dict[str, Any]]


def _hospital_of(request: web.Request) -> str:
    """The path's hospital, when the operator acts for it (before the query is read:
    401, 403 and 404 come first, as on every route)."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    return hospital_id


async def _report(
    request: web.Request, hospital_id: str, first: date, last: date
) -> HospitalReport:
    if last < first:
        raise ValidationFailedError(errors=[{"field": "to", "reason": "must not be before from"}])
    if (last - first).days >= MAX_DAYS:
        raise ValidationFailedError(
            errors=[{"field": "to", "reason": f"a report covers at most {MAX_DAYS} days"}]
        )
    services = request.app[SERVICES]
    if await services.catalogue.hospital(hospital_id) is None:
        raise NotFoundError("no such hospital")
    return await hospital_report(services.db, hospital_id, first, last)


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/report",
    operation_id="get_hospital_report",
    summary="A hospital's figures per department over a range of visit dates (JSON or CSV)",
    response=HospitalReportView,
    auth="operator",
    query=ReportQuery,
    errors=(401, 403, 404, 422, 503),
    content_types=("application/json", "text/csv"),
)
async def get_hospital_report(request: web.Request) -> web.Response:
    """Fill at release, sell-out times, utilisation, cancellations and their timing,
    no-shows and the queue figures, per department and for the hospital."""
    hospital_id = _hospital_of(request)
    query = read_query(request, ReportQuery)
    report = await _report(request, hospital_id, query.from_, query.to)
    if query.format == "csv":
        return web.Response(
            body=report_csv(report),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="report-{report.hospital_id}'
                    f'-{report.first}-{report.last}.csv"'
                )
            },
        )
    return json_response(report.as_dict())


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/report/plot",
    operation_id="get_hospital_report_plot",
    summary="A hospital's report drawn: rates per department, or cancellations by lead time",
    response={"type": "string", "format": "binary"},
    auth="operator",
    query=PlotQuery,
    errors=(401, 403, 404, 422, 503),
    content_types=("image/png", "image/svg+xml"),
)
async def get_hospital_report_plot(request: web.Request) -> web.Response:
    """The report as a PNG or SVG (drawn in a worker thread: it takes tens of ms)."""
    hospital_id = _hospital_of(request)
    query = read_query(request, PlotQuery)
    report = await _report(request, hospital_id, query.from_, query.to)
    image = await asyncio.to_thread(report_plot, report, query.kind, query.image)
    return web.Response(body=image, content_type=MEDIA_TYPES[query.image])
