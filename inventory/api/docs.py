"""``/openapi.json`` and a human docs page rendered from the same document (no
JavaScript or CDN: the page must work on a hospital's closed network)."""

from __future__ import annotations

import html
from functools import cache

import orjson
from aiohttp import web

from inventory.api.openapi import build_openapi

routes = web.RouteTableDef()


@cache
def _document() -> bytes:
    return orjson.dumps(build_openapi())


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document."""
    return web.Response(body=_document(), content_type="application/json")


@cache
def _page() -> str:
    doc = build_openapi()
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            auth = (
                "operator"
                if "operator" in op.get("description", "")
                else ("account" if op["security"] else "public")
            )
            statuses = ", ".join(sorted(op["responses"]))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op['summary'])}</td><td>{auth}</td>"
                f"<td>{statuses}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>slot-inventory API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])} The machine-readable contract is "
        "<a href='/openapi.json'>/openapi.json</a>; the guide is docs/api.md.</p>"
        "<table><tr><th>method</th><th>path</th><th>what</th><th>auth</th><th>statuses</th>"
        "</tr>" + "".join(rows) + "</table></body></html>"
    )


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """The human-readable API reference."""
    return web.Response(text=_page(), content_type="text/html")
