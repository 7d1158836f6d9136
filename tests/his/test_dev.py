"""`inventory dev` is the whole product: it starts (HIS and WeChat Pay simulators
included), syncs the simulator's demo hospital, prints its banner once start-up is
complete (and again on SIGUSR1), writes its settings for the other commands, and a patient
books, pays, gets the HIS's number, cancels and is refunded through it over HTTP; the
release-day load test passes against it; it stops cleanly."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory.api.auth import mint_token
from inventory.cli import envfile
from inventory.cli.dev import banner as dev_banner
from inventory.devtools.servers import free_port
from inventory.ops.config import Settings
from tests.api.helpers import patient_body
from tests.his.conftest import CHINA

#: Start-up on a quiet machine takes under 20 s; a loaded CI machine gets more.
START_TIMEOUT_S = 120


@dataclass
class Dev:
    """A running `inventory dev` and what it said."""

    process: subprocess.Popen[str]
    api: str
    worker: str
    banner: list[str]
    ready_s: float
    env_file: Path
    log_file: Path

    @property
    def settings(self) -> dict[str, str]:
        """The settings dev wrote for the other commands."""
        return envfile.load(self.env_file)

    def headers(self, account: str, *, operator: bool = False) -> dict[str, str]:
        """A bearer token of ``account`` signed with dev's key (read from its env file)."""
        settings = Settings.from_env(self.settings)
        token = mint_token(settings, account, operator=operator, ttl_s=3600)
        return {"Authorization": f"Bearer {token}"}


def _read_banner(process: subprocess.Popen[str], deadline: float) -> list[str]:
    """Lines up to and including the ``ready:`` line."""
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("ready:"):
            return lines
    raise AssertionError(f"no ready line from inventory dev: {lines}")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`inventory dev` with its defaults (HIS and payments on), logs in a file."""
    root = tmp_path_factory.mktemp("dev")
    port, worker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env["INVENTORY_WORKER_METRICS_PORT"] = str(worker_port)
    env_file, log_file = root / "dev.env", root / "dev.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inventory",
            "dev",
            "--port",
            str(port),
            "--env-file",
            str(env_file),
            "--log-file",
            str(log_file),
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


async def test_dev_starts_the_simulators_and_syncs_the_hospital(dev: Dev) -> None:
    """dev comes up with the HIS simulator's hospital synced and payments on through the
    pay simulator, says so, and both metrics endpoints answer where the banner says."""
    banner = dev.banner
    assert banner[-1] == "ready: Ctrl-C stops everything", banner
    his = next(b for b in banner if b.startswith("his "))
    assert "/fhir" in his
    assert "$admin" in his
    assert any(b.startswith("demo       hospital demo-hospital") for b in banner), banner
    payments = next(b for b in banner if b.startswith("payments "))
    assert payments.startswith("payments   on: WeChat Pay simulator http://127.0.0.1:"), payments
    assert "--no-payments" in payments
    notify = next(b for b in banner if b.startswith("notify "))
    assert notify.startswith("notify     on: WeChat simulator http://127.0.0.1:"), notify
    assert "--no-notify" in notify
    at = banner.index(f"metrics    api {dev.api}/metrics")
    assert banner[at + 1] == (
        f"           worker {dev.worker}/metrics  (health {dev.worker}/healthz  "
        f"{dev.worker}/readyz)"
    ), banner
    assert dev.ready_s < START_TIMEOUT_S
    day = (datetime.now(tz=CHINA) + timedelta(days=1)).date().isoformat()
    url = f"{dev.api}/v1/departments/cardiology/schedules?date={day}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as answer:
            schedules = (await answer.json())["items"]
        for metrics, family in (
            (f"{dev.api}/metrics", "inventory_http_request_duration_seconds"),
            (f"{dev.worker}/metrics", "inventory_holds_active"),
        ):
            async with http.get(metrics) as answer:
                assert answer.status == 200, metrics
                assert family in await answer.text(), metrics
    assert schedules
    assert all(s["location"].startswith("门诊楼") for s in schedules)


def test_dev_prints_its_banner_last_and_again_on_sigusr1(dev: Dev) -> None:
    """With --log-file, stdout is the banner alone (no log line under or after it), the
    log file has start-up's lines, and SIGUSR1 prints the banner again."""
    assert not any(line.startswith("{") for line in dev.banner), dev.banner
    assert dev.banner[0].startswith(f"api        {dev.api}")
    assert f"logs       {dev.log_file}  (this banner again: kill -USR1 {dev.process.pid})" in (
        dev.banner
    )
    assert dev.log_file.read_text(encoding="utf-8").count("\n") > 10
    dev.process.send_signal(signal.SIGUSR1)
    assert _read_banner(dev.process, time.monotonic() + 30) == dev.banner


def test_dev_writes_its_settings_for_the_other_commands(dev: Dev) -> None:
    """The env file (owner-only) holds the banner as comments and the URLs and keys;
    `inventory token --env-file` mints a token that dev's API accepts."""
    assert stat.S_IMODE(dev.env_file.stat().st_mode) == 0o600
    text = dev.env_file.read_text(encoding="utf-8")
    assert "# ready: Ctrl-C stops everything" in text
    settings = dev.settings
    for name in (
        "INVENTORY_REDIS_URL",
        "INVENTORY_DATABASE_URL",
        "INVENTORY_HIS_URL",
        "INVENTORY_JWT_KEYS",
        "INVENTORY_FIELD_KEYS",
        "INVENTORY_BLIND_INDEX_KEY",
        "INVENTORY_WECHAT_MCHID",
        "INVENTORY_WECHAT_API_URL",
    ):
        assert settings.get(name), name
    assert f"settings   {dev.env_file}" in "\n".join(dev.banner)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "inventory",
            "token",
            "--env-file",
            str(dev.env_file),
            "--sub",
            "env-file-account",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()

    async def bookings() -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{dev.api}/v1/bookings", headers={"Authorization": f"Bearer {token}"}
            ) as answer,
        ):
            return answer.status

    assert asyncio.run(bookings()) == 200


async def _call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, json=json) as answer:
        body = await answer.json(content_type=None) if await answer.read() else None
        return answer.status, body


async def _until(what: str, probe: Any, timeout_s: float = 60) -> Any:
    """Poll ``probe()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_dev_books_pays_gets_the_his_number_cancels_and_refunds(dev: Dev) -> None:
    """Over HTTP against dev: a hold on a synced HIS slot cannot be confirmed with a
    made-up payment reference; the payer pays at the simulator, the signed notification
    books it, the HIS gives its number, which the patient gets by WeChat (subscribed);
    the cancellation refunds the fee, which the patient learns by SMS (not subscribed to
    that kind)."""
    paysim = dev.settings["INVENTORY_WECHAT_API_URL"]
    wechat_sim = dev.settings["INVENTORY_NOTIFY_WECHAT_URL"]
    sms_sim = dev.settings["INVENTORY_NOTIFY_SMS_URL"]
    account = f"dev-{uuid.uuid4().hex[:8]}"
    auth = dev.headers(account)
    async with aiohttp.ClientSession() as http:
        status, _ = await _call(
            http,
            "PUT",
            f"{dev.api}/v1/notifications/subscriptions/booking_confirmed",
            headers=auth,
            json={"openid": f"o-{account}"},
        )
        assert status == 201
        status, patient = await _call(
            http, "POST", f"{dev.api}/v1/patients", headers=auth, json=patient_body()
        )
        assert status == 201, patient
        slot_id = ""
        for offset in range(2, 7):  # released, and cancellable until the day before
            day = (datetime.now(tz=CHINA) + timedelta(days=offset)).date().isoformat()
            _, found = await _call(
                http, "GET", f"{dev.api}/v1/departments/cardiology/schedules?date={day}"
            )
            for schedule in found["items"]:
                if schedule["released"] and schedule["remaining"] > 0 and schedule["fee_fen"]:
                    _, slots = await _call(
                        http, "GET", f"{dev.api}/v1/schedules/{schedule['schedule_id']}/slots"
                    )
                    slot_id = next(s["slot_id"] for s in slots["items"] if s["remaining"] > 0)
                    break
            if slot_id:
                break
        assert slot_id, "no released slot with a fee in the demo hospital's next days"

        status, hold = await _call(
            http,
            "POST",
            f"{dev.api}/v1/holds",
            headers=auth | {"Idempotency-Key": uuid.uuid4().hex},
            json={"slot_id": slot_id, "patient_id": patient["patient_id"], "channel": "wechat"},
        )
        assert status == 201, hold
        hold_id = hold["hold_id"]
        status, refused = await _call(
            http,
            "POST",
            f"{dev.api}/v1/holds/{hold_id}/confirm",
            headers=auth,
            json={"payment_ref": "made-up"},
        )
        assert (status, refused["code"]) == (409, "payment_required"), refused

        status, payment = await _call(
            http,
            "POST",
            f"{dev.api}/v1/holds/{hold_id}/payments",
            headers=auth,
            json={"openid": f"o-{account}"},
        )
        assert status == 201, payment
        status, paid = await _call(
            http, "POST", f"{paysim}/sim/orders/{payment['payment_id']}/pay", json={"notify": True}
        )
        assert status == 200, paid

        async def numbered() -> Any:
            status, booking = await _call(
                http, "GET", f"{dev.api}/v1/bookings/{hold_id}", headers=auth
            )
            if status == 200 and booking["status"] == "his_confirmed":
                return booking
            return None

        booking = await _until("the HIS's appointment number", numbered)
        assert booking["his_appointment_no"], booking
        assert booking["amount_fen"] == payment["amount_fen"] > 0

        async def told() -> Any:
            _, sent = await _call(http, "GET", f"{wechat_sim}/sim/messages")
            return [m for m in sent["messages"] if m["address"] == f"o-{account}"]

        (message,) = await _until("the WeChat message", told)
        assert message["content"]["template_id"] == "dev-booking-confirmed"
        number = message["content"]["data"]["character_string5"]["value"]
        assert number == booking["his_appointment_no"]

        status, cancelled = await _call(
            http,
            "POST",
            f"{dev.api}/v1/bookings/{hold_id}/cancel",
            headers=auth,
            json={"reason": "patient_cancelled"},
        )
        assert status == 200, cancelled

        async def refunded() -> Any:
            status, refund = await _call(
                http, "GET", f"{dev.api}/v1/bookings/{hold_id}/refund", headers=auth
            )
            return refund if status == 200 and refund["status"] == "succeeded" else None

        refund = await _until("the refund", refunded)
        assert refund["amount_fen"] == booking["amount_fen"]
        _, at_sim = await _call(http, "GET", f"{paysim}/sim/refunds")
        assert any(r["refund_id"] == refund["refund_id"] for r in at_sim["items"]), at_sim
        amount = f"{refund['amount_fen'] / 100:.2f}元"

        async def refund_told() -> Any:
            _, sent = await _call(http, "GET", f"{sms_sim}/sim/messages")
            return [
                m
                for m in sent["messages"]
                if "已退回" in m["content"]["text"] and amount in m["content"]["text"]
            ]

        assert await _until("the refund's SMS", refund_told)


def test_loadtest_against_dev_passes(dev: Dev, tmp_path: Path) -> None:
    """`inventory loadtest --env-file` against dev (HIS and payments on, a few users for a
    few seconds): the schedule it adds is the HIS's, so no booking is rejected; PASS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inventory",
            "loadtest",
            "--env-file",
            str(dev.env_file),
            "--host",
            dev.api,
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "10",
            "--wait-s",
            "2",
            "--slots",
            "3",
            "--capacity",
            "4",
            "--wait-holds",
            "0",
            "--out",
            str(tmp_path),
            "--master-port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    summary = result.stdout
    assert result.returncode == 0, (summary + result.stderr)[-4000:]
    assert summary.rstrip().endswith("PASS"), summary[-4000:]
    assert "[ok] 0 oversold (Postgres)" in summary

    async def rejected() -> int:
        import asyncpg

        connection = await asyncpg.connect(dev.settings["INVENTORY_DATABASE_URL"])
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM bookings WHERE status = 'rejected'"
                    " AND schedule_id LIKE 'lt-s-%'"
                )
            )
        finally:
            await connection.close()

    assert asyncio.run(rejected()) == 0


async def test_dev_logs_a_patient_in_by_sms_and_by_wechat(dev: Dev) -> None:
    """dev starts the WeChat login and SMS simulators and names them in its banner; a
    code sent by SMS is printed (the phone masked) and logs in, a second one at once is
    refused (the resend interval), and a device's wx.login code logs in; the tokens
    work on the account's routes; neither the phone nor the code is in the log."""
    login = next(line for line in dev.banner if line.startswith("login "))
    wechat = login.split("WeChat simulator ", 1)[1].split()[0]
    sms_line = dev.banner[dev.banner.index(login) + 1]
    sms = sms_line.split("SMS simulator ", 1)[1].split()[0]
    phone = "13700001234"
    async with aiohttp.ClientSession() as http:
        status, sent = await _call(
            http, "POST", f"{dev.api}/v1/auth/sms/code", json={"phone": phone}
        )
        assert status == 202, sent
        assert dev.process.stdout is not None
        # Other SMS the simulator sent (the notifications') are printed too: skip them.
        printed = ""
        while "验证码" not in printed:
            printed = await asyncio.to_thread(dev.process.stdout.readline)
            assert printed, "dev's stdout ended"
        assert printed.startswith("sms        137****1234  您的登录验证码为 "), printed
        status, messages = await _call(http, "GET", f"{sms}/sim/messages")
        (text,) = [m["content"]["text"] for m in messages["messages"] if m["address"] == phone]
        code = text.split("验证码为 ", 1)[1][:6]
        assert code.isdigit()
        assert code in printed
        # dev keeps the default resend interval: a second code at once is refused.
        status, again = await _call(
            http, "POST", f"{dev.api}/v1/auth/sms/code", json={"phone": phone}
        )
        assert (status, again["code"]) == (429, "rate_limited")
        status, tokens = await _call(
            http, "POST", f"{dev.api}/v1/auth/sms/verify", json={"phone": phone, "code": code}
        )
        assert status == 200, tokens
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await _call(http, "GET", f"{dev.api}/v1/patients", headers=bearer))[0] == 200
        status, device = await _call(http, "POST", f"{wechat}/sim/login", json={})
        status, tokens = await _call(
            http, "POST", f"{dev.api}/v1/auth/wechat", json={"code": device["code"]}
        )
        assert status == 200, tokens
    assert phone not in dev.log_file.read_text(encoding="utf-8")
    assert code not in dev.log_file.read_text(encoding="utf-8")


def test_dev_stops_cleanly_and_removes_its_settings(dev: Dev) -> None:
    """SIGTERM: exit status 0 and the env file (it holds keys) is gone. (Runs last.)"""
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(timeout=60) == 0
    assert not dev.env_file.exists()


def _settings(worker_port: int) -> Settings:
    key = base64.b64encode(os.urandom(32)).decode()
    return Settings.from_env(
        {
            "INVENTORY_JWT_KEYS": f"k1:{key}",
            "INVENTORY_FIELD_KEYS": f"f1:{base64.b64encode(os.urandom(32)).decode()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{base64.b64encode(os.urandom(32)).decode()}",
            "INVENTORY_WORKER_METRICS_PORT": str(worker_port),
        }
    )


def test_dev_banner_says_when_the_worker_metrics_are_off_or_not_answering() -> None:
    """The worker's metrics line says "off" with port 0, and that the port does not
    answer when the worker could not take it; the API's /metrics is always named;
    without the pay simulator the payments line says they are off."""

    def lines(worker_port: int, answers: bool) -> list[str]:
        return dev_banner(
            _settings(worker_port),
            base="http://127.0.0.1:8080",
            redis_url="redis://r",
            database_url="postgresql://p",
            applied=3,
            his_url="",
            demo=None,
            worker_answers=answers,
        )

    off = lines(0, False)
    assert "metrics    api http://127.0.0.1:8080/metrics" in off
    assert "           worker off (INVENTORY_WORKER_METRICS_PORT=0)" in off
    assert "payments   off: confirm books a hold on any payment reference" in off
    taken = lines(9101, False)
    assert (
        "           worker http://127.0.0.1:9101/metrics  (not answering: is the port taken?"
        " see the log)" in taken
    )
    assert off[-1].startswith("ready:")
