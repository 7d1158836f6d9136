"""The patient app in Chromium at 375×812 against `inventory dev`: the whole path to a
booking with the HIS's number (paying at the WeChat Pay simulator's cashier), a refusal
shown with the API's own message, a cancellation with its refund, and the accessibility
basics (labels, roles, keyboard focus). No page may break its Content-Security-Policy."""

from __future__ import annotations

import asyncio
import io
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from PIL import Image

from inventory.privacy.identity import make_resident_id
from inventory.release import draw
from tests.api.helpers import Catalogue
from tests.his.test_dev import Dev

from .conftest import SCREENSHOTS_ENV, VIEWPORT, Patient, bookable

#: The HIS answers within seconds in dev; a loaded machine gets more.
HIS_WAIT_MS = 90_000
#: The queued release's T0 from now: time for the first patient to be seen waiting.
ROOM_T0_S = 20
ROOM_WAIT_MS = 120_000

pytestmark = pytest.mark.timeout(600)


async def _shot(page: Any, name: str) -> None:
    """Save a screenshot of the page for the docs when asked to."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        shot = Image.open(io.BytesIO(await page.screenshot()))
        # A palette of 128 colours keeps the text sharp at a third of the size.
        small = shot.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
        path = Path(folder) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        small.save(path, optimize=True)


def new_phone() -> str:
    return "137" + f"{uuid.uuid4().int % 10**8:08d}"


async def sign_in_by_sms(dev: Dev, page: Any, phone: str, *, shot: bool = False) -> None:
    """On the app's login screen: ask for a code for ``phone``, read it from dev's SMS
    simulator as the phone would show it, and sign in."""
    login = next(line for line in dev.banner if line.startswith("login "))
    sms = dev.banner[dev.banner.index(login) + 1].split("SMS simulator ", 1)[1].split()[0]
    await page.wait_for_selector("h1:has-text('登录')")
    await page.get_by_label("手机号").fill(phone)
    await page.get_by_role("button", name="获取验证码").click()
    await page.wait_for_selector("text=验证码已发送")
    if shot:
        await _shot(page, "0-login")
    async with aiohttp.ClientSession() as http, http.get(f"{sms}/sim/messages") as answer:
        messages = (await answer.json())["messages"]
    (text,) = [m["content"]["text"] for m in messages if m["address"] == phone]
    code = text.split("验证码为 ", 1)[1][:6]
    await page.get_by_label("短信验证码").fill(code)
    await page.get_by_role("button", name="登录", exact=True).click()


async def test_the_whole_path_to_a_booking_with_its_his_number(dev: Dev, browser: Any) -> None:
    """Hospital → department → doctor → date → window → sign in by SMS code (the
    window's page asks for it) → a new 就诊人 → confirm (fee, place, cancel deadline) →
    pay at the simulator's cashier → the success page with the HIS's appointment number,
    the one the API reports."""
    target = await bookable(dev)
    schedule, slot = target["schedule"], target["slot"]
    patient = Patient(dev)
    context = await browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = await context.new_page()
    page.on("console", patient.note_console)
    await page.goto(f"{dev.api}/app/")
    await page.wait_for_selector("main h1")
    await _shot(page, "1-hospitals")
    await page.get_by_role("link", name=re.compile("示范医院")).click()
    await page.get_by_role("link", name="心内科").click()
    await page.wait_for_selector("h1:has-text('选择医生')")
    await _shot(page, "2-doctors")
    await page.get_by_role("link", name=re.compile(schedule["doctor"]["name"])).first.click()
    await page.locator(f".dates a[href$='date={target['date']}']").click()
    card = page.locator(f"a.card[href='#/schedule/{schedule['schedule_id']}']")
    await card.wait_for()
    assert "¥" + f"{schedule['fee_fen'] / 100:.2f}" in await card.inner_text()
    await _shot(page, "3-doctor-dates")
    await card.click()
    await page.wait_for_selector(".grid")
    await _shot(page, "4-windows")
    await page.locator(f"button[data-slot='{slot['slot_id']}']").click()
    await sign_in_by_sms(dev, page, new_phone())
    await page.wait_for_selector("h1:has-text('选择就诊人')")
    # The API calls beside the browser go as the account the SMS login made.
    patient.token = await page.evaluate("localStorage.getItem('token')")

    resident_id = make_resident_id(date(1992, 5, 17), "female", seq=uuid.uuid4().int % 500)
    await page.get_by_label("姓名").fill("李小红")
    await page.get_by_label("身份证号").fill(resident_id)
    await page.get_by_label("身份证号").dispatch_event("change")
    assert await page.get_by_label("出生日期").input_value() == "1992-05-17"
    assert await page.get_by_label("性别").input_value() == "female"
    await page.get_by_label("手机号").fill("13912345678")
    await page.get_by_role("button", name="保存").click()
    await page.get_by_role("radio", name=re.compile("李")).wait_for()
    await _shot(page, "5-patient")
    await page.get_by_role("button", name="为该就诊人预约").click()

    await page.wait_for_selector("h1:has-text('确认挂号信息')")
    sheet = await page.locator("dl.sheet").inner_text()
    assert "¥" + f"{schedule['fee_fen'] / 100:.2f}" in sheet
    assert schedule["location"] in sheet
    deadline = schedule["cancel_deadline"]
    assert f"{deadline[5:10]} {deadline[11:16]}" in sheet, sheet
    await page.wait_for_selector("text=请在")
    await _shot(page, "6-confirm")
    await page.get_by_role("button", name=re.compile("微信支付")).click()

    await page.get_by_role("button", name="确认支付").wait_for()
    assert "¥" + f"{schedule['fee_fen'] / 100:.2f}" in await page.inner_text("main")
    await _shot(page, "7-cashier")
    await page.get_by_role("button", name="确认支付").click()

    number = page.locator(".his-no")
    await number.wait_for(timeout=HIS_WAIT_MS)
    await _shot(page, "8-booked")
    shown = await number.inner_text()
    hold_id = page.url.split("#/paid/")[1].split("?")[0]
    status, booking = await patient.call("GET", f"/v1/bookings/{hold_id}")
    assert status == 200, booking
    assert shown == booking["his_appointment_no"], (shown, booking)
    assert booking["status"] == "his_confirmed"

    # The booking's own page, then the list, name the same number.
    await page.get_by_role("link", name="我的预约").first.click()
    await page.wait_for_url(f"**#/booking/{hold_id}")
    detail = page.locator(".his-no")
    await detail.wait_for()
    assert await detail.inner_text() == booking["his_appointment_no"]
    await page.evaluate("() => { location.hash = '#/bookings'; }")
    await page.wait_for_selector("h1:has-text('我的预约')")
    await page.get_by_text(f"就诊序号 {booking['his_appointment_no']}", exact=True).wait_for()
    await _shot(page, "9-bookings")
    assert patient.csp_violations == []


async def test_a_refusal_shows_the_apis_own_message(dev: Dev, browser: Any) -> None:
    """A window another patient holds the last unit of: the app lets the patient try and
    shows the API's problem+json title for `sold_out`, as an alert, the same text the API
    answers, and leads on to the schedule's waitlist. (A schedule of the operator's own:
    the demo hospital's windows follow its HIS, whose sync restores their capacity.)"""
    operator = SimpleNamespace(url=dev.api, headers=dev.headers)
    async with aiohttp.ClientSession() as http:
        catalogue = await Catalogue(operator, http).create()
        schedule_id, (slot_id, _), _ = await catalogue.schedule([1, 1], fee_fen=2000)
    slot = {"slot_id": slot_id}
    holder = Patient(dev)
    held_for = await holder.register()
    status, hold = await holder.call(
        "POST",
        "/v1/holds",
        json={"slot_id": slot_id, "patient_id": held_for["patient_id"], "channel": "web"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, hold
    patient = Patient(dev)
    registered = await patient.register()
    status, refused = await patient.call(
        "POST",
        "/v1/holds",
        json={"slot_id": slot_id, "patient_id": registered["patient_id"], "channel": "web"},
        headers={"Idempotency-Key": uuid.uuid4().hex, "Accept-Language": "zh-CN"},
    )
    assert (status, refused["code"]) == (409, "sold_out"), refused
    target = {"schedule": {"schedule_id": schedule_id}}

    page = await patient.page(browser, f"/schedule/{target['schedule']['schedule_id']}")
    window = page.locator(f"button[data-slot='{slot['slot_id']}']")
    assert "约满" in await window.inner_text()
    await window.click()
    await page.get_by_role("radio").first.wait_for()
    await page.get_by_role("button", name="为该就诊人预约").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert await alert.get_attribute("data-code") == "sold_out"
    assert refused["title"] in await alert.inner_text()
    # The refusal leads on to the schedule's waitlist.
    waitlist = page.get_by_role("link", name="加入候补")
    assert await waitlist.get_attribute("href") == (
        f"#/waitlist/join/{target['schedule']['schedule_id']}"
    )
    await _shot(page, "10-refusal")
    assert patient.csp_violations == []


async def test_cancel_a_booking_and_see_the_refund(dev: Dev, browser: Any) -> None:
    """A paid booking (made through the API and the simulator): the app cancels it after
    asking, shows it cancelled, and follows the refund until it has succeeded."""
    target = await bookable(dev)
    patient = Patient(dev)
    registered = await patient.register()
    status, hold = await patient.call(
        "POST",
        "/v1/holds",
        json={
            "slot_id": target["slot"]["slot_id"],
            "patient_id": registered["patient_id"],
            "channel": "web",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, hold
    status, payment = await patient.call(
        "POST", f"/v1/holds/{hold['hold_id']}/payments", json={"openid": "o-" + patient.account}
    )
    assert status == 201, payment
    paysim = dev.settings["INVENTORY_WECHAT_API_URL"]
    pay = f"{paysim}/sim/orders/{payment['payment_id']}/pay"
    async with aiohttp.ClientSession() as http, http.post(pay, json={}) as answer:
        assert answer.status == 200, await answer.text()

    page = await patient.page(browser, f"/booking/{hold['hold_id']}")
    cancel = page.get_by_role("button", name="取消预约")
    await cancel.wait_for()
    await cancel.click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for()
    assert "退回" in await dialog.inner_text()
    await dialog.get_by_role("button", name="确定").click()
    await page.wait_for_selector(".status.s-cancelled")
    await page.locator(".refund", has_text="已退款").wait_for(timeout=60_000)
    await _shot(page, "11-cancelled-refunded")
    status, refund = await patient.call("GET", f"/v1/bookings/{hold['hold_id']}/refund")
    assert (status, refund["status"]) == (200, "succeeded"), refund
    assert patient.csp_violations == []


async def test_accessibility_basics(dev: Dev, browser: Any) -> None:
    """On the main screens every form control has a label, every button and link a name,
    there is one h1, a main landmark and a labelled navigation; Tab reaches the controls
    and the focused one is visibly outlined."""
    target = await bookable(dev)
    patient = Patient(dev)
    await patient.register()
    screens = [
        "/",
        "/hospital/demo-hospital",
        f"/schedule/{target['schedule']['schedule_id']}",
        f"/slot/{target['slot']['slot_id']}",
        "/patients",
        "/bookings",
        "/holds",
    ]
    page = await patient.page(browser)
    for screen in screens:
        await page.evaluate("path => { location.hash = '#' + path; }", screen)
        await page.wait_for_function(
            "path => location.hash === '#' + path && document.querySelector('main h1')", arg=screen
        )
        await page.wait_for_timeout(200)
        found = await page.evaluate(AUDIT)
        assert found["unlabelled"] == [], (screen, found)
        assert found["nameless"] == [], (screen, found)
        assert found["h1"] == 1, (screen, found)
        assert found["main"], (screen, found)
        assert found["nav"], (screen, found)

    await page.evaluate("() => { location.hash = '#/patients'; }")
    await page.wait_for_selector("form.patient-form")
    seen = set()
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        assert focused["outline"] != "none", focused
        seen.add(focused["tag"])
    assert {"INPUT", "BUTTON"} <= seen or {"INPUT", "A"} <= seen, seen
    # A refused field is marked and says why, next to the field.
    await page.get_by_label("手机号").fill("12345")
    await page.get_by_role("button", name="保存").click()
    assert await page.get_by_label("手机号").get_attribute("aria-invalid") == "true"
    assert patient.csp_violations == []


AUDIT = """() => {
  const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
  const controls = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(visible);
  const unlabelled = controls
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map((el) => el.outerHTML);
  const nameless = [...document.querySelectorAll('button, a[href]')].filter(visible)
    .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim()))
    .map((el) => el.outerHTML);
  return {
    unlabelled, nameless,
    h1: document.querySelectorAll('h1').length,
    main: Boolean(document.querySelector('main')),
    nav: Boolean(document.querySelector('nav[aria-label]')),
  };
}"""

FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {tag: el.tagName, id: el.id, outline: style.outlineStyle};
}"""


async def test_a_queued_release_through_its_waiting_room(dev: Dev, browser: Any) -> None:
    """A release with a waiting room (opened by the operator before T0): one patient
    waits in the room before T0 and, once drawn and admitted, gets the window held and
    the confirm page; another, arriving after T0, is sent from the booking button into
    the room (the reserve answers admission_required) and on to the confirm page too."""
    operator = SimpleNamespace(url=dev.api, headers=dev.headers)
    async with aiohttp.ClientSession() as http:
        catalogue = await Catalogue(operator, http).create(policy={"one_per_day": False})
        day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
        start = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
        t0 = datetime.now(tz=UTC) + timedelta(seconds=ROOM_T0_S)
        schedule_id, slot_id = f"s-{uuid.uuid4().hex[:8]}", f"sl-{uuid.uuid4().hex[:8]}"
        await catalogue.put(
            f"/v1/operator/schedules/{schedule_id}",
            {
                "hospital_id": catalogue.hospital_id,
                "department_id": catalogue.department_id,
                "doctor_id": catalogue.doctor_id,
                "visit_date": day.isoformat(),
                "session": "morning",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=4)).isoformat(),
                "release_at": t0.isoformat(),
                "cancel_deadline": (start - timedelta(hours=12)).isoformat(),
                "fee_fen": 1500,
                "location": "门诊楼 3 层",
                "slots": [
                    {
                        "slot_id": slot_id,
                        "starts_at": start.isoformat(),
                        "ends_at": (start + timedelta(minutes=30)).isoformat(),
                        "capacity": 5,
                    }
                ],
            },
        )
        async with http.post(
            dev.api + "/v1/operator/releases",
            json={"schedule_ids": [schedule_id]},
            headers=dev.headers("app-operator", operator=True),
        ) as answer:
            release = await answer.json()
            assert answer.status == 201, release

    # Before T0 the doctor's page marks the session as a queued release, its windows
    # name the room, and booking a window leads into the room (nothing reserved yet).
    early = Patient(dev)
    await early.register()
    for _ in range(60):  # the catalogue names the room once the worker has recorded it
        status, windows = await early.call("GET", f"/v1/schedules/{schedule_id}/slots")
        if windows["waiting_room"]:
            break
        await asyncio.sleep(0.5)
    assert windows["waiting_room"]["release_id"] == release["release_id"], windows
    doctor_page = f"/doctor/{catalogue.department_id}/{catalogue.doctor_id}?date={day}"
    page = await early.page(browser, doctor_page)
    await page.get_by_text("排队放号").wait_for()
    await page.locator(f"a[href='#/schedule/{schedule_id}']").click()
    note = page.locator(".room-note")
    await note.wait_for()
    assert "候诊室已开放" in await note.inner_text()
    await page.locator(f"button[data-slot='{slot_id}']").click()
    await page.get_by_role("radio").first.wait_for()
    await page.get_by_role("button", name="为该就诊人预约").click()
    await page.wait_for_selector(".room-card[data-state='open']")
    assert "已进入候诊室" in await page.inner_text("main")
    assert "放号" in await page.locator("[role=timer]").inner_text()
    await _shot(page, "12-waiting-room")
    # A second patient waits in the room too, in a browser context of their own.
    second = Patient(dev)
    second_person = await second.register()
    room = f"/room/{release['release_id']}/{slot_id}?patient={second_person['patient_id']}"
    second_page = await second.page(browser, room)
    await second_page.wait_for_selector(".room-card[data-state='open']")
    for waiting in (page, second_page):
        await waiting.wait_for_selector("h1:has-text('确认挂号信息')", timeout=ROOM_WAIT_MS)
        assert "¥15.00" in await waiting.locator("dl.sheet").inner_text()

    late = Patient(dev)
    await late.register()
    page = await late.page(browser, f"/slot/{slot_id}")
    await page.get_by_role("radio").first.wait_for()
    await page.get_by_role("button", name="为该就诊人预约").click()
    await page.wait_for_selector("h1:has-text('确认挂号信息')", timeout=ROOM_WAIT_MS)

    status, view = await early.call("GET", f"/v1/releases/{release['release_id']}")
    assert status == 200, view
    assert (view["joined"], view["admitted"]) == (3, 3), view
    assert view["seed"], view
    # Both who waited before T0 were admitted in the drawn order: their places are the
    # order the published seed gives, and the late one queued behind them.
    places = {}
    for patient, person in ((early, None), (second, second_person)):
        if person is None:
            status, mine = await patient.call("GET", "/v1/patients")
            person = mine["items"][0]
        status, ticket = await patient.call(
            "POST",
            f"/v1/releases/{release['release_id']}/tickets",
            json={"patient_id": person["patient_id"]},
        )
        assert status in (200, 201), ticket
        places[ticket["ticket_id"]] = ticket["position"]
    drawn = draw.draw_order(view["seed"], places)
    assert sorted(places, key=places.__getitem__) == drawn
    assert sorted(places.values()) == [1, 2]
    assert early.csp_violations == second.csp_violations == late.csp_violations == []


async def test_a_rate_limited_reserve_waits_and_retries_once_by_itself(
    dev: Dev, browser: Any
) -> None:
    """With the account's reserve bucket empty, the booking button's reserve is answered
    429 with Retry-After: the app shows the wait, counting down, and retries once by
    itself with the same Idempotency-Key, which then holds the window."""
    target = await bookable(dev)
    patient = Patient(dev)
    await patient.register()
    page = await patient.page(browser, f"/slot/{target['slot']['slot_id']}")
    await page.get_by_role("radio").first.wait_for()
    # Empty the account's bucket (dev: 20 reserves a minute): reserves of a patient that
    # does not exist count against it before they are refused.
    limited = 0
    for _ in range(40):
        status, _ = await patient.call(
            "POST",
            "/v1/holds",
            json={"slot_id": target["slot"]["slot_id"], "patient_id": "nobody", "channel": "web"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        if status == 429:
            limited += 1
            break
    assert limited, "the account's reserve bucket never emptied"
    await page.get_by_role("button", name="为该就诊人预约").click()
    notice = page.locator("#notice")
    await notice.wait_for(state="visible")
    assert "秒后自动重试" in await notice.inner_text()
    await page.wait_for_selector("h1:has-text('确认挂号信息')", timeout=90_000)
    assert await notice.is_hidden()
    assert patient.csp_violations == []


async def test_the_english_switch_reaches_the_apis_messages(dev: Dev, browser: Any) -> None:
    """The header's switch turns the app to English and the API's refusals with it
    (Accept-Language): a missing booking shows the API's English title; back to 中文."""
    patient = Patient(dev)
    page = await patient.page(browser)
    await page.get_by_role("button", name="English").click()
    await page.wait_for_selector("h1:has-text('Choose a hospital')")
    assert await page.evaluate("document.documentElement.lang") == "en"
    status, missing = await patient.call(
        "GET", "/v1/bookings/nope.20260101.x", headers={"Accept-Language": "en"}
    )
    assert status == 404, missing
    await page.evaluate("() => { location.hash = '#/booking/nope.20260101.x'; }")
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert missing["title"] in await alert.inner_text()
    assert await alert.get_attribute("data-code") == "not_found"
    await page.get_by_role("button", name="中文").click()
    await page.wait_for_selector("h1:has-text('预约挂号')")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"


async def test_sign_in_by_sms_code(dev: Dev, browser: Any) -> None:
    """Without a token the app asks to sign in: by SMS code (the code read from dev's SMS
    simulator, as the phone would show it), not labelled dev-only; the account's screens
    then open; signing out ends the login."""
    context = await browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = await context.new_page()
    await page.goto(f"{dev.api}/app/#/patients")
    await sign_in_by_sms(dev, page, new_phone(), shot=True)
    await page.wait_for_selector("h1:has-text('我的就诊人')")
    assert await page.locator("#dev").is_hidden()
    assert await page.evaluate("localStorage.getItem('refresh-token')")
    await page.evaluate("() => { location.hash = '#/login'; }")
    await page.get_by_role("button", name="退出登录").click()
    await page.get_by_role("button", name="退出登录").wait_for(state="detached")
    assert await page.evaluate("localStorage.getItem('token')") is None


async def test_a_sold_out_schedule_offers_its_waitlist(dev: Dev, browser: Any) -> None:
    """A schedule whose one unit is held: its windows page offers the waitlist; the
    patient joins it in the app and sees their place; when the unit is given back the
    offer is theirs (a hold under 待支付, listed by the API), and leaving the waitlist
    after confirming passes it to the next patient in line."""
    operator = SimpleNamespace(url=dev.api, headers=dev.headers)
    async with aiohttp.ClientSession() as http:
        catalogue = await Catalogue(operator, http).create()
        schedule_id, (slot_id,), _ = await catalogue.schedule([1], fee_fen=1200)
    holder = Patient(dev)
    held_for = await holder.register()
    status, hold = await holder.call(
        "POST",
        "/v1/holds",
        json={"slot_id": slot_id, "patient_id": held_for["patient_id"], "channel": "web"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, hold

    patient = Patient(dev)
    await patient.register()
    page = await patient.page(browser, f"/schedule/{schedule_id}")
    await page.get_by_role("link", name="加入候补").click()
    await page.get_by_role("radio").first.wait_for()
    await page.get_by_role("button", name="加入候补").click()
    entry = page.locator("li[data-state='waiting']")
    await entry.wait_for()
    assert "排第 1 位" in await entry.inner_text()
    await _shot(page, "13-waitlist")

    second = Patient(dev)
    seconds_patient = await second.register()
    status, second_entry = await second.call(
        "POST",
        f"/v1/schedules/{schedule_id}/waitlist",
        json={"patient_id": seconds_patient["patient_id"], "channel": "web"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, second_entry

    status, _ = await holder.call("DELETE", f"/v1/holds/{hold['hold_id']}")
    assert status == 200
    await page.reload()
    offered = page.locator("li[data-state='offered']")
    await offered.wait_for()
    assert "去支付" in await offered.inner_text()
    entry_id = await offered.get_attribute("data-entry")
    status, mine = await patient.call("GET", f"/v1/waitlist/{entry_id}")
    assert status == 200, mine
    offer_hold = mine["offer"]["hold_id"]

    # The offer is an ordinary hold of the account's: 待支付 lists it (once recorded).
    await page.evaluate("() => { location.hash = '#/holds'; }")
    card = page.locator(f"a.card[href='#/hold/{offer_hold}']")
    for _ in range(30):
        await page.wait_for_selector("h1:has-text('待支付的号')")
        if await card.count():
            break
        await page.wait_for_timeout(500)
        await page.reload()
    assert "¥12.00" in await card.inner_text()

    await page.evaluate("() => { location.hash = '#/waitlist'; }")
    await page.get_by_role("button", name="退出候补").click()
    await page.locator("#ask button[value='yes']").click()
    await page.locator("li[data-state='left']").wait_for()
    status, theirs = await second.call("GET", f"/v1/waitlist/{second_entry['entry_id']}")
    assert (status, theirs["state"]) == (200, "offered"), theirs
    assert patient.csp_violations == []
