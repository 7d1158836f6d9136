"""The hand-built views against the pydantic models they stand in for: the reserve
path's hold view and the patient record's patient view give the same JSON for any
input, so the contract (OpenAPI, schemathesis) still holds; and every instant in the
hospital's time zone with its offset."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from inventory.api.holds import hold_view
from inventory.api.instants import instant, instant_text
from inventory.api.models import HoldView, PatientView
from inventory.domain import Gender, Hold, HoldState, Relation
from inventory.record.catalogue import ScheduleTerms
from inventory.record.patients import patient_view

SHANGHAI = ZoneInfo("Asia/Shanghai")
ZONES = [SHANGHAI, ZoneInfo("UTC"), ZoneInfo("Asia/Urumqi"), ZoneInfo("America/New_York")]

#: Epoch ms from 1970 to the end of year 9998 (9999-12-31 in UTC+8 is past datetime.max).
instants = st.integers(min_value=0, max_value=253_370_764_799_999)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=64)


@st.composite
def holds(draw: st.DrawFn) -> Hold:
    return Hold(
        hold_id=draw(ids),
        slot_id=draw(ids),
        schedule_id=draw(ids),
        account_id=draw(ids),
        patient_id=draw(ids),
        channel=draw(st.sampled_from(["wechat", "alipay", "app", "web"])),
        amount_fen=draw(st.integers(min_value=0, max_value=10**9)),
        state=draw(st.sampled_from(list(HoldState))),
        created_ms=draw(instants),
        deadline_ms=draw(instants),
        extended=draw(st.booleans()),
        payment_ref="",
        confirmed_ms=0,
        ended_ms=0,
        end_reason="",
    )


@given(holds(), st.sampled_from(ZONES), instants, instants)
def test_hold_view_is_the_models_json(hold: Hold, zone: ZoneInfo, deadline: int, now: int) -> None:
    """The hand-built view is HoldView's JSON, instants written in the hospital's zone."""
    terms = ScheduleTerms(zone, deadline)
    view = hold_view(hold, terms, now)
    expected = HoldView(
        hold_id=hold.hold_id,
        slot_id=hold.slot_id,
        schedule_id=hold.schedule_id,
        patient_id=hold.patient_id,
        channel=hold.channel,
        state=hold.state.value,
        amount_fen=hold.amount_fen,
        created_at=instant(hold.created_ms),
        deadline=instant(hold.deadline_ms),
        extended=hold.extended,
        cancel_deadline=instant(deadline),
        cancellable=hold.state in (HoldState.HELD, HoldState.BOOKED) and now < deadline,
    )
    assert HoldView.model_validate(view) == expected
    assert list(view) == list(expected.model_dump())  # and the same key order
    for name in ("created_at", "deadline", "cancel_deadline"):
        text = str(view[name])
        assert text == getattr(expected, name).astimezone(zone).isoformat()
        assert (
            datetime.fromisoformat(text).utcoffset()
            == getattr(expected, name).astimezone(zone).utcoffset()
        )


@given(
    st.text(max_size=40),
    st.sampled_from(list(Gender)),
    st.dates(min_value=date(1, 1, 1)),
    st.sampled_from(list(Relation)),
)
def test_patient_view_is_the_models_json(
    name: str, gender: Gender, birth_date: date, relation: Relation
) -> None:
    """The patient record's view (built without the API's model) is PatientView's JSON."""
    fields = {
        "patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0",
        "name": name,
        "birth_date": birth_date,
        "phone": "138****5678",
        "resident_id": "1101**********002X",
    }
    view = patient_view(**fields, gender=gender.value, relation=relation.value)
    expected = PatientView(**fields, gender=gender, relation=relation)
    assert view == expected.model_dump(mode="json")
    assert list(view) == list(expected.model_dump())  # and the same key order


def test_instant_text_examples() -> None:
    """Instants read as the hospital's wall clock, with the offset (RFC 3339)."""
    assert instant_text(0, SHANGHAI) == "1970-01-01T08:00:00+08:00"
    assert instant_text(1_764_000_000_123, SHANGHAI) == "2025-11-25T00:00:00.123000+08:00"
    # An 08:00 Beijing session is 08:00+08:00, never 00:00+00:00.
    assert instant_text(1_796_774_400_000, SHANGHAI) == "2026-12-09T08:00:00+08:00"
    assert instant_text(253_402_300_799_999, ZoneInfo("UTC")) == "9999-12-31T23:59:59.999000+00:00"
    assert instant_text(1_796_774_400_000, ZoneInfo("UTC")) == "2026-12-09T00:00:00+00:00"
