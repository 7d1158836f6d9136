"""Which fact of the durable record is which message, and who hears it.

A *fact* is a row of ``notification_events`` (written by the triggers of migration 0011
or by the notifier's scan): ``booking_<status>`` when a booking is paid or changes status,
``refund_succeeded``, ``patient_banned``, ``ban_ended``, ``visit_reminder``,
``waitlist_offered``, and the lifecycle events ``substitution_offered`` and
``booking_rescheduled`` (copied by a trigger of migration 0026). A *kind* is
a message the patient gets. :data:`RULES` maps facts to kinds; a fact no rule takes is
planned with no delivery (a patient's own cancellation, a visit).

To add a message: add its :class:`Kind` to :data:`KINDS`, a :class:`Rule` from its fact
to :data:`RULES`, and its texts to :mod:`inventory.notify.templates` (a test checks that
every kind has them). A new booking status needs nothing in SQL: the booking trigger
records every status change as ``booking_<status>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

#: Who hears a kind: the account that made the booking, or every account linked to the
#: patient (a ban concerns the patient, whoever books for them).
Audience = Literal["booking", "patient"]
#: When a kind also goes by SMS: always (money or a visit that will not happen), or only
#: when the account has no WeChat subscription for it.
SmsPolicy = Literal["always", "fallback"]


@dataclass(frozen=True, slots=True)
class Kind:
    """One message the patient may get."""

    name: str
    audience: Audience
    sms: SmsPolicy
    #: What an operator reads in the dead-letter view (zh-CN).
    title: str


KINDS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            Kind("booking_confirmed", "booking", "fallback", "预约成功"),
            Kind("his_rejected", "booking", "always", "预约失败退款"),
            Kind("schedule_suspended", "booking", "always", "停诊取消退款"),
            Kind("hospital_cancelled", "booking", "always", "医院取消退款"),
            Kind("refund_succeeded", "booking", "fallback", "退款到账"),
            Kind("visit_reminder", "booking", "fallback", "就诊提醒"),
            Kind("no_show_recorded", "booking", "always", "爽约记录"),
            Kind("patient_banned", "patient", "always", "预约资格暂停"),
            Kind("ban_ended", "patient", "fallback", "预约资格恢复"),
            # The offer's unit is held only until its deadline: say so on every channel.
            Kind("waitlist_offer", "booking", "always", "候补成功待支付"),
            Kind("substitution_offer", "booking", "always", "停诊替诊待确认"),
            Kind("reschedule_done", "booking", "fallback", "改约成功"),
        )
    }
)


@dataclass(frozen=True, slots=True)
class Fact:
    """What a rule looks at: the fact's name, its detail, and whether the HIS flows run
    (with them a booking is confirmed to the patient once the HIS gave its number)."""

    name: str
    detail: Mapping[str, Any]
    his: bool

    @property
    def reason_code(self) -> str:
        """The stable code of a cancellation or refusal reason (``"<code>: <words>"``)."""
        return str(self.detail.get("reason") or "").split(":", 1)[0].strip()


def _always(_: Fact) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Rule:
    """``fact`` becomes ``kind`` when ``when`` holds."""

    fact: str
    kind: str
    when: Callable[[Fact], bool] = _always


RULES: Final[tuple[Rule, ...]] = (
    # Without an HIS the booking is final once paid; with one, the patient hears of it
    # when the HIS has given the appointment number, time and place.
    Rule("booking_confirmed", "booking_confirmed", lambda f: not f.his),
    Rule("booking_his_confirmed", "booking_confirmed", lambda f: f.his),
    Rule("booking_rejected", "his_rejected"),
    Rule("booking_cancelled", "schedule_suspended", lambda f: f.reason_code == "suspended"),
    Rule("booking_cancelled", "hospital_cancelled", lambda f: f.reason_code == "his_cancelled"),
    Rule("refund_succeeded", "refund_succeeded"),
    Rule("visit_reminder", "visit_reminder"),
    Rule("booking_no_show", "no_show_recorded"),
    Rule("patient_banned", "patient_banned"),
    Rule("ban_ended", "ban_ended"),
    Rule("waitlist_offered", "waitlist_offer"),
    Rule("substitution_offered", "substitution_offer"),
    Rule("booking_rescheduled", "reschedule_done"),
)


def kind_of(fact: Fact) -> Kind | None:
    """The message a fact is, or None (no message)."""
    for rule in RULES:
        if rule.fact == fact.name and rule.when(fact):
            return KINDS[rule.kind]
    return None
