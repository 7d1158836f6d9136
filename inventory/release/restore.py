"""A rebuild's waiting rooms: every release of a tag not sold out, put back from the
record Postgres keeps (``room_releases``, ``room_tickets``) by one ``room_restore``
script call each, after the tag itself was rebuilt.

What the record has, and so what comes back:

- a release drawn (``drawn_at`` set): its revealed seed, so the queue is the same
  order again (drawn tickets by SHA1(seed || ticket), late joiners by arrival); the
  tickets admitted so far in their places, used and lapsed admissions as they ended.
  Token texts are not in the record: an admission still outstanding gets a new token
  with a token's life from now (its ticket's status shows it; a reserve with the lost
  one is refused ``admission_token_invalid``), and one past its expiry lapses at the
  room's next step, with its event.
- a release not drawn yet: its tickets, waiting for the draw, under a **new seed**:
  the committed one was kept only in Redis (it is secret until T0). The new
  commitment is published on the release's view and recorded by the
  ``room_restored`` event (with its hash), so an audit sees the re-commitment.

A room Redis still has is kept as it is (newer than the record); either way a room not
sold out governs its schedules again, so the queue cannot be bypassed after a rebuild.
"""

from __future__ import annotations

import secrets
import time
from datetime import date
from typing import Any

import orjson

from inventory.errors import LUA_OK, LUA_REPLAY, refusal_for
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.release import draw
from inventory.release.rooms import room_keys_expire_ms
from inventory.store import keys
from inventory.store.slot_store import SlotStore, guarded


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


def _member_of(release: str, seed: str, ticket: str, late: int) -> str:
    if late:
        return f"{release}|l|{late:010d}|{ticket}"
    return f"{release}|d|{draw.draw_key(seed, ticket)}|{ticket}"


def room_state(
    release: Any, tickets: list[Any], slots: list[str], now_ms: int
) -> tuple[dict[str, Any], list[list[str]], list[list[str]], list[str]]:
    """What ``room_restore`` writes for one release: (fields, tickets, tokens, queue
    members), from its ``room_releases`` row and ``list_room_tickets`` rows."""
    release_id = str(release["release_id"])
    schedules = sorted(str(s) for s in release["schedule_ids"])
    drawn = release["drawn_at"] is not None
    token_ms = int(float(release["token_s"]) * 1000)
    if drawn:
        secret = str(release["seed"])
        seed_hash = str(release["seed_hash"])
    else:
        secret = draw.new_seed()  # the committed one lived in Redis only
        seed_hash = draw.seed_hash(secret)
    nonce = secrets.token_hex(16)
    records: list[list[str]] = []
    tokens: list[list[str]] = []
    members: list[str] = []
    admitted = outstanding = used = lapsed = late_max = 0
    cursor = ""
    for row in tickets:
        ticket, late = str(row["ticket_id"]), int(row["late_seq"])
        account, patient = str(row["account_id"]), str(row["patient_id"])
        late_max = max(late_max, late)
        token = ""
        # Undrawn too, a ticket is filed by its draw key (room_join does so as it joins).
        member = _member_of(release_id, secret, ticket, late)
        members.append(member)
        if drawn:
            position = row["position"]
            if position is not None:
                expiry = _ms(row["token_expires_at"])
                outcome = str(row["outcome"])
                if outcome == "admitted":
                    # Its token's text is lost: a new one, for a token's life from now
                    # (past its expiry it lapses at the room's next step).
                    token = draw.draw_key(nonce, ticket)
                    if expiry > now_ms:
                        expiry = now_ms + token_ms
                    state = "a"
                    outstanding += 1
                    members.append(f"{release_id}|t|{expiry:015d}|{token}")
                else:
                    token = draw.draw_key("restored", ticket)
                    state = "u" if outcome == "reserved" else "x"
                    used += state == "u"
                    lapsed += state == "x"
                tokens.append(
                    [token, f"{release_id} {ticket} {account} {patient} {expiry} {state}"]
                )
                if int(position) > admitted:
                    admitted, cursor = int(position), member
        record = {
            "r": release_id,
            "a": account,
            "p": patient,
            "j": _ms(row["joined_at"]),
            "l": late,
            "k": token,
        }
        records.append([ticket, orjson.dumps(record).decode(), f"{release_id}|{account}|{patient}"])
    fields: dict[str, Any] = {
        "state": "admitting" if drawn else "open",
        "t0_ms": _ms(release["t0"]),
        "opens_ms": _ms(release["opens_at"]),
        "seed_hash": seed_hash,
        "secret": secret,
        "factor_pm": round(float(release["factor"]) * 1000),
        "token_ms": token_ms,
        "hospital": str(release["hospital_id"]),
        "schedules": " ".join(schedules),
        "slots": " ".join(slots),
        "joined": len(tickets),
        "late": late_max,
        "drawn": int(release["drawn"] or 0) if drawn else 0,
        "admitted": admitted,
        "outstanding": outstanding,
        "used": used,
        "lapsed": lapsed,
    }
    if drawn:
        fields["seed"] = secret
        fields["drawn_ms"] = _ms(release["drawn_at"])
    if cursor:
        fields["cursor"] = cursor
    return fields, records, tokens, members


async def restore_rooms(store: SlotStore, pool: Any, tag: str) -> int:
    """Put back every release of ``tag`` not sold out; returns how many the record
    restored (rooms Redis still had are kept and not counted)."""
    department_id, day = tag.split(":")
    visit_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    async with acquire(pool, timeout_s=10.0) as connection:
        releases = await connection.fetch(QUERIES["list_tag_live_rooms"], tag)
        if not releases:
            return 0
        slot_rows = await connection.fetch(QUERIES["list_tag_slots"], department_id, visit_date)
        tickets = {
            r["release_id"]: await connection.fetch(QUERIES["list_room_tickets"], r["release_id"])
            for r in releases
        }
    restored = 0
    now = store.script_now() or int(time.time() * 1000)
    room_key_list = [*keys.tag_keys(tag).as_list(), *keys.room_keys(tag).as_list()]
    for release in releases:
        governed = set(release["schedule_ids"])
        slots = sorted(str(s["id"]) for s in slot_rows if s["schedule_id"] in governed)
        fields, records, tokens, members = room_state(
            release, list(tickets[release["release_id"]]), slots, now
        )
        reply = await store.call_script(
            "room_restore",
            room_key_list,
            [
                store.script_now(),
                release["release_id"],
                orjson.dumps({k: str(v) for k, v in fields.items()}).decode(),
                orjson.dumps(records).decode(),
                orjson.dumps(tokens).decode(),
                orjson.dumps(members).decode(),
                room_keys_expire_ms(release["release_id"]),
                "",
            ],
        )
        code = int(reply[0])
        if code not in (LUA_OK, LUA_REPLAY):
            raise refusal_for(code)
        restored += code == LUA_OK
        await guarded(store.client.sadd(keys.RELEASE_REGISTRY_KEY, release["release_id"]))
    return restored
