"""The staff console's files as the API serves them: the page under the same strict
Content-Security-Policy as the patient app, every module the console imports served from
this origin, nothing else under ``/console/``, and every call its API client makes an
operation of the OpenAPI document (no side door)."""

from __future__ import annotations

import re
from importlib import resources

import aiohttp

from inventory.api.routes import OPERATIONS
from inventory.api.webapp import CONTENT_SECURITY_POLICY

from .conftest import ApiServer
from .modules import follow_imports

CONSOLE = resources.files("inventory").joinpath("web", "console")


async def test_the_console_page_has_the_strict_policy_and_no_inline_script(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(api_server.url + "/console/") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/html"
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        page = await answer.text()
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script type="module" src="/console/main.js">'], scripts
    assert "style=" not in page
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page


async def test_every_module_the_console_imports_is_served(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Following the imports from main.js reaches only files served as JavaScript under
    the policy; no module imports from another origin, none sets a style attribute (the
    policy would refuse it)."""
    sources = await follow_imports(http, api_server.url, "/console/main.js")
    for path, source in sources.items():
        assert "innerHTML" not in source, path
        assert 'setAttribute("style"' not in source, path
    seen = set(sources)
    shipped = {entry.name for entry in CONSOLE.joinpath("views").iterdir()}
    assert {f"/console/views/{name}" for name in shipped} <= seen
    assert "/shared/format.js" in seen
    for name in ("console.css", "icon.svg"):
        async with http.get(f"{api_server.url}/console/{name}") as answer:
            assert answer.status == 200, name


async def test_nothing_else_is_served_under_console(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    for path in (
        "/console/nope.js",
        "/console/index.html",
        "/console/..%2F__init__.py",
        "/console/views/..%2F..%2Fapp.py",
        "/console/views/nope.js",
        "/console/views/..%2F..%2Fapp%2Fmain.js",
    ):
        async with http.get(api_server.url + path) as answer:
            assert answer.status == 404, path
            assert answer.content_type == "application/problem+json", path


def test_every_call_of_the_console_client_is_a_documented_operation() -> None:
    """api.js calls only operations of the document, and covers what the console does:
    the release day, 加号, suspension with its preview, reopen, the booking lookup,
    cancel with refund, check-in, no-show, the blacklist and the report."""
    source = CONSOLE.joinpath("api.js").read_text(encoding="utf-8")
    calls = re.findall(r'this\.call\("([A-Z]+)", [`"]([^`"]+)[`"]', source)
    assert len(calls) == source.count("this.call("), calls
    documented = {(op.method.upper(), re.sub(r"\{[^}]+\}", "{}", op.path)) for op in OPERATIONS}
    used = set()
    for method, path in calls:
        template = re.sub(r"\$\{[^}]+\}", "{}", path)
        assert (method, template) in documented, (method, path)
        used.add((method, template))
    assert {
        ("GET", "/v1/operator/hospitals/{}/day"),
        ("PUT", "/v1/operator/slots/{}/capacity"),
        ("GET", "/v1/operator/schedules/{}/suspension-preview"),
        ("POST", "/v1/operator/schedules/{}/suspend"),
        ("POST", "/v1/operator/schedules/{}/reopen"),
        ("GET", "/v1/operator/hospitals/{}/bookings"),
        ("POST", "/v1/operator/bookings/{}/cancel"),
        ("POST", "/v1/staff/bookings/{}/check-in"),
        ("POST", "/v1/operator/bookings/{}/no-show"),
        ("GET", "/v1/operator/hospitals/{}/bans"),
        ("POST", "/v1/operator/hospitals/{}/patients/{}/bans/lift"),
        ("GET", "/v1/operator/hospitals/{}/report"),
        ("GET", "/v1/operator/hospitals/{}/report/plot"),
    } <= used
