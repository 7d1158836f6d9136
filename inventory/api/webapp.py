"""The patient app (H5): its files under ``/app/``, and ``/`` sending a browser there.

The app is plain HTML, CSS and ES modules shipped in the package
(``inventory/web/app/``): no build step, nothing fetched from another origin. Its files
are read once and served with a strict Content-Security-Policy (scripts, styles, images
and API calls from this origin only; no inline script, no framing), so the page works on
a hospital's closed network and an injected string cannot run as script.

The shell page carries the app's configuration in ``<meta>`` tags, rendered per process
from the settings: where the WeChat Pay simulator's cashier is (dev only; without it the
app pays through WeChat's own JSAPI bridge, which only exists inside WeChat).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

from aiohttp import web

from inventory.api.routing import Routes
from inventory.errors import NotFoundError

routes = Routes(tag="app")


@dataclass(frozen=True)
class AppConfig:
    """What the shell page tells the app about this deployment."""

    #: The WeChat Pay simulator's address ("" outside dev): the app sends the payer to
    #: its cashier page instead of WeChat's JSAPI bridge.
    pay_simulator_url: str = ""


#: The app's configuration, set by the app factory from the settings.
APP_CONFIG: Final = web.AppKey("webapp_config", AppConfig)

#: Scripts, styles, images and API calls from this origin only; no inline script or
#: style, no plugins, no framing by another site, forms post here only.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The shell is small and names the modules by path: always ask again, so a new
    # release is picked up; the modules themselves revalidate too (no fingerprints).
    "Cache-Control": "no-cache",
}
#: The files the app is made of, by folder, and their content types: nothing else under
#: ``/app/`` is served (a name is looked up here, never joined to a path).
CONTENT_TYPES: Final = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
PLACEHOLDER: Final = "<!--app-config-->"


def front_end_folder(front_end: str = "app") -> resources.abc.Traversable:
    """Where a front end's files are shipped: ``inventory/web/<front_end>``."""
    return resources.files("inventory").joinpath("web", front_end)


@cache
def _files(folder: str, front_end: str = "app") -> dict[str, bytes]:
    """A front end's files in ``folder`` ("" for the top), by name (read once)."""
    base = front_end_folder(front_end)
    if folder:
        base = base.joinpath(folder)
    return {
        entry.name: entry.read_bytes()
        for entry in base.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in CONTENT_TYPES)
    }


@cache
def _shell(config: AppConfig) -> str:
    page = front_end_folder().joinpath("index.html").read_text(encoding="utf-8")
    meta = f'<meta name="pay-simulator" content="{html.escape(config.pay_simulator_url)}">'
    return page.replace(PLACEHOLDER, meta)


def front_end_asset(folder: str, name: str, front_end: str = "app") -> web.Response:
    """One of a front end's files (``front_end``: ``app``, ``console``), by name: a name
    is looked up among the files shipped, never joined to a path."""
    body = _files(folder, front_end).get(name)
    content_type = next((t for ext, t in CONTENT_TYPES.items() if name.endswith(ext)), None)
    if body is None or content_type is None:
        raise NotFoundError("no such file")
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8" if not content_type.startswith("image/png") else None,
        headers=SECURITY_HEADERS,
    )


@routes.get(
    "/",
    operation_id="root",
    summary="Sends a browser to the patient app (/app/)",
    response={"type": "string"},
    ok_status=302,
    content_types=("text/html",),
)
async def root(request: web.Request) -> web.Response:
    """A redirect to the patient app."""
    return web.Response(
        status=302,
        text='<!doctype html><a href="/app/">/app/</a>',
        content_type="text/html",
        headers={"Location": "/app/", **SECURITY_HEADERS},
    )


@routes.get(
    "/app/",
    operation_id="app_shell",
    summary="The patient app (H5): its page; the app itself is ES modules under /app/",
    response={"type": "string"},
    content_types=("text/html",),
)
async def app_shell(request: web.Request) -> web.Response:
    """The app's one page (the views are drawn by its modules)."""
    return web.Response(
        text=_shell(request.app[APP_CONFIG]), content_type="text/html", headers=SECURITY_HEADERS
    )


_ASSET_TYPES = ("text/javascript", "text/css", "image/svg+xml", "image/png", "application/json")


@routes.get(
    "/app/{name}",
    operation_id="app_asset",
    summary="One of the patient app's files (module, style, icon)",
    response={"type": "string"},
    errors=(404,),
    content_types=_ASSET_TYPES,
)
async def app_asset(request: web.Request) -> web.Response:
    """One of the app's top-level files."""
    return front_end_asset("", request.match_info["name"])


@routes.get(
    "/shared/{name}",
    operation_id="shared_asset",
    summary="A module the patient app and the staff console share (page building, money"
    " and time, the API's refusals)",
    response={"type": "string"},
    errors=(404,),
    content_types=("text/javascript",),
)
async def shared_asset(request: web.Request) -> web.Response:
    """One of the front ends' shared modules."""
    return front_end_asset("", request.match_info["name"], "shared")


@routes.get(
    "/app/views/{name}",
    operation_id="app_view",
    summary="One of the patient app's view modules",
    response={"type": "string"},
    errors=(404,),
    content_types=("text/javascript",),
)
async def app_view(request: web.Request) -> web.Response:
    """One of the app's view modules."""
    return front_end_asset("views", request.match_info["name"])
