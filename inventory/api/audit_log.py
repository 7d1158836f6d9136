"""``GET /v1/operator/audit``: the operator audit log (inventory/api/audit.py writes it)
read back over a time range, by hospital, as JSON pages or CSV. A hospital operator
reads its hospitals' entries only; a platform operator every entry."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
from aiohttp import web
from pydantic import Field

from inventory.api.auth import principal
from inventory.api.bodies import json_response, read_query
from inventory.api.context import SERVICES
from inventory.api.models import Request
from inventory.api.routing import Routes
from inventory.api.views import View, examples_config
from inventory.errors import NotFoundError, ValidationFailedError
from inventory.record import audit as record

routes = Routes(tag="operator")

#: The longest range one read of the log may span.
MAX_RANGE: Final = timedelta(days=366)
CSV_TYPE: Final = "text/csv"


class AuditQuery(Request):
    hospital_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    since: datetime
    until: datetime
    after_id: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 200
    format: Annotated[str, Field(pattern=r"^(json|csv)$")] = "json"


class AuditEntry(View):
    id: int
    at: datetime
    actor: str
    role: str
    scope: list[str] | None
    hospital_id: str | None
    method: str
    route: str
    object: dict[str, str]
    request_id: str
    status: int | None
    before: Any
    after: Any
    finished_at: datetime | None


class AuditPage(View):
    model_config = examples_config(
        {
            "items": [
                {
                    "id": 41,
                    "at": "2026-12-09T08:02:11.204+00:00",
                    "actor": "ops-li",
                    "role": "hospital",
                    "scope": ["hosp-1"],
                    "hospital_id": "hosp-1",
                    "method": "POST",
                    "route": "/v1/operator/schedules/{schedule_id}/suspend",
                    "object": {"schedule_id": "sch-20261209-am"},
                    "request_id": "kdjeoanfbpqlgmcaihekdoplmnabcd",
                    "status": 200,
                    "before": {"schedule_id": "sch-20261209-am", "status": "open"},
                    "after": {"schedule_id": "sch-20261209-am", "status": "suspended"},
                    "finished_at": "2026-12-09T08:02:11.251+00:00",
                }
            ],
            "next_after_id": None,
        }
    )

    items: list[AuditEntry]
    #: Pass as ``after_id`` for the next page; null on the last one.
    next_after_id: int | None


def _range(query: AuditQuery) -> tuple[datetime, datetime]:
    since, until = query.since, query.until
    if since.tzinfo is None or until.tzinfo is None:
        raise ValidationFailedError(
            errors=[{"field": "since", "reason": "every instant needs a time zone offset"}]
        )
    if not since < until:
        raise ValidationFailedError(errors=[{"field": "until", "reason": "must be after since"}])
    if until - since > MAX_RANGE:
        raise ValidationFailedError(
            errors=[{"field": "until", "reason": "at most 366 days after since"}]
        )
    return since.astimezone(UTC), until.astimezone(UTC)


def _csv(rows: list[Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(record.COLUMNS)
    for row in rows:
        cells: list[object] = []
        for column in record.COLUMNS:
            value = row[column]
            if isinstance(value, datetime):
                cells.append(value.isoformat())
            elif isinstance(value, (dict, list)):
                cells.append(orjson.dumps(value).decode())
            else:
                cells.append("" if value is None else value)
        writer.writerow(cells)
    return out.getvalue().encode()


@routes.get(
    "/v1/operator/audit",
    operation_id="list_operator_audit",
    summary="The operator audit log over a time range, as JSON pages or CSV (a hospital"
    " operator sees its hospitals' entries only)",
    response=AuditPage,
    auth="operator",
    query=AuditQuery,
    errors=(401, 403, 404, 422, 503),
    content_types=("application/json", CSV_TYPE),
)
async def list_operator_audit(request: web.Request) -> web.Response:
    """Entries in ``[since, until)``, oldest first, ``limit`` per page after
    ``after_id``; ``format=csv`` gives the page as CSV (with a header row)."""
    who = principal(request, operator=True)
    query = read_query(request, AuditQuery)
    since, until = _range(query)
    if query.hospital_id is not None:
        if not who.acts_for(query.hospital_id):
            raise NotFoundError()  # another hospital's log, like its objects
        hospitals: list[str] | None = [query.hospital_id]
    else:
        hospitals = None if who.hospitals is None else sorted(who.hospitals)
    rows = await record.entries(
        request.app[SERVICES].db,
        hospitals=hospitals,
        since=since,
        until=until,
        after_id=query.after_id,
        limit=query.limit,
    )
    if query.format == "csv":
        return web.Response(
            body=_csv(rows),
            content_type=CSV_TYPE,
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="operator-audit.csv"'},
        )
    items = [{column: row[column] for column in record.COLUMNS} for row in rows]
    next_after_id = items[-1]["id"] if len(items) == query.limit else None
    return json_response({"items": items, "next_after_id": next_after_id})
