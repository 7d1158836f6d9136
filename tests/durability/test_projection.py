"""Reading outbox entries as events (no servers): what a poison entry looks like, and the
batch forms of the named queries the projection writes with."""

from __future__ import annotations

import orjson
import pytest

from inventory.record.persister import PersisterConfig, _is_poison_error
from inventory.record.projection import (
    ADD_STATUS_HISTORIES,
    UPSERT_HOLDS,
    MalformedEntryError,
    OutboxEntry,
    PatientEvent,
    TagEvent,
    parse_entry,
)
from inventory.store import keys

TAG = "dept-1:20270308"
HOLD = keys.hold_id_for("acct-1", "key-1", TAG)
RECORD = {
    "id": HOLD,
    "slot": "slot-1",
    "schedule": "sched-1",
    "account": "acct-1",
    "patient": "pat-1",
    "channel": "wechat",
    "fp": "0" * 32,
    "amount": 5000,
    "created": 1_800_000_000_000,
    "deadline": 1_800_000_900_000,
    "extended": 0,
    "state": "held",
    "payment_ref": "",
    "confirmed": 0,
    "ended": 0,
    "reason": "",
}


def hold_created(**changes: str) -> dict[str, str]:
    fields = {
        "type": "hold_created",
        "seq": "7",
        "at": "1800000000000",
        "tag": TAG,
        "hold": HOLD,
        "record": orjson.dumps(RECORD).decode(),
        "slot": "slot-1",
    }
    fields.update(changes)
    return fields


def test_a_hold_event_carries_its_hold_and_its_payload() -> None:
    """A hold event parses into tag, seq, time, the hold record and the other fields."""
    event = parse_entry(OutboxEntry("s", "1-0", hold_created()))
    assert isinstance(event, TagEvent)
    assert (event.tag, event.seq, event.type) == (TAG, 7, "hold_created")
    assert event.hold is not None
    assert event.hold.hold_id == HOLD
    assert set(event.payload) == {"hold", "record", "slot"}


def test_an_event_must_name_the_tag_of_its_stream() -> None:
    """An event in tag A's stream that names tag B is malformed (it would move B's seq)."""
    other = keys.tag_keys("dept-2:20270308").outbox
    with pytest.raises(MalformedEntryError, match="another tag"):
        parse_entry(OutboxEntry(other, "1-0", hold_created()))
    assert isinstance(
        parse_entry(OutboxEntry(keys.tag_keys(TAG).outbox, "1-0", hold_created())), TagEvent
    )


def test_a_ban_event_has_no_seq() -> None:
    """patient_banned / patient_unbanned events parse without seq or tag."""
    fields = {"type": "patient_unbanned", "at": "5", "patient": "p-1", "hospital": "*"}
    event = parse_entry(OutboxEntry("s", "1-0", {**fields, "until": "0", "reason": "x"}))
    assert isinstance(event, PatientEvent)
    assert (event.patient_id, event.until_ms) == ("p-1", 0)


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": "0"},
        {"seq": "x"},
        {"seq": str(2**63)},
        {"at": "-1"},
        {"at": "99999999999999999"},
        {"type": ""},
        {"hold": "another"},
        {"record": "{"},
        {"record": orjson.dumps({**RECORD, "state": "lost"}).decode()},
        {"tag": "dept-2:20270308"},
    ],
)
def test_a_malformed_entry_is_refused(changes: dict[str, str]) -> None:
    """Missing or out-of-range numbers, unreadable records and a record of another hold
    or tag make an entry malformed (a poison entry, never a crash)."""
    with pytest.raises(MalformedEntryError):
        parse_entry(OutboxEntry("s", "1-0", hold_created(**changes)))
    assert _is_poison_error(MalformedEntryError("x"))


def test_the_batch_forms_of_the_named_queries_exist() -> None:
    """upsert_hold and add_status_history still have the VALUES shape the projection
    rewrites into one statement per batch, keeping their ON CONFLICT rules."""
    assert UPSERT_HOLDS is not None
    assert "unnest($1::text[]" in UPSERT_HOLDS
    assert "inv_hold_state_rank(EXCLUDED.state)" in UPSERT_HOLDS
    assert ADD_STATUS_HISTORIES is not None
    assert ADD_STATUS_HISTORIES.endswith("ON CONFLICT (event_key) DO NOTHING")


def test_config_refuses_nonsense() -> None:
    """Zero batch sizes, writers or durations are refused at construction."""
    for bad in ({"batch_size": 0}, {"writers": 0}, {"block_s": 0}, {"match": ()}):
        with pytest.raises(ValueError, match=r"must|needed"):
            PersisterConfig(**bad)  # type: ignore[arg-type]
