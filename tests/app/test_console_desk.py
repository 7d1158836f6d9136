"""The desk's work on a schedule and its bookings in Chromium, against `inventory dev
--no-his` (API, worker, Redis, Postgres, the payment simulator; no HIS, so bookings of
a hospital made here stay open instead of being refused by a HIS that does not know it):
停诊 after its preview, the worker then cancelling and refunding; 签到 and 爽约 once the
session has begun, the no-show rule's ban listed on the blacklist and lifted."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.his.conftest import CHINA
from tests.his.test_dev import Dev

from .conftest import start_dev
from .console import (
    Operator,
    book,
    booking_as_operator,
    cell,
    go,
    own_hospital,
    put_schedule,
    wait_cell,
)
from .test_browser import _shot

#: The worker's visits loop runs every 30 s; the persister records the ban after it.
BAN_WAIT_S = 120

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`inventory dev --no-his`: payments on, no HIS."""
    yield from start_dev(tmp_path_factory, "--no-his")


async def test_add_capacity_then_suspend_a_schedule_after_its_preview(
    dev: Dev, browser: Any
) -> None:
    """加号 raises a slot's capacity (after its dialog) and the row follows; 停诊 first
    shows what it ends (two paid bookings, their fees); confirmed, the schedule is
    suspended and the worker cancels and refunds its bookings."""
    catalogue = await own_hospital(dev, one_per_day=False)
    starts = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(days=2)
    schedule_id, slot_id = await put_schedule(
        dev, catalogue, starts_at=starts, capacity=5, fee_fen=1500
    )
    bookings = [await book(dev, slot_id, pay=True) for _ in range(2)]
    operator = Operator(dev, catalogue.hospital_id)
    day = starts.astimezone(CHINA).date().isoformat()
    page = await operator.page(
        browser, f"/schedule/{schedule_id}?date={day}", catalogue.hospital_id
    )
    for booking_id in bookings:
        await page.locator(f"tr[data-booking='{booking_id}']").wait_for()
    await _shot(page, "console-3-schedule")

    row = f"tr[data-slot='{slot_id}']"
    assert await cell(page, row, "remaining") == 3
    await page.locator(row).get_by_role("button", name=re.compile("^加号")).click()
    dialog = page.get_by_role("dialog")
    assert await dialog.get_by_label("新的号源数").input_value() == "6"
    await dialog.get_by_role("button", name="加号").click()
    await wait_cell(page, row, "remaining", 4)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{dev.api}/v1/schedules/{schedule_id}/slots") as answer,
    ):
        (slot,) = (await answer.json())["items"]
    assert (slot["capacity"], slot["remaining"]) == (6, 4), slot

    await page.get_by_role("button", name="停诊").click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for()
    text = await dialog.inner_text()
    assert "将取消 2 个预约" in text, text
    assert "¥30.00" in text, text
    await _shot(page, "console-4-suspend-preview")
    await dialog.get_by_label("停诊原因").select_option("doctor_ill")
    await dialog.get_by_role("button", name="确认停诊").click()
    await page.get_by_role("button", name="恢复出诊").wait_for()

    # The operator's day view is read from the record (the public slots answer is
    # cached for a moment, and was just read above).
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{dev.api}/v1/operator/hospitals/{catalogue.hospital_id}/day",
            params={"date": day},
            headers={"Authorization": f"Bearer {operator.token}"},
        ) as answer,
    ):
        (item,) = (await answer.json())["items"]
    assert item["status"] == "suspended", item
    for booking_id in bookings:
        for _ in range(120):
            found = await booking_as_operator(dev, catalogue.hospital_id, booking_id)
            if found["status"] == "cancelled" and found["refund"] is not None:
                break
            await asyncio.sleep(0.5)
        assert found["status"] == "cancelled", found
        assert found["cancel_reason"].startswith("suspended"), found
        assert found["refund"]["amount_fen"] == 1500, found
    assert operator.csp_violations == []


async def test_check_in_mark_a_no_show_and_lift_the_ban_it_brings(dev: Dev, browser: Any) -> None:
    """At a hospital whose rule bans at the first no-show: once the session has begun
    the desk checks one patient in and marks another a no-show; the worker's rule bans
    that patient, the blacklist lists the ban, and lifting it (with a reason) ends it."""
    catalogue = await own_hospital(
        dev, one_per_day=False, no_show_ban_count=1, no_show_grace_s=0, no_show_ban_days=7
    )
    starts = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(seconds=20)
    _, slot_id = await put_schedule(dev, catalogue, starts_at=starts, capacity=3, fee_fen=0)
    came = await book(dev, slot_id, pay=False)
    missed = await book(dev, slot_id, pay=False, phone="13700002222")
    operator = Operator(dev, catalogue.hospital_id)
    page = await operator.page(browser, f"/booking/{missed}", catalogue.hospital_id)
    await asyncio.sleep(max(0.0, (starts - datetime.now(tz=UTC)).total_seconds()) + 1)

    await page.get_by_role("button", name="标记爽约").click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for()
    assert "爽约" in await dialog.inner_text()
    await dialog.get_by_role("button", name="标记爽约").click()
    await page.wait_for_selector("[data-status='no_show']")
    await _shot(page, "console-8-no-show")

    await go(page, f"/booking/{came}")
    await page.get_by_role("button", name="签到").click()
    await page.get_by_role("dialog").get_by_role("button", name="签到").click()
    await page.wait_for_selector("[data-status='visited']")

    patient_row = None
    await go(page, "/bans")
    for _ in range(BAN_WAIT_S):
        await page.reload()
        await page.wait_for_selector("h1:has-text('黑名单')")
        rows = page.locator("tr[data-patient]")
        if await rows.count():
            patient_row = rows.first
            break
        await asyncio.sleep(1)
    assert patient_row is not None, "the no-show rule's ban never reached the blacklist"
    assert "137****2222" in await patient_row.inner_text()
    await _shot(page, "console-9-blacklist")
    await patient_row.get_by_role("button", name=re.compile("^解除")).click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("解除原因").fill("院方核实：患者已说明情况")
    await dialog.get_by_role("button", name="解除").click()
    await page.wait_for_selector("text=当前没有被限制预约的患者")
    assert operator.csp_violations == []
