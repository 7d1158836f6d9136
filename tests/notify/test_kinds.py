"""The kind table, the texts and the settings, without servers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time

import pytest

from inventory.notify.kinds import KINDS, RULES, Fact, kind_of
from inventory.notify.planner import idempotency_key
from inventory.notify.sender import retry_delay_s
from inventory.notify.settings import NotifySettings, parse_templates, parse_wall_time
from inventory.notify.templates import (
    TEMPLATED_KINDS,
    HospitalTemplates,
    MessageContext,
    sms_text,
    wechat_message,
)
from inventory.ops.config import ConfigError, Settings


def test_every_kind_has_texts_and_every_rule_a_kind() -> None:
    """A kind added to the table without its zh-CN texts, or a rule naming no kind, fails."""
    assert set(KINDS) == TEMPLATED_KINDS
    assert {rule.kind for rule in RULES} == set(KINDS)


@pytest.mark.parametrize(
    ("fact", "detail", "his", "kind"),
    [
        ("booking_confirmed", {}, False, "booking_confirmed"),
        ("booking_confirmed", {}, True, None),
        ("booking_his_confirmed", {}, True, "booking_confirmed"),
        ("booking_cancelled", {"reason": "suspended: 停诊"}, True, "schedule_suspended"),
        ("booking_cancelled", {"reason": "his_cancelled"}, True, "hospital_cancelled"),
        ("booking_cancelled", {"reason": "patient_cancelled"}, True, None),
        ("booking_visited", {}, True, None),
        ("booking_no_show", {}, True, "no_show_recorded"),
    ],
)
def test_facts_become_kinds(fact: str, detail: dict[str, str], his: bool, kind: str | None) -> None:
    """With an HIS the patient hears of the booking once the HIS confirmed it; a patient's
    own cancellation and a visit are no message."""
    found = kind_of(Fact(fact, detail, his))
    assert (found.name if found else None) == kind


def test_wechat_fields_are_cut_to_their_limits_and_sms_is_signed() -> None:
    """A long department name fits a thing field (20); the SMS starts with the signature."""
    context = MessageContext(
        hospital="某某市第一人民医院",
        department="心血管内科（东院区）特需门诊",
        doctor="李",
        visit_at=datetime(2026, 12, 8, 1, 30, tzinfo=UTC),
        his_no="A017",
        booking_id="d1.20261208.abc",
    )
    hospital = HospitalTemplates(
        sign="一院", wechat_templates={"booking_confirmed": "T1"}, page="pages/booking"
    )
    message = wechat_message("booking_confirmed", context, hospital)
    assert message is not None
    assert all(len(v["value"]) <= 20 for k, v in message.data.items() if k.startswith("thing"))
    assert message.data["time3"]["value"] == "2026年12月08日 09:30"
    assert message.page == "pages/booking?booking_id=d1.20261208.abc"
    text = sms_text("booking_confirmed", context, hospital)
    assert text.startswith("【一院】预约成功")
    assert "李医生" in text
    assert "A017" in text
    assert wechat_message("ban_ended", context, hospital) is None  # no template: SMS only


def test_idempotency_key_is_per_fact_channel_and_recipient() -> None:
    """The same target gives the same key; any other part gives another."""
    key = idempotency_key("booking:x:confirmed", "sms", "patient:p1")
    assert key == idempotency_key("booking:x:confirmed", "sms", "patient:p1")
    assert len(key) == 32
    others = {
        idempotency_key("booking:x:his_confirmed", "sms", "patient:p1"),
        idempotency_key("booking:x:confirmed", "wechat", "patient:p1"),
        idempotency_key("booking:x:confirmed", "sms", "patient:p2"),
    }
    assert key not in others
    assert len(others) == 3


def test_retry_delay_doubles_with_jitter_up_to_the_cap() -> None:
    """Attempt n waits in [d/2, d], d doubling from the first delay to the cap."""
    settings = NotifySettings(retry_initial_s=5, retry_max_s=60)
    rng = random.Random(7)
    for attempts, cap in ((1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)):
        delay = retry_delay_s(attempts, settings, rng)
        assert cap / 2 <= delay <= cap


def test_settings_are_read_and_checked_together() -> None:
    """The notify settings come from the one env parser; inconsistent ones are refused."""
    env = {
        "INVENTORY_NOTIFY_SMS_URL": "http://127.0.0.1:1",
        "INVENTORY_NOTIFY_SMS_API_KEY": "secret-sms-key",
        "INVENTORY_NOTIFY_WECHAT_TEMPLATES": "booking_confirmed:T-1, ban_ended:T_2",
        "INVENTORY_NOTIFY_REMINDER_TIME": "07:30",
    }
    notify = Settings.from_env(env, for_api=False).notify
    assert notify.channels == ("sms",)
    assert dict(notify.wechat_templates) == {"booking_confirmed": "T-1", "ban_ended": "T_2"}
    assert notify.reminder_time == time(7, 30)
    assert "secret-sms-key" not in repr(notify)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(
            {
                "INVENTORY_NOTIFY_WECHAT_URL": "http://127.0.0.1:1",
                "INVENTORY_NOTIFY_REMINDER_TIME": "25:00",
                "INVENTORY_NOTIFY_LEASE_S": "5",
            },
            for_api=False,
        )
    problems = " ".join(refused.value.problems)
    assert "NOTIFY_WECHAT_APPID" in problems
    assert "NOTIFY_REMINDER_TIME" in problems
    assert "NOTIFY_LEASE_S" in problems
    with pytest.raises(ValueError, match="template id"):
        parse_templates("booking_confirmed:bad id")
    with pytest.raises(ValueError, match="HH:MM"):
        parse_wall_time("8 am")


def test_the_api_names_every_kind() -> None:
    """The routes' kind parameter (an OpenAPI enum) is the kind table."""
    from typing import get_args

    from inventory.api.notifications import Kind

    assert set(get_args(Kind)) == set(KINDS)
