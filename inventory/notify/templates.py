"""The messages' zh-CN texts: an SMS sentence and a WeChat subscribe message's data
fields per kind, filled from the booking (or ban) as it is when the message is sent, and
a hospital's own signature, template ids and page.

WeChat subscribe-message fields have types with limits (``thing``: 20 characters,
``character_string``: 32 ASCII, ``time``, ``amount``, ``phrase``: 5 characters); each
value is cut to its type's limit here so the provider never refuses a long name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a message may say; never the patient's name, phone or ID number."""

    hospital: str
    timezone: str = "Asia/Shanghai"
    department: str = ""
    doctor: str = ""
    visit_at: datetime | None = None
    place: str = ""
    his_no: str = ""
    amount_fen: int | None = None
    #: The hospital's words for a refusal or cancellation (after the stable code).
    reason: str = ""
    until: datetime | None = None
    booking_id: str = ""

    def when(self) -> str:
        """The visit's time in the hospital's zone, or ``待定`` when unknown."""
        return _wall(self.visit_at, self.timezone) if self.visit_at else "待定"

    def amount(self) -> str:
        """``25.00元`` (empty when unknown)."""
        return "" if self.amount_fen is None else f"{self.amount_fen / 100:.2f}元"

    def until_text(self) -> str:
        return _wall(self.until, self.timezone) if self.until else ""

    def where(self) -> str:
        return self.place or "请以医院通知为准"


def _wall(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y年%m月%d日 %H:%M")


@dataclass(frozen=True, slots=True)
class HospitalTemplates:
    """One hospital's part of a message (``notification_hospital_settings``)."""

    sign: str
    #: WeChat template id by kind (the configured ones, overridden by the hospital's).
    wechat_templates: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The mini-program page a WeChat message opens (the booking's id is appended).
    page: str = ""


#: Limits of WeChat subscribe-message field types, by the key's prefix.
_FIELD_LIMITS: Final = {"thing": 20, "character_string": 32, "phrase": 5, "time": 40, "amount": 20}

#: SMS sentences by kind (``{sign}`` first, as carriers require the signature).
_SMS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "booking_confirmed": "【{sign}】预约成功：{hospital}{department}{doctor}，就诊时间{when}，"
        "地点{where}，就诊序号{his_no}。请按时就诊。",
        "his_rejected": "【{sign}】您在{hospital}的预约未能成功（{reason}），"
        "挂号费{amount}将原路退回。",
        "schedule_suspended": "【{sign}】因医生停诊，您在{hospital}{department}{when}的预约已取消，"
        "挂号费{amount}将原路退回。",
        "hospital_cancelled": "【{sign}】您在{hospital}{department}{when}的预约已被医院取消"
        "（{reason}），挂号费{amount}将原路退回。",
        "refund_succeeded": "【{sign}】您在{hospital}的挂号费{amount}已退回原支付账户。",
        "visit_reminder": "【{sign}】就诊提醒：您明天在{hospital}{department}{doctor}处就诊，"
        "时间{when}，地点{where}，就诊序号{his_no}。",
        "no_show_recorded": "【{sign}】您{when}在{hospital}{department}的预约未按时就诊，"
        "已记爽约一次。",
        "patient_banned": "【{sign}】因多次爽约，您在{hospital}的预约资格暂停至{until}。",
        "ban_ended": "【{sign}】您在{hospital}的预约资格已恢复。",
        "waitlist_offer": "【{sign}】候补成功：{hospital}{department}{doctor}{when}的号源"
        "已为您保留，请于{until}前支付挂号费{amount}，逾期自动释放。",
        "substitution_offer": "【{sign}】因医生停诊，医院为您{when}在{hospital}{department}的预约"
        "安排了其他医生替诊，请于{until}前确认改约或取消退款。",
        "reschedule_done": "【{sign}】改约成功：{hospital}{department}{doctor}，就诊时间{when}，"
        "地点{where}。",
    }
)

#: WeChat data fields by kind: (field key, what fills it).
_WECHAT: Final[Mapping[str, tuple[tuple[str, str], ...]]] = MappingProxyType(
    {
        "booking_confirmed": (
            ("thing1", "{hospital}{department}"),
            ("thing2", "{doctor}"),
            ("time3", "{when}"),
            ("thing4", "{where}"),
            ("character_string5", "{his_no}"),
        ),
        "his_rejected": (
            ("thing1", "{hospital}"),
            ("thing2", "{reason}"),
            ("amount3", "{amount}"),
        ),
        "schedule_suspended": (
            ("thing1", "{hospital}{department}"),
            ("time2", "{when}"),
            ("thing3", "医生停诊，预约已取消"),
            ("amount4", "{amount}"),
        ),
        "hospital_cancelled": (
            ("thing1", "{hospital}{department}"),
            ("time2", "{when}"),
            ("thing3", "{reason}"),
            ("amount4", "{amount}"),
        ),
        "refund_succeeded": (("thing1", "{hospital}"), ("amount2", "{amount}")),
        "visit_reminder": (
            ("thing1", "{hospital}{department}"),
            ("thing2", "{doctor}"),
            ("time3", "{when}"),
            ("thing4", "{where}"),
        ),
        "no_show_recorded": (("thing1", "{hospital}{department}"), ("time2", "{when}")),
        "patient_banned": (("thing1", "{hospital}"), ("time2", "{until}"), ("thing3", "多次爽约")),
        "ban_ended": (("thing1", "{hospital}"), ("phrase2", "已恢复")),
        "waitlist_offer": (
            ("thing1", "{hospital}{department}"),
            ("time2", "{when}"),
            ("amount3", "{amount}"),
            ("time4", "{until}"),
        ),
        "substitution_offer": (
            ("thing1", "{hospital}{department}"),
            ("time2", "{when}"),
            ("thing3", "医生停诊，已安排替诊"),
            ("time4", "{until}"),
        ),
        "reschedule_done": (
            ("thing1", "{hospital}{department}"),
            ("thing2", "{doctor}"),
            ("time3", "{when}"),
            ("thing4", "{where}"),
        ),
    }
)

#: The kinds that have texts (tests check :data:`inventory.notify.kinds.KINDS` against it).
TEMPLATED_KINDS: Final = frozenset(_SMS) & frozenset(_WECHAT)


def _values(context: MessageContext, sign: str) -> dict[str, str]:
    return {
        "sign": sign,
        "hospital": context.hospital,
        "department": context.department,
        "doctor": f"{context.doctor}医生" if context.doctor else "",
        "when": context.when(),
        "where": context.where(),
        "his_no": context.his_no or "待医院确认",
        "amount": context.amount(),
        "reason": context.reason or "医院未说明原因",
        "until": context.until_text(),
    }


def sms_text(kind: str, context: MessageContext, hospital: HospitalTemplates) -> str:
    """The SMS of ``kind``."""
    return _SMS[kind].format_map(_values(context, hospital.sign or context.hospital))


@dataclass(frozen=True, slots=True)
class WeChatMessage:
    """A subscribe message's parts (the recipient's openid is added by the channel)."""

    template_id: str
    page: str
    data: Mapping[str, Mapping[str, str]]


def wechat_message(
    kind: str, context: MessageContext, hospital: HospitalTemplates
) -> WeChatMessage | None:
    """The subscribe message of ``kind``, or None when no template id is configured for it
    (neither the hospital's nor the service's)."""
    template_id = hospital.wechat_templates.get(kind)
    if not template_id:
        return None
    values = _values(context, hospital.sign)
    data: dict[str, Mapping[str, str]] = {}
    for key, text in _WECHAT[kind]:
        prefix = key.rstrip("0123456789")
        value = text.format_map(values) or "-"
        data[key] = {"value": value[: _FIELD_LIMITS.get(prefix, 20)]}
    page = hospital.page
    if page and context.booking_id:
        page = f"{page}{'&' if '?' in page else '?'}booking_id={context.booking_id}"
    return WeChatMessage(template_id=template_id, page=page, data=MappingProxyType(data))
