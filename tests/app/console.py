"""Helpers of the staff console's browser tests: an operator at the console, navigation,
reading the live figures, and hospitals, schedules and bookings made through the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp

from inventory.api.auth import mint_token
from inventory.ops.config import Settings
from tests.api.helpers import Catalogue
from tests.his.conftest import CHINA
from tests.his.test_dev import Dev

from .conftest import Patient

#: A desk computer's screen.
DESK = {"width": 1280, "height": 800}
#: The release day is read again every 2 s; a loaded machine gets more.
LIVE_WAIT_MS = 15_000


class Operator:
    """An operator at the console: a platform operator, or one hospital's."""

    def __init__(self, dev: Dev, *hospitals: str) -> None:
        self.dev = dev
        settings = Settings.from_env(dev.settings)
        scope = list(hospitals) or None
        self.token = mint_token(
            settings, "desk-operator", operator=True, hospitals=scope, ttl_s=3600
        )
        self.csp_violations: list[str] = []

    async def page(self, browser: Any, hash_path: str, hospital_id: str | None = None) -> Any:
        """A desk-sized console page signed in through dev's link, at ``hash_path``."""
        context = await browser.new_context(viewport=DESK, locale="zh-CN")
        page = await context.new_page()
        page.on("console", self._console)
        await page.goto(f"{self.dev.api}/console/#dev-token={self.token}")
        await page.wait_for_selector("main h1")
        if hospital_id is not None:
            await page.select_option("#hospital", hospital_id)
            await page.wait_for_selector("main h1")
        await go(page, hash_path)
        return page

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)


async def go(page: Any, hash_path: str) -> None:
    """Navigate the console to ``hash_path`` and wait for its page."""
    await page.evaluate("path => { location.hash = '#' + path; }", hash_path)
    # <main> names the address it has drawn once the view is there.
    await page.wait_for_function(
        "path => document.getElementById('main').dataset.hash === '#' + path", arg=hash_path
    )


async def cell(page: Any, row: str, field: str) -> int:
    return int(await page.locator(f"{row} [data-field='{field}']").first.inner_text())


async def wait_cell(page: Any, row: str, field: str, value: int) -> None:
    await page.wait_for_function(
        "([row, field, value]) => { const el = document.querySelector("
        "`${row} [data-field='${field}']`); return el && Number(el.textContent) === value; }",
        arg=[row, field, value],
        timeout=LIVE_WAIT_MS,
    )


async def own_hospital(dev: Dev, **policy: Any) -> Catalogue:
    """A hospital of the test's own (made by a platform operator through the API)."""
    operator = SimpleNamespace(url=dev.api, headers=dev.headers)
    async with aiohttp.ClientSession() as http:
        catalogue = Catalogue(operator, http)  # type: ignore[arg-type]
        await catalogue.create(policy=policy or None)
    return catalogue


async def put_schedule(
    dev: Dev,
    catalogue: Catalogue,
    *,
    starts_at: datetime,
    capacity: int,
    fee_fen: int,
    release_at: datetime | None = None,
) -> tuple[str, str]:
    """A schedule of one slot at ``starts_at``: (schedule id, slot id)."""
    schedule_id, slot_id = f"s-{uuid.uuid4().hex[:8]}", f"sl-{uuid.uuid4().hex[:8]}"
    day = starts_at.astimezone(CHINA).date()
    body = {
        "hospital_id": catalogue.hospital_id,
        "department_id": catalogue.department_id,
        "doctor_id": catalogue.doctor_id,
        "visit_date": day.isoformat(),
        "session": "morning",
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + timedelta(hours=2)).isoformat(),
        "release_at": (release_at or datetime.now(tz=UTC) - timedelta(hours=1)).isoformat(),
        "cancel_deadline": (starts_at - timedelta(seconds=1)).isoformat(),
        "fee_fen": fee_fen,
        "location": "门诊楼 2 层",
        "slots": [
            {
                "slot_id": slot_id,
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + timedelta(minutes=30)).isoformat(),
                "capacity": capacity,
            }
        ],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{dev.api}/v1/operator/schedules/{schedule_id}",
            json=body,
            headers=dev.headers("console-setup", operator=True),
        ) as answer,
    ):
        assert answer.status in (200, 201), await answer.text()
    return schedule_id, slot_id


async def book(dev: Dev, slot_id: str, *, pay: bool, phone: str = "13912345678") -> str:
    """A booking of ``slot_id`` by a new patient: paid at the simulator when ``pay``
    (the booking is made when the notification arrives), else confirmed as a free one."""
    patient = Patient(dev)
    registered = await patient.register(phone=phone)
    status, hold = await patient.call(
        "POST",
        "/v1/holds",
        json={"slot_id": slot_id, "patient_id": registered["patient_id"], "channel": "web"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, hold
    hold_id = str(hold["hold_id"])
    if not pay:
        status, booking = await patient.call(
            "POST", f"/v1/holds/{hold_id}/confirm", json={"payment_ref": "free"}
        )
        assert status == 200, booking
        return hold_id
    status, payment = await patient.call(
        "POST", f"/v1/holds/{hold_id}/payments", json={"openid": "o-" + patient.account}
    )
    assert status == 201, payment
    paysim = dev.settings["INVENTORY_WECHAT_API_URL"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{paysim}/sim/orders/{payment['payment_id']}/pay", json={}) as answer,
    ):
        assert answer.status == 200, await answer.text()
    for _ in range(120):
        status, booking = await patient.call("GET", f"/v1/bookings/{hold_id}")
        if status == 200:
            return hold_id
        await asyncio.sleep(0.5)
    raise AssertionError(f"the paid hold {hold_id} never became a booking")


async def booking_as_operator(dev: Dev, hospital_id: str, booking_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{dev.api}/v1/operator/hospitals/{hospital_id}/bookings",
            params={"booking_id": booking_id},
            headers=dev.headers("console-check", operator=True),
        ) as answer,
    ):
        found = await answer.json()
        assert answer.status == 200, found
    (item,) = found["items"]
    return dict(item)
