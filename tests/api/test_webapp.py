"""The patient app's files as the API serves them: ``/`` sends a browser to ``/app/``,
every module the app imports is served from this origin under a strict
Content-Security-Policy, nothing else under ``/app/`` is, and every call the app's API
client makes is an operation of the OpenAPI document."""

from __future__ import annotations

import re
from importlib import resources

import aiohttp

from inventory.api.routes import OPERATIONS
from inventory.api.webapp import CONTENT_SECURITY_POLICY

from .conftest import ApiServer
from .modules import follow_imports

APP = resources.files("inventory").joinpath("web", "app")


async def test_root_sends_a_browser_to_the_app(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """GET / answers 302 to /app/."""
    async with http.get(api_server.url + "/", allow_redirects=False) as answer:
        assert answer.status == 302
        assert answer.headers["Location"] == "/app/"


async def test_the_shell_has_a_strict_policy_and_no_inline_script(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """/app/ is the page with its CSP (this origin only, no inline script, no framing),
    its configuration in a meta tag, and only external module scripts."""
    async with http.get(api_server.url + "/app/") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/html"
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        page = await answer.text()
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    # No simulator configured for this API process: the app pays through WeChat only.
    assert '<meta name="pay-simulator" content="">' in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script type="module" src="/app/main.js">'], scripts
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page


async def test_every_module_the_app_imports_is_served(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Following the imports from main.js reaches only files the API serves as
    JavaScript with the same policy (the app's, and those it shares with the console);
    no module imports from another origin."""
    seen = set(await follow_imports(http, api_server.url, "/app/main.js"))
    assert {"/app/api.js", "/app/views/confirm.js", "/shared/dom.js", "/shared/http.js"} <= seen
    for name in ("app.css", "icon.svg"):
        async with http.get(f"{api_server.url}/app/{name}") as answer:
            assert answer.status == 200, name


async def test_nothing_else_is_served_under_app(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Unknown names, other extensions and paths that climb out are 404 problem+json."""
    for path in (
        "/app/nope.js",
        "/app/index.html",
        "/app/..%2F__init__.py",
        "/app/views/..%2F..%2Fapp.py",
        "/app/views/nope.js",
    ):
        async with http.get(api_server.url + path) as answer:
            assert answer.status == 404, path
            assert answer.content_type == "application/problem+json", path


def test_every_call_of_the_api_client_is_a_documented_operation() -> None:
    """api.js is the contract's reference client: each `this.call(METHOD, path)` it
    makes matches an operation of the OpenAPI document, and it covers the patient's
    path (catalogue, patients, holds, payments, bookings, refunds)."""
    source = APP.joinpath("api.js").read_text(encoding="utf-8")
    calls = re.findall(r'this\.call\("([A-Z]+)", [`"]([^`"]+)[`"]', source)
    assert len(calls) == source.count("this.call("), calls
    # The event stream is read as it arrives (this.stream).
    streams = re.findall(r'this\.stream\("([A-Z]+)", `([^`]+)`', source)
    assert len(streams) == source.count("this.stream(") == 1, streams
    calls += streams
    documented = {(op.method.upper(), re.sub(r"\{[^}]+\}", "{}", op.path)) for op in OPERATIONS}
    for method, path in calls:
        template = re.sub(r"\$\{[^}]+\}", "{}", path)
        assert (method, template) in documented, (method, path)
    used = {re.sub(r"\$\{[^}]+\}", "{}", path) for _, path in calls}
    assert "/v1/holds/{}/payments" in used
    assert "/v1/bookings/{}/refund" in used
    assert "/v1/releases/{}/tickets/{}/events" in used
