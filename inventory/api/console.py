"""The staff console: its files under ``/console/``.

The console is the operators' front end (release day, bookings, suspensions, 加号,
no-shows, the blacklist, the report), built as the patient app is: plain HTML, CSS and
ES modules shipped in the package (``inventory/web/console/``), no build step, nothing
from another origin, served under the same strict Content-Security-Policy
(:data:`inventory.api.webapp.CONTENT_SECURITY_POLICY`). It calls the operator routes
of the API with the operator's token, like any other client.
"""

from __future__ import annotations

from functools import cache

from aiohttp import web

from inventory.api.routing import Routes
from inventory.api.webapp import SECURITY_HEADERS, front_end_asset, front_end_folder

routes = Routes(tag="console")

FRONT_END = "console"


@cache
def _shell() -> str:
    return front_end_folder(FRONT_END).joinpath("index.html").read_text(encoding="utf-8")


@routes.get(
    "/console/",
    operation_id="console_shell",
    summary="The staff console: its page; the console itself is ES modules under /console/",
    response={"type": "string"},
    content_types=("text/html",),
)
async def console_shell(request: web.Request) -> web.Response:
    """The console's one page (the views are drawn by its modules)."""
    return web.Response(text=_shell(), content_type="text/html", headers=SECURITY_HEADERS)


@routes.get(
    "/console/{name}",
    operation_id="console_asset",
    summary="One of the staff console's files (module, style, icon)",
    response={"type": "string"},
    errors=(404,),
    content_types=("text/javascript", "text/css", "image/svg+xml"),
)
async def console_asset(request: web.Request) -> web.Response:
    """One of the console's top-level files."""
    return front_end_asset("", request.match_info["name"], FRONT_END)


@routes.get(
    "/console/views/{name}",
    operation_id="console_view",
    summary="One of the staff console's view modules",
    response={"type": "string"},
    errors=(404,),
    content_types=("text/javascript",),
)
async def console_view(request: web.Request) -> web.Response:
    """One of the console's view modules."""
    return front_end_asset("views", request.match_info["name"], FRONT_END)
