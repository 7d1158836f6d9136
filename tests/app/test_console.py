"""The staff console in Chromium against `inventory dev` (the whole stack: API, worker,
Redis, Postgres, the HIS and payment simulators): the release day following a booking a
patient makes in another browser, a waiting room's joins, a booking found by its HIS
number and masked phone and cancelled with its refund, and the accessibility basics.
Operators sign in with dev's operator-token link; no page may break its
Content-Security-Policy. (Suspensions and the desk's check-in, no-show and blacklist are
in test_console_desk.py, on a dev without the HIS.)"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.his.conftest import CHINA
from tests.his.test_dev import Dev

from .conftest import Patient, bookable
from .console import (
    DESK,
    Operator,
    book,
    booking_as_operator,
    cell,
    go,
    own_hospital,
    put_schedule,
    wait_cell,
)
from .test_browser import AUDIT, FOCUSED, HIS_WAIT_MS, _shot

pytestmark = pytest.mark.timeout(600)


async def test_the_release_day_follows_a_booking_made_in_another_browser(
    dev: Dev, browser: Any
) -> None:
    """The console shows a cardiology schedule's units; a patient holds a window in the
    app in a second browser context; without a reload, the console's row shows one held
    and one remaining less, as Redis has them, and the focus stays where it was."""
    target = await bookable(dev)
    schedule_id = target["schedule"]["schedule_id"]
    operator = Operator(dev)
    page = await operator.page(
        browser, f"/day?date={target['date']}&department=cardiology", "demo-hospital"
    )
    row = f"tr[data-schedule='{schedule_id}']"
    await page.locator(row).wait_for()
    held, remaining = await cell(page, row, "held"), await cell(page, row, "remaining")
    # Someone working in the table keeps their place: the figures change in place.
    await page.locator(f"{row} a").focus()

    patient = Patient(dev)
    await patient.register()
    app = await patient.page(browser, f"/slot/{target['slot']['slot_id']}")
    await app.get_by_role("radio").first.wait_for()
    await app.get_by_role("button", name="为该就诊人预约").click()
    await app.wait_for_selector("h1:has-text('确认挂号信息')")

    await wait_cell(page, row, "held", held + 1)
    assert await cell(page, row, "remaining") == remaining - 1
    focused = await page.evaluate("document.activeElement.getAttribute('href')")
    assert focused.startswith(f"#/schedule/{schedule_id}"), focused
    await _shot(page, "console-1-release-day")
    assert "更新于" in await page.locator("#day-updated").inner_text()
    assert operator.csp_violations == patient.csp_violations == []


async def test_the_waiting_room_of_a_queued_release_counts_joins_live(
    dev: Dev, browser: Any
) -> None:
    """A hospital operator (its token names one hospital) sees its queued release's
    waiting room on the release day; a patient joining shows as one joined, live."""
    catalogue = await own_hospital(dev, one_per_day=False)
    starts = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(days=2)
    schedule_id, _ = await put_schedule(
        dev,
        catalogue,
        starts_at=starts,
        capacity=5,
        fee_fen=0,
        release_at=datetime.now(tz=UTC) + timedelta(minutes=10),
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            dev.api + "/v1/operator/releases",
            json={"schedule_ids": [schedule_id]},
            headers=dev.headers("console-setup", operator=True),
        ) as answer,
    ):
        release = await answer.json()
        assert answer.status == 201, release
    operator = Operator(dev, catalogue.hospital_id)
    day = starts.astimezone(CHINA).date().isoformat()
    page = await operator.page(browser, f"/day?date={day}", catalogue.hospital_id)
    room = f"tr[data-release='{release['release_id']}']"
    await page.locator(room).wait_for()
    assert await cell(page, room, "joined") == 0
    # Only its own hospital is offered.
    assert await page.locator("#hospital option").count() == 1

    patient = Patient(dev)
    person = await patient.register()
    status, ticket = await patient.call(
        "POST",
        f"/v1/releases/{release['release_id']}/tickets",
        json={"patient_id": person["patient_id"]},
    )
    assert status in (200, 201), ticket
    await wait_cell(page, room, "joined", 1)
    await _shot(page, "console-2-waiting-room")
    assert operator.csp_violations == []


async def test_find_a_booking_by_its_his_number_and_cancel_it_with_a_refund(
    dev: Dev, browser: Any
) -> None:
    """A paid booking the HIS has numbered is found by that number (and by the patient's
    masked phone), shows its payment and HIS state, and is cancelled after a
    confirmation naming the refund; the refund is followed until it has succeeded."""
    target = await bookable(dev)
    phone = "136" + f"{uuid.uuid4().int % 10**8:08d}"
    booking_id = await book(dev, target["slot"]["slot_id"], pay=True, phone=phone)
    for _ in range(HIS_WAIT_MS // 500):
        found = await booking_as_operator(dev, "demo-hospital", booking_id)
        if found["his_appointment_no"]:
            break
        await asyncio.sleep(0.5)
    number = found["his_appointment_no"]
    assert number, found

    operator = Operator(dev, "demo-hospital")
    page = await operator.page(browser, "/bookings")
    await page.get_by_label("手机号").fill(phone[:3] + "****" + phone[-4:])
    await page.get_by_label("就诊日期").fill(target["date"])
    await page.get_by_role("button", name="查询").click()
    await page.locator(f"tr[data-booking='{booking_id}']").wait_for()

    await go(page, "/bookings")
    await page.get_by_label("就诊序号").fill(number)
    await page.get_by_role("button", name="查询").click()
    result = page.locator(f"tr[data-booking='{booking_id}']")
    await result.wait_for()
    await _shot(page, "console-5-lookup")
    await result.get_by_role("link", name="查看").click()
    await page.wait_for_selector("h1:has-text('预约详情')")
    main = await page.inner_text("main")
    assert number in main
    assert "已支付" in main
    await _shot(page, "console-6-booking")

    await page.locator(".actions").get_by_role("button", name="取消并退款").click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for()
    fee = "¥" + f"{target['schedule']['fee_fen'] / 100:.2f}"
    assert fee in await dialog.inner_text()
    # The reason is required: confirming without it keeps the dialog open.
    await dialog.get_by_role("button", name="取消并退款").click()
    assert await dialog.is_visible()
    await dialog.get_by_label("取消原因").fill("医生临时停诊，已电话告知")
    await dialog.get_by_role("button", name="取消并退款").click()
    await page.wait_for_selector("[data-status='cancelled']")
    await page.locator(".refund[data-status='succeeded']").wait_for(timeout=60_000)
    await _shot(page, "console-7-cancelled-refunded")
    found = await booking_as_operator(dev, "demo-hospital", booking_id)
    assert found["cancel_reason"] == "operator_cancelled: 医生临时停诊，已电话告知"
    assert (found["refund"]["status"], found["refund"]["reason"]) == (
        "succeeded",
        "operator_cancelled",
    )
    assert operator.csp_violations == []


async def test_console_accessibility_basics(dev: Dev, browser: Any) -> None:
    """On the console's screens every form control has a label, every button and link a
    name, there is one h1, a main landmark and a labelled navigation; Tab reaches the
    controls and the focused one is visibly outlined; the sign-in page too."""
    target = await bookable(dev)
    booking_id = await book(dev, target["slot"]["slot_id"], pay=True)
    operator = Operator(dev)
    screens = [
        f"/day?date={target['date']}",
        f"/schedule/{target['schedule']['schedule_id']}?date={target['date']}",
        f"/bookings?date={target['date']}",
        f"/booking/{booking_id}",
        "/bans",
        "/report",
    ]
    page = await operator.page(browser, screens[0], "demo-hospital")
    for screen in screens:
        await go(page, screen)
        await page.wait_for_timeout(300)
        found = await page.evaluate(AUDIT)
        assert found["unlabelled"] == [], (screen, found)
        assert found["nameless"] == [], (screen, found)
        assert found["h1"] == 1, (screen, found)
        assert found["main"], (screen, found)
        assert found["nav"], (screen, found)
    # The report's plot is drawn from the API's PNG (a data: URL: the policy's only way).
    plot = page.locator("figure.plot img")
    await plot.wait_for()
    assert (await plot.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert await plot.evaluate("img => img.complete && img.naturalWidth > 0")
    header = await page.locator("table thead").first.inner_text()
    assert "候补成功率" in header, header
    await _shot(page, "console-10-report")

    # From the top of the page, Tab walks the header, the tabs and the search form.
    await go(page, "/bookings")
    await page.locator("#hospital").focus()
    seen = {(await page.evaluate(FOCUSED))["tag"]}
    for _ in range(20):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if focused["tag"] == "BODY":
            break
        assert focused["outline"] != "none", focused
        seen.add(focused["tag"])
    assert {"SELECT", "INPUT", "BUTTON", "A"} <= seen, seen

    # The confirmation dialog is reached and left by keyboard (Esc cancels it).
    await go(page, f"/booking/{booking_id}")
    await page.get_by_role("button", name="取消并退款").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("dialog").wait_for()
    assert await page.evaluate("document.activeElement.id") == "ask-reason"
    await page.keyboard.press("Escape")
    await page.get_by_role("dialog").wait_for(state="hidden")

    context = await browser.new_context(viewport=DESK, locale="zh-CN")
    login = await context.new_page()
    await login.goto(f"{dev.api}/console/#/day")
    await login.wait_for_selector("h1:has-text('运营人员登录')")
    found = await login.evaluate(AUDIT)
    assert (found["unlabelled"], found["nameless"]) == ([], []), found
    await _shot(login, "console-0-login")
    # The token path (development, emergency) is folded under the password form.
    await login.get_by_text("开发 / 应急：粘贴运营令牌").click()
    # An account's token is not an operator's: refused before it is kept.
    await login.get_by_label("运营令牌").fill(Patient(dev).token)
    await login.get_by_role("button", name="用令牌登录").click()
    assert "不是运营令牌" in await login.get_by_role("alert").inner_text()
    assert await login.evaluate("sessionStorage.getItem('console-token')") is None
    await login.get_by_label("运营令牌").fill(operator.token)
    await login.get_by_role("button", name="用令牌登录").click()
    await login.wait_for_selector("h1:has-text('放号日实时看板')")
    assert await login.evaluate("localStorage.getItem('console-token')") is None
    assert await login.evaluate("sessionStorage.getItem('console-token')") == operator.token
    # The token refused while a live screen polls (as an expired one is: here its
    # signature broken): the next refresh answers 401 and the console returns to the
    # sign-in page, forgetting it, to come back to the same screen afterwards.
    head, _, signature = operator.token.rpartition(".")
    broken = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    await login.evaluate("token => sessionStorage.setItem('console-token', token)", broken)
    await login.wait_for_function(
        "() => location.hash === '#/login?next=%2Fday'"
        " && sessionStorage.getItem('console-token') === null",
        timeout=15_000,
    )
    assert operator.csp_violations == []


async def test_staff_sign_in_with_username_and_password(dev: Dev, browser: Any) -> None:
    """dev's `ops` account signs in with its username and password (from the banner): a
    wrong password is refused with the API's message and nothing kept; the right one
    keeps the operator token in sessionStorage only and shows the release day as a
    platform operator; 退出 forgets it and shows the sign-in page again."""
    line = next(b for b in dev.banner if b.startswith("staff "))
    found = re.search(r"username (\S+), password (\S+)", line)
    assert found is not None, line
    username, password = found.groups()
    violations: list[str] = []
    context = await browser.new_context(viewport=DESK, locale="zh-CN")
    page = await context.new_page()
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await page.goto(f"{dev.api}/console/#/day")
    await page.wait_for_selector("h1:has-text('运营人员登录')")
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill("not-the-right-password")
    await page.get_by_role("button", name="登录", exact=True).click()
    assert "用户名或密码错误" in await page.get_by_role("alert").inner_text()
    assert await page.evaluate("sessionStorage.getItem('console-token')") is None
    assert await page.get_by_label("密码").input_value() == ""

    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录", exact=True).click()
    await page.wait_for_selector("h1:has-text('放号日实时看板')")
    token = await page.evaluate("sessionStorage.getItem('console-token')")
    assert token
    assert await page.evaluate("localStorage.getItem('console-token')") is None
    assert await page.locator("#who").inner_text() == f"{username} · 平台运营"
    assert await page.locator("#dev").is_hidden()
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{dev.api}/v1/operator/hospitals/demo-hospital/day",
            params={"date": datetime.now(tz=CHINA).date().isoformat()},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()

    await page.get_by_role("button", name="退出").click()
    await page.wait_for_selector("h1:has-text('运营人员登录')")
    assert await page.evaluate("sessionStorage.getItem('console-token')") is None
    assert violations == []


async def test_the_english_switch_reaches_the_apis_messages(dev: Dev, browser: Any) -> None:
    """The header's switch turns the console to English and the API's refusals with it:
    a malformed phone search shows the API's English 422 title; back to 中文."""
    operator = Operator(dev, "demo-hospital")
    page = await operator.page(browser, "/bookings")
    await page.get_by_role("button", name="English").click()
    await page.wait_for_selector("h1:has-text('Find a booking')")
    assert await page.evaluate("document.documentElement.lang") == "en"
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{dev.api}/v1/operator/hospitals/demo-hospital/bookings",
            params={"phone": "12345"},
            headers={"Authorization": f"Bearer {operator.token}", "Accept-Language": "en"},
        ) as answer,
    ):
        refused = await answer.json()
        assert answer.status == 422, refused
    await page.get_by_label("Phone").fill("12345")
    await page.get_by_role("button", name="Search").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert await alert.get_attribute("data-code") == "validation_failed"
    assert refused["title"] in await alert.inner_text()
    await page.get_by_role("button", name="中文").click()
    await page.wait_for_selector("h1:has-text('预约查询')")
    assert operator.csp_violations == []
