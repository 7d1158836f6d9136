"""A release day (放号) for Locust: a crowd waits, the slots open at T0, patients reserve,
most pay within the deadline, some abandon the hold, some double-click, some cancel.

Run it through ``inventory loadtest`` (which seeds a schedule releasing at T0, runs this
headless and then checks the invariants), or by hand::

    LOADTEST_DEPARTMENT=cardiology LOADTEST_DATE=2025-06-02 \\
    INVENTORY_JWT_KEYS=... INVENTORY_JWT_CURRENT_KEY=... \\
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 -u 200 -r 50 -t 2m

Settings (environment):

- ``LOADTEST_DEPARTMENT``, ``LOADTEST_DATE``: the department-day whose schedules are
  released (the catalogue routes list them; no slot ids are configured).
- ``LOADTEST_WAIT_S``: seconds from start to T0, the crowd's ramp (default: a fifth of
  the run time).
- ``LOADTEST_PAID_LOG``: a JSONL file; every confirm that answered 200 (and every cancel
  that answered 200) is appended, on the master in distributed mode (workers send their
  records to it), so the checker sees all of them.
- ``LOADTEST_TOKENS_FILE``: one bearer token per line, instead of minting them from
  ``INVENTORY_JWT_KEYS`` / ``INVENTORY_JWT_CURRENT_KEY`` (the server's settings).
- ``LOADTEST_PAY_MAX_S``: the slowest payer's delay (default 2 s; keep it below the
  hospital's hold time so "most pay within the deadline" holds).
- ``LOADTEST_PAY``, ``LOADTEST_ABANDON_DELETE``, ``LOADTEST_DOUBLE_CLICK``,
  ``LOADTEST_CANCEL``: the shares of the mix (defaults 0.7, 0.15, 0.15, 0.1); whoever
  neither pays nor deletes leaves the hold to expire.

A queued release (its waiting room, docs/release-day.md): with ``LOADTEST_RELEASE`` set to
a release id, the ``QueuedPatient`` class takes part too (``LOADTEST_QUEUED_WEIGHT``, default
3 to the ordinary patient's 1): it joins the room, waits on its ticket by long-poll, and
when admitted reserves with its token and pays. Without it that class stays idle.

Every URL with an id is reported under its template (``/v1/holds/{hold_id}/confirm``), so
the statistics have one row per route.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import MasterRunner, WorkerRunner

PAID_MESSAGE = "inventory_paid"
_lock = threading.Lock()
_serial = itertools.count()
_run_id = uuid.uuid4().hex[:8]


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


PAY = _float("LOADTEST_PAY", 0.7)
ABANDON_DELETE = _float("LOADTEST_ABANDON_DELETE", 0.15)
DOUBLE_CLICK = _float("LOADTEST_DOUBLE_CLICK", 0.15)
CANCEL = _float("LOADTEST_CANCEL", 0.1)
PAY_MAX_S = _float("LOADTEST_PAY_MAX_S", 2.0)


# -- paid records: written where the checker can read them ---------------------------------


def _write_records(records: list[dict[str, Any]]) -> None:
    path = os.environ.get("LOADTEST_PAID_LOG")
    if not path:
        return
    with _lock, Path(path).open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def _on_paid_message(environment: Any, msg: Any, **_kwargs: Any) -> None:
    _write_records(list(msg.data))


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(PAID_MESSAGE, _on_paid_message)


def record(user: FastHttpUser, entry: dict[str, Any]) -> None:
    """Keep one outcome the checker must find in Postgres."""
    runner = user.environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message(PAID_MESSAGE, [entry])
    else:
        _write_records([entry])


# -- tokens ---------------------------------------------------------------------------------

_tokens: list[str] | None = None


def _token_for(account: str) -> str:
    global _tokens
    path = os.environ.get("LOADTEST_TOKENS_FILE")
    if path:
        if _tokens is None:
            _tokens = [t.strip() for t in Path(path).read_text().splitlines() if t.strip()]
        return _tokens[next(_serial) % len(_tokens)]
    from inventory.api.auth import mint_token
    from inventory.ops.config import Settings

    settings = Settings.from_env()
    return mint_token(settings, account, ttl_s=6 * 3600)


def _patient_body() -> dict[str, Any]:
    from inventory.privacy.identity import make_resident_id

    rng = random.Random()
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(25_000))
    gender = rng.choice(("male", "female"))
    region = f"{rng.randrange(110000, 659999):06d}"
    return {
        "name": "测试患者",
        "gender": gender,
        "birth_date": born.isoformat(),
        "phone": f"13{rng.randrange(10**9):09d}",
        "resident_id": make_resident_id(born, gender, region=region, seq=rng.randrange(500)),
        "relation": "self",
    }


# -- the patient ----------------------------------------------------------------------------


class Patient(FastHttpUser):
    """One account on release day: waits for T0, then books, pays, abandons or cancels."""

    wait_time: Any = None  # set below: a short think time between journeys

    def on_start(self) -> None:
        self.department = os.environ["LOADTEST_DEPARTMENT"]
        self.day = os.environ["LOADTEST_DATE"]
        self.account = f"lt-{_run_id}-{os.getpid()}-{next(_serial)}"
        self.auth = {"Authorization": f"Bearer {_token_for(self.account)}"}
        self.released = False

    def _register(self) -> str | None:
        """A fresh patient per journey (one open hold per patient and day is the rule)."""
        with self.client.post(
            "/v1/patients", json=_patient_body(), headers=self.auth, catch_response=True
        ) as answer:
            if answer.status_code in (200, 201):
                return str(answer.json()["patient_id"])
            answer.failure(f"register: {answer.status_code}")
            return None

    def _schedules(self) -> list[dict[str, Any]]:
        with self.client.get(
            f"/v1/departments/{self.department}/schedules?date={self.day}",
            name="/v1/departments/{department_id}/schedules",
            catch_response=True,
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"schedules: {answer.status_code}")
                return []
            items: list[dict[str, Any]] = answer.json()["items"]
            return items

    def _pick_slot(self) -> str | None:
        schedules = self._schedules()
        self.released = any(s["released"] for s in schedules)
        open_ = [s for s in schedules if s["released"] and s["remaining"] > 0]
        if not open_:
            return None
        schedule = random.choice(open_)
        with self.client.get(
            f"/v1/schedules/{schedule['schedule_id']}/slots",
            name="/v1/schedules/{schedule_id}/slots",
            catch_response=True,
        ) as answer:
            if answer.status_code not in (200, 304):
                answer.failure(f"slots: {answer.status_code}")
                return None
            slots = [s for s in answer.json()["items"] if s["remaining"] > 0]
        return str(random.choice(slots)["slot_id"]) if slots else None

    def _reserve(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        with self.client.post(
            "/v1/holds",
            json=body,
            headers=self.auth | {"Idempotency-Key": key},
            catch_response=True,
        ) as answer:
            status = answer.status_code
            data: dict[str, Any] = answer.json() if answer.text else {}
            if status == 409:
                answer.success()  # sold out / patient rule: an outcome, not an error
            return status, data

    def _confirm(self, hold_id: str, payment_ref: str) -> int:
        with self.client.post(
            f"/v1/holds/{hold_id}/confirm",
            json={"payment_ref": payment_ref},
            headers=self.auth,
            name="/v1/holds/{hold_id}/confirm",
            catch_response=True,
        ) as answer:
            if answer.status_code == 409:
                answer.success()  # paid too late: hold_expired is an outcome
            return int(answer.status_code)

    @task
    def journey(self) -> None:
        """Wait for the release, then one patient's path from reserve to its end."""
        slot_id = self._pick_slot()
        if slot_id is None:
            time.sleep(1.0 if not self.released else 2.0)  # the crowd refreshes
            return
        patient_id = self._register()
        if patient_id is None:
            return
        body = {"slot_id": slot_id, "patient_id": patient_id, "channel": "wechat"}
        key = uuid.uuid4().hex
        status, hold = self._reserve(body, key)
        if status != 201:
            return
        hold_id = str(hold["hold_id"])
        if random.random() < DOUBLE_CLICK:
            # The impatient double-click: same key, same body -> the same hold.
            with self.client.post(
                "/v1/holds",
                json=body,
                headers=self.auth | {"Idempotency-Key": key},
                name="/v1/holds (retry)",
                catch_response=True,
            ) as again:
                if again.status_code == 201 and again.json().get("hold_id") != hold_id:
                    again.failure("a retry with the same Idempotency-Key made a second hold")
        roll = random.random()
        if roll < PAY:
            self._pay(hold_id)
        elif roll < PAY + ABANDON_DELETE:
            self.client.delete(
                f"/v1/holds/{hold_id}", headers=self.auth, name="/v1/holds/{hold_id}"
            )
        # else: the patient walks away and the hold expires at its deadline.

    def _pay(self, hold_id: str) -> None:
        time.sleep(random.uniform(0.1, PAY_MAX_S))  # the payment page
        payment_ref = f"lt-{uuid.uuid4().hex[:20]}"
        status = 0
        for _attempt in range(3):  # 503 (Postgres busy or down): retry the same payment
            status = self._confirm(hold_id, payment_ref)
            if status != 503:
                break
            time.sleep(0.5)
        if status != 200:
            return
        if random.random() < DOUBLE_CLICK:
            self._confirm(hold_id, payment_ref)  # the "pay" button pressed twice
        record(
            self,
            {
                "hold_id": hold_id,
                "account": self.account,
                "payment_ref": payment_ref,
                "event": "paid",
                "at": time.time(),
            },
        )
        if random.random() < CANCEL:
            with self.client.post(
                f"/v1/bookings/{hold_id}/cancel",
                json={"reason": "patient_cancelled"},
                headers=self.auth,
                name="/v1/bookings/{booking_id}/cancel",
                catch_response=True,
            ) as answer:
                if answer.status_code == 409:
                    answer.success()  # past the cancellation deadline
                elif answer.status_code == 200:
                    record(self, {"hold_id": hold_id, "event": "cancelled", "at": time.time()})


Patient.wait_time = lambda self: random.uniform(0.2, 1.0)


class QueuedPatient(Patient):
    """One account on a queued release's day: joins the waiting room before T0, waits on
    its ticket (one long-poll at a time, never the reserve route), reserves with the
    admission token when admitted, then pays; once sold out it is done."""

    abstract = not os.environ.get("LOADTEST_RELEASE")
    weight = int(_float("LOADTEST_QUEUED_WEIGHT", 3))

    def on_start(self) -> None:
        super().on_start()
        self.release = os.environ["LOADTEST_RELEASE"]
        self.done = False

    def _ticket(self, path: str, params: str = "") -> dict[str, Any] | None:
        with self.client.get(
            f"/v1/releases/{self.release}/tickets/{path}{params}",
            headers=self.auth,
            name="/v1/releases/{release_id}/tickets/{ticket_id}",
            catch_response=True,
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"ticket: {answer.status_code}")
                return None
            view: dict[str, Any] = answer.json()
            return view

    @task
    def journey(self) -> None:
        """Join, wait for the outcome, reserve with the token, pay."""
        if self.done:
            time.sleep(5.0)
            return
        patient_id = self._register()
        if patient_id is None:
            return
        with self.client.post(
            f"/v1/releases/{self.release}/tickets",
            json={"patient_id": patient_id},
            headers=self.auth,
            name="/v1/releases/{release_id}/tickets",
            catch_response=True,
        ) as answer:
            if answer.status_code == 409:
                answer.success()  # sold out (or not open yet): an outcome
                self.done = answer.json().get("code") == "room_sold_out"
                return
            if answer.status_code not in (200, 201):
                answer.failure(f"join: {answer.status_code}")
                return
            view: dict[str, Any] | None = answer.json()
        while view is not None and view["outcome"] == "waiting":
            view = self._ticket(view["ticket_id"], f"?wait_s=25&after={view['version']}")
        if view is None or view["outcome"] != "admitted":
            self.done = True
            return
        slot_id = self._pick_slot()
        if slot_id is None:
            self.done = True
            return
        body = {
            "slot_id": slot_id,
            "patient_id": patient_id,
            "channel": "wechat",
            "admission_token": view["admission_token"],
        }
        status, hold = self._reserve(body, uuid.uuid4().hex)
        self.done = True
        if status == 201:
            self._pay(str(hold["hold_id"]))


# -- the shape of the day ---------------------------------------------------------------------


class ReleaseDay(LoadTestShape):
    """A crowd ramps up before T0, spikes to every user at T0, then thins out.

    ``-u`` is the peak, ``-r`` the ramp rate before T0 and ``-t`` the whole run; T0 is
    ``LOADTEST_WAIT_S`` after the start (default a fifth of the run).
    """

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        peak = int(getattr(options, "num_users", None) or 50)
        rate = float(getattr(options, "spawn_rate", None) or 10)
        total = float(getattr(options, "run_time", None) or 60)
        t0 = _float("LOADTEST_WAIT_S", total / 5)
        now = self.get_run_time()
        if now >= total:
            return None
        crowd = max(1, int(peak * 0.3))
        if now < t0:
            return crowd, rate  # the crowd gathers and refreshes the countdown
        plateau_end = t0 + (total - t0) * 0.4
        if now < plateau_end:
            return peak, max(rate, float(peak))  # T0: everyone clicks at once
        fraction = (now - plateau_end) / max(total - plateau_end, 1e-9)
        users = int(peak - (peak - crowd) * fraction)
        return max(crowd, users), max(rate, float(peak))
