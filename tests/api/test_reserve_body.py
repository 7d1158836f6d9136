"""The reserve's body on the hot path (msgspec) takes exactly what the models take, with
the same values, and refuses everything else with the models' own errors."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.api.bodies import parse_json
from inventory.api.models import HoldCreate
from inventory.api.reserve_body import ReserveBody, parse_reserve_body
from inventory.errors import InventoryError

GOOD = {"slot_id": "slot-0800-1", "patient_id": "p0123456789abcdef", "channel": "app"}


def _outcome(parse: object, raw: bytes) -> object:
    """What parsing ``raw`` gives: the three values, or the refusal's code and context."""
    try:
        if parse is parse_reserve_body:
            body = parse_reserve_body(raw)
            return ("ok", body.slot_id, body.patient_id, body.channel)
        model = parse_json(raw, HoldCreate)
        return ("ok", model.slot_id, model.patient_id, model.channel.value)
    except InventoryError as refused:
        return ("refused", refused.code, refused.http_status, refused.detail, refused.context)


def _dump(value: object) -> bytes:
    return json.dumps(value).encode()


ODD_BODIES: list[bytes] = [
    _dump(GOOD),
    orjson.dumps(GOOD) + b"\n",
    b" " + orjson.dumps(GOOD) + b" ",
    b"\xef\xbb\xbf" + orjson.dumps(GOOD),  # a BOM is not JSON
    orjson.dumps(GOOD) + b" x",
    b'{"slot_id":"a","slot_id":"b","patient_id":"p","channel":"app"}',  # the last one counts
    b'{"slot\\u005fid":"a","patient_id":"p","channel":"app"}',
    b'{"slot_id":"a\\n","patient_id":"p","channel":"app"}',  # "$" would take a newline
    b'{"slot_id":"\\ud800","patient_id":"p","channel":"app"}',
    b'{"slot_id":"a","patient_id":"p","channel":"APP"}',
    b'{"slot_id":"a","patient_id":"p","channel":"app","x":1}',
    b'{"slot_id":"a","patient_id":"p"}',
    b'{"slot_id":1,"patient_id":"p","channel":"app"}',
    b'{"slot_id":null,"patient_id":"p","channel":"app"}',
    b'{"slot_id":"","patient_id":"p","channel":"app"}',
    b'{"slot_id":"' + b"a" * 65 + b'","patient_id":"p","channel":"app"}',
    b'{"slot_id":"' + b"a" * 64 + b'","patient_id":"p","channel":"app"}',
    b'{"slot_id":"\xc3\xa9","patient_id":"p","channel":"app"}',
    b'{"slot_id":"\\u0661","patient_id":"p","channel":"app"}',  # Arabic-Indic digit one
    b'{"slot_id":"a","patient_id":"p","channel":"app"',
    b'["a","p","app"]',
    b"null",
    b"",
    b"NaN",
    b"{}",
]


@pytest.mark.parametrize("raw", ODD_BODIES)
def test_the_fast_path_answers_as_the_models(raw: bytes) -> None:
    assert _outcome(parse_reserve_body, raw) == _outcome(parse_json, raw)


def test_a_good_body_is_a_reserve_body() -> None:
    body = parse_reserve_body(orjson.dumps(GOOD))
    assert body == ReserveBody(**GOOD)


_TEXT = st.one_of(
    st.sampled_from(["app", "web", "wechat", "alipay", "slot-1", "p_1", "APP", "a\n", ""]),
    st.text(max_size=70),
    st.from_regex(r"[A-Za-z0-9_-]{60,66}", fullmatch=True),
)
_VALUE = st.one_of(_TEXT, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_FIELDS = st.sampled_from(["slot_id", "patient_id", "channel", "extra", "Slot_id"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELDS, _VALUE, max_size=5))
def test_any_object_is_answered_as_the_models_answer_it(fields: dict[str, object]) -> None:
    raw = _dump(fields)
    assert _outcome(parse_reserve_body, raw) == _outcome(parse_json, raw)
