"""The patient app in a real browser: Playwright driving Debian's Chromium
(``/usr/bin/chromium``) against ``inventory dev``, the whole stack as a person runs it
(API, worker, Redis, Postgres, the HIS simulator with its demo hospital, the WeChat Pay
simulator), on free loopback ports.

Without the browser (a machine without Debian's ``chromium`` package) or without
playwright (the ``dev`` extra) the browser tests skip, saying why; ``.ci/run`` installs
Chromium as it installs Redis.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory.api.auth import mint_token
from inventory.devtools.servers import free_port
from inventory.ops.config import Settings
from tests.api.helpers import patient_body
from tests.his.conftest import CHINA
from tests.his.test_dev import START_TIMEOUT_S, Dev, _read_banner

CHROMIUM = Path("/usr/bin/chromium")
#: What Chromium needs to run headless as root in a container, without calling home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking"]
#: The app is mobile first: an iPhone X-sized screen.
VIEWPORT = {"width": 375, "height": 812}
#: Where the browser path test saves its screenshots, when set (docs/screenshots/).
SCREENSHOTS_ENV = "INVENTORY_APP_SCREENSHOTS"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no browser at {CHROMIUM} (Debian's chromium package; .ci/run installs it)"
    return None


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`inventory dev` with its defaults (HIS and payments on), logs in a file."""
    yield from start_dev(tmp_path_factory)


def start_dev(tmp_path_factory: pytest.TempPathFactory, *options: str) -> Iterator[Dev]:
    """`inventory dev` with ``options`` (its defaults: HIS and payments on), logs in a
    file, until the generator is closed (a module fixture yields from it)."""
    if reason := browser_missing():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("app-dev")
    port, worker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env["INVENTORY_WORKER_METRICS_PORT"] = str(worker_port)
    env_file, log_file = root / "dev.env", root / "dev.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "inventory", "dev", "--port", str(port)),
            *("--env-file", str(env_file), "--log-file", str(log_file)),
            *options,
        ],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        banner = _read_banner(process, started + START_TIMEOUT_S)
        yield Dev(
            process=process,
            api=f"http://127.0.0.1:{port}",
            worker=f"http://127.0.0.1:{worker_port}",
            banner=banner,
            ready_s=time.monotonic() - started,
            env_file=env_file,
            log_file=log_file,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
async def browser(dev: Dev) -> AsyncIterator[Any]:
    """Chromium, headless."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


class Patient:
    """One account of the app: its token, and calls to the API beside the browser."""

    def __init__(self, dev: Dev) -> None:
        self.dev = dev
        self.account = f"app-{uuid.uuid4().hex[:10]}"
        self.token = mint_token(Settings.from_env(dev.settings), self.account, ttl_s=3600)
        self.csp_violations: list[str] = []

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One API call as this account: (status, JSON body or None)."""
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.dev.api + path, json=json, headers=self.auth | (headers or {})
            ) as answer,
        ):
            raw = await answer.read()
            return answer.status, (await answer.json(content_type=None)) if raw else None

    async def page(self, browser: Any, hash_path: str = "/") -> Any:
        """A phone-sized page of the app, signed in through dev's link, at ``hash_path``."""
        context = await browser.new_context(viewport=VIEWPORT, locale="zh-CN")
        page = await context.new_page()
        page.on("console", self.note_console)
        await page.goto(f"{self.dev.api}/app/#dev-token={self.token}")
        await page.wait_for_selector("main h1")
        if hash_path != "/":
            await page.evaluate("path => { location.hash = '#' + path; }", hash_path)
        return page

    def note_console(self, message: Any) -> None:
        """Keep the page's Content-Security-Policy complaints (a test asserts none)."""
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    async def register(self, **overrides: Any) -> dict[str, Any]:
        """A 就诊人 registered through the API."""
        status, patient = await self.call("POST", "/v1/patients", json=patient_body(**overrides))
        assert status == 201, patient
        return dict(patient)


async def bookable(dev: Dev) -> dict[str, Any]:
    """A released, open schedule of the demo hospital's cardiology with a free window and
    a fee, two or more days ahead (so a booking is still cancellable): its schedule item,
    department and a free slot."""
    async with aiohttp.ClientSession() as http:
        for offset in range(2, 7):
            day = (datetime.now(tz=CHINA) + timedelta(days=offset)).date().isoformat()
            url = f"{dev.api}/v1/departments/cardiology/schedules?date={day}"
            async with http.get(url) as answer:
                found = await answer.json()
            for schedule in found["items"]:
                if not (schedule["released"] and schedule["status"] == "open"):
                    continue
                if schedule["remaining"] < 2 or not schedule["fee_fen"]:
                    continue
                async with http.get(f"{dev.api}/v1/schedules/{schedule['schedule_id']}/slots") as a:
                    slots = (await a.json())["items"]
                free = [s for s in slots if s["remaining"] > 0]
                if free:
                    return {"schedule": schedule, "date": day, "slot": free[0], "slots": slots}
    raise AssertionError("no released slot with a fee in the demo hospital's next days")
