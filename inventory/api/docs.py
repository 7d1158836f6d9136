"""``/openapi.json`` and the human docs page: Swagger UI rendering that document.

Swagger UI's files come from the ``swagger-ui-py`` package (Apache-2.0, Swagger UI 5,
which reads OpenAPI 3.1) and are served by this process under ``/docs/assets/``: the
page fetches nothing from elsewhere, so it works on a hospital's closed network.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Final

from aiohttp import web

from inventory.api.routing import Routes
from inventory.errors import NotFoundError

routes = Routes(tag="docs")
#: The OpenAPI document's bytes, set by the app: the document describes every route
#: table, this one's among them, so this module cannot import it.
DOCUMENT: Final = web.AppKey[Callable[[], bytes]]("openapi_document")


def _assets_dir() -> Path:
    # Found, not imported: the package's own code (framework glue) takes a second to
    # import and is not needed to serve its files.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


#: Where swagger-ui-py keeps Swagger UI's distribution files.
ASSETS_DIR: Final = _assets_dir()
#: The assets the page loads, and their content types (nothing else is served).
ASSETS: Final = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "LICENSE": "text/plain",
}

PAGE: Final = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>slot-inventory API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="stylesheet" href="/docs/assets/index.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
<noscript>This page needs JavaScript; the contract itself is
<a href="/openapi.json">/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    defaultModelsExpandDepth: 1,
    defaultModelExpandDepth: 3,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
</script>
</body>
</html>
"""


@routes.get(
    "/openapi.json",
    operation_id="openapi",
    summary="This document",
    response={"type": "object"},
)
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.Response(body=request.app[DOCUMENT](), content_type="application/json")


@routes.get(
    "/docs",
    operation_id="docs",
    summary="Human-readable API reference (Swagger UI over this document, served offline)",
    response={"type": "string"},
    content_types=("text/html",),
)
async def docs(request: web.Request) -> web.Response:
    """The human-readable API reference (Swagger UI over /openapi.json)."""
    return web.Response(text=PAGE, content_type="text/html")


@cache
def _asset(name: str) -> bytes:
    return (ASSETS_DIR / name).read_bytes()


@routes.get(
    "/docs/assets/{name}",
    operation_id="docs_asset",
    summary="One of Swagger UI's files for the docs page",
    response={"type": "string", "format": "binary"},
    errors=(404,),
    content_types=("text/css", "text/javascript", "image/png", "text/plain"),
)
async def docs_asset(request: web.Request) -> web.Response:
    """One of Swagger UI's files (cached by the browser for a day)."""
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFoundError("no such asset")
    return web.Response(
        body=_asset(name),
        content_type=content_type,
        charset="utf-8" if content_type.startswith("text/") else None,
        headers={"Cache-Control": "public, max-age=86400"},
    )
