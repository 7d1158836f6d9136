"""The reserve path's hand-built hold view against the pydantic model it stands in
for: the same JSON for any hold, so the contract (OpenAPI, schemathesis) still holds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inventory.api.holds import _instant, hold_view, instant_text
from inventory.api.models import HoldView
from inventory.domain import Hold, HoldState

#: Epoch ms from 1970 to the last millisecond of year 9999.
instants = st.integers(min_value=0, max_value=253_402_300_799_999)
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


@given(holds())
def test_hold_view_is_the_models_json(hold: Hold) -> None:
    expected = HoldView(
        hold_id=hold.hold_id,
        slot_id=hold.slot_id,
        schedule_id=hold.schedule_id,
        patient_id=hold.patient_id,
        channel=hold.channel,
        state=hold.state.value,
        amount_fen=hold.amount_fen,
        created_at=_instant(hold.created_ms),
        deadline=_instant(hold.deadline_ms),
        extended=hold.extended,
    ).model_dump(mode="json")
    assert hold_view(hold) == expected
    assert list(hold_view(hold)) == list(expected)  # and the same key order


def test_instant_text_examples() -> None:
    assert instant_text(0) == "1970-01-01T00:00:00Z"
    assert instant_text(1_764_000_000_123) == "2025-11-24T16:00:00.123000Z"
    assert instant_text(253_402_300_799_999) == "9999-12-31T23:59:59.999000Z"
