"""The reserve's body (``POST /v1/holds``), read on the hot path without pydantic.

Every reserve of a release-day crowd sends this one small body. pydantic's strict
validation of it, after orjson's syntax check, cost several times what one msgspec
decode does (docs/benchmarks.md), so a well-formed body is taken by msgspec: the three
fields (and a queued release's admission token), each a string, the ids matching the id
pattern, the channel one of the channels and a token of the token's pattern. Whatever
msgspec or those checks do not take (bad JSON, a missing, unknown or mistyped field, a
bad id or channel) goes the way every other body goes
(:func:`~inventory.api.bodies.parse_json` with :class:`~inventory.api.models.HoldCreate`),
so a refusal is the very same problem+json (400 ``bad_request``, 422
``validation_failed`` with each field and why) as before. A body is only ever taken by
the fast path when the models take it too, with the same values
(tests/api/test_reserve_body.py).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec
from aiohttp import web

from inventory.api.bodies import parse_json, read_body
from inventory.api.models import Channel, HoldCreate
from inventory.store.keys import ID_RE

#: The models' pattern of an admission token.
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{40}", re.ASCII)


class ReserveBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A reserve's fields, as :class:`HoldCreate` has them (``channel`` as its text)."""

    slot_id: str
    patient_id: str
    channel: str
    #: A queued release's admission token ("" = none given).
    admission_token: str = ""


_DECODER: Final = msgspec.json.Decoder(ReserveBody)
_CHANNELS: Final = frozenset(channel.value for channel in Channel)


def parse_reserve_body(raw: bytes) -> ReserveBody:
    """``raw`` as a reserve's fields; refused exactly as :class:`HoldCreate` refuses."""
    try:
        body = _DECODER.decode(raw)
    except msgspec.MsgspecError:
        body = None
    # ID_RE (re.ASCII, fullmatch) is the models' id pattern: no trailing newline
    # slips through as it would with a pattern ending in "$".
    if (
        body is not None
        and body.channel in _CHANNELS
        and ID_RE.fullmatch(body.slot_id)
        and ID_RE.fullmatch(body.patient_id)
        and (not body.admission_token or _TOKEN_RE.fullmatch(body.admission_token))
    ):
        return body
    model = parse_json(raw, HoldCreate)  # refuses, with the models' own errors
    return ReserveBody(
        model.slot_id, model.patient_id, model.channel.value, model.admission_token or ""
    )


async def read_reserve_body(request: web.Request) -> ReserveBody:
    """The request's body (checked like every JSON body) as a reserve's fields."""
    return parse_reserve_body(await read_body(request))
