"""RoomStore: the waiting-room scripts (lua/room_*.lua) typed in Python.

Each coroutine is one script call under the release's department-day tag, so a room's
every step is atomic with the slots it governs (Cluster-safe); errors are the store's
typed refusals (``room_not_found``, ``room_sold_out``, ...).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson

from inventory.errors import LUA_OK, LUA_REPLAY, refusal_for
from inventory.ops import metrics
from inventory.release import draw
from inventory.store import keys
from inventory.store.slot_store import DRIVER_ERRORS, SlotStore, guarded, store_error

#: A ticket's outcome as a front end reads it.
Outcome = Literal["waiting", "admitted", "reserved", "expired", "sold_out"]
#: Outcomes after which a ticket's status never changes.
FINAL_OUTCOMES: Final = frozenset({"reserved", "expired", "sold_out"})
#: At most this many tickets drawn or lapsed per room_advance call.
ADVANCE_LIMIT: Final = 2_000
#: At most this many tickets admitted per call: the admitted reserve at once, and a
#: step's admissions must stay well inside an API process's bound on requests in
#: flight (INVENTORY_MAX_IN_FLIGHT, 512 by default). Every API process serving the
#: release steps it every 0.1 s and the worker every 0.2 s, so admission still runs at
#: 2,000 a second.
ADMIT_LIMIT: Final = 200
#: ...and at most ADMIT_LIMIT admitted per window of this many ms, whoever steps the
#: room: an API process and the worker stepping in the same tenth of a second each
#: admitted 200, and 400 reserves at once overran the bound in flight (503s).
ADMIT_WINDOW_MS: Final = 100
#: A department-day's room keys live until this many days after its visit date began
#: (UTC): every release of the day is over by then, and Postgres keeps the record.
ROOM_KEYS_KEEP_DAYS: Final = 2


def room_keys_expire_ms(release_id: str) -> int:
    """When the room keys of ``release_id``'s department-day expire (epoch ms)."""
    day = keys.tag_of_release(release_id).rsplit(":", 1)[1]
    visit = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), tzinfo=UTC)
    return int((visit + timedelta(days=ROOM_KEYS_KEEP_DAYS)).timestamp() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class TicketStatus:
    """One ticket's place in its release's room, as room_status read it."""

    release_id: str
    ticket_id: str
    patient_id: str
    #: The release's state: open, admitting or sold_out.
    state: str
    #: 0 until drawn, then the ticket's place in the queue (1-based).
    position: int
    #: How many tickets were admitted so far (admission goes in queue order).
    admitted: int
    token: str
    token_expiry_ms: int
    #: a (admitted), u (used by a reserve), x (lapsed), "" (no token).
    token_state: str
    drawn: int
    t0_ms: int
    sold_out_ms: int
    drawn_ms: int
    joined_ms: int
    #: 0 when it joined before T0 (drawn), else its arrival number after T0.
    late: int = 0

    def outcome(self, now_ms: int) -> Outcome:
        """Where the ticket stands at ``now_ms``."""
        if self.token_state == "u":
            return "reserved"
        if self.token_state == "a" and now_ms < self.token_expiry_ms:
            # An admitted ticket keeps its token even once the room sold out: units
            # may come back (a lapsed hold) within its life.
            return "admitted" if self.state != "sold_out" else "sold_out"
        if self.token_state in ("a", "x"):
            return "expired"
        return "sold_out" if self.state == "sold_out" else "waiting"

    def ahead(self) -> int:
        """Tickets ahead of this one still to be admitted (0 once drawn and reached,
        or before the draw: unknown)."""
        return max(0, self.position - 1 - self.admitted) if self.position else 0


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """A release's fields (one HGET of its hash's fields): what its watcher shares."""

    release_id: str
    state: str
    t0_ms: int
    opens_ms: int
    seed_hash: str
    seed: str
    schedules: tuple[str, ...]
    joined: int
    late: int
    drawn: int
    admitted: int
    outstanding: int
    used: int
    lapsed: int
    drawn_ms: int
    sold_out_ms: int
    factor_pm: int
    token_ms: int
    slots: tuple[str, ...]
    hospital_id: str


@dataclass(frozen=True, slots=True)
class Advance:
    """What one room_advance step did."""

    state: str
    drawn: int
    lapsed: int
    admitted: int
    takeable: int


_SNAPSHOT_FIELDS: Final = (
    "state",
    "t0_ms",
    "opens_ms",
    "seed_hash",
    "seed",
    "schedules",
    "joined",
    "late",
    "drawn",
    "admitted",
    "outstanding",
    "used",
    "lapsed",
    "drawn_ms",
    "sold_out_ms",
    "factor_pm",
    "token_ms",
    "slots",
    "hospital",
)


def _int(value: Any) -> int:
    return int(_text(value)) if value not in (None, b"", "") else 0


class RoomStore:
    """The room scripts over one :class:`SlotStore` (its client, scripts and clock)."""

    def __init__(self, store: SlotStore) -> None:
        self.store = store

    def _keys(self, tag: str) -> list[str]:
        return [*keys.tag_keys(tag).as_list(), *keys.room_keys(tag).as_list()]

    async def open(
        self,
        release_id: str,
        schedule_ids: list[str],
        *,
        hospital_id: str,
        t0_ms: int,
        window_ms: int,
        factor: float,
        token_ms: int,
        request_id: str = "",
    ) -> tuple[str, bool]:
        """Open a release's room: (the seed's published hash, whether it is new)."""
        tag = keys.tag_of_release(release_id)
        seed = draw.new_seed()
        args: list[Any] = [
            self.store.script_now(),
            release_id,
            t0_ms,
            t0_ms - window_ms,
            seed,
            draw.seed_hash(seed),
            round(factor * 1000),
            token_ms,
            request_id,
            keys.check_id(hospital_id, "hospital_id"),
            *(keys.check_id(s, "schedule_id") for s in schedule_ids),
        ]
        reply = await self.store.call_script("room_open", self._keys(tag), args)
        code = int(reply[0])
        if code not in (LUA_OK, LUA_REPLAY):
            raise refusal_for(code, reason=_text(reply[2]))
        # The worker's ticker moves every registered room (the API's watchers only
        # those their clients follow).
        await guarded(self.store.client.sadd(keys.RELEASE_REGISTRY_KEY, release_id))
        # The tag's rooms go once the visit day is over (its tickets' keys get the same
        # expiry from the first join).
        rooms_key = keys.room_keys(tag).rooms
        await guarded(self.store.client.pexpireat(rooms_key, room_keys_expire_ms(release_id)))
        return _text(reply[1]), code == LUA_OK

    async def join(
        self, release_id: str, *, account_id: str, patient_id: str, request_id: str = ""
    ) -> tuple[str, bool]:
        """Join a release's room: (the ticket, whether this call made it)."""
        tag = keys.tag_of_release(release_id)
        ticket = keys.b32_120(secrets.token_bytes(15))
        args = [
            self.store.script_now(),
            release_id,
            ticket,
            keys.check_id(account_id, "account_id"),
            keys.check_id(patient_id, "patient_id"),
            request_id,
            room_keys_expire_ms(release_id),
        ]
        reply = await self.store.call_script("room_join", self._keys(tag), args)
        code = int(reply[0])
        if code not in (LUA_OK, LUA_REPLAY):
            extra = _text(reply[2])
            context: dict[str, Any] = {}
            if extra.isdigit():
                context["opens_ms"] = int(extra)
            elif extra:
                context["waitlist"] = {"available": True, "schedule_ids": extra.split()}
            raise refusal_for(code, **context)
        return _text(reply[1]), code == LUA_OK

    async def advance(
        self, release_id: str, *, limit: int = ADVANCE_LIMIT, admit_limit: int = ADMIT_LIMIT
    ) -> Advance:
        """Move the room forward to now (draw, lapse, admit, sell out), one bounded step."""
        tag = keys.tag_of_release(release_id)
        args = [
            self.store.script_now(),
            release_id,
            secrets.token_hex(16),
            limit,
            "",
            min(limit, admit_limit),
            ADMIT_WINDOW_MS,
        ]
        reply = await self.store.call_script("room_advance", self._keys(tag), args)
        code = int(reply[0])
        if code != LUA_OK:
            raise refusal_for(code)
        step = Advance(_text(reply[1]), *(int(v) for v in reply[2:6]))
        metrics.observe_room_step(step.admitted, step.lapsed)
        return step

    async def active(self) -> list[str]:
        """The registered releases not known to be sold out."""
        members = await guarded(self.store.client.smembers(keys.RELEASE_REGISTRY_KEY))
        return sorted(_text(m) for m in members)

    async def retire(self, release_id: str) -> bool:
        """Leave the registry (a sold-out or vanished release); True for the one call
        that removed it."""
        return bool(await guarded(self.store.client.srem(keys.RELEASE_REGISTRY_KEY, release_id)))

    async def status(self, release_id: str, ticket_id: str, *, account_id: str) -> TicketStatus:
        """One ticket's status (one read-only script call)."""
        tag = keys.tag_of_release(release_id)
        reply = await self.store.call_script(
            "room_status", keys.room_keys(tag).as_list(), [release_id, ticket_id, account_id]
        )
        code = int(reply[0])
        if code != LUA_OK:
            raise refusal_for(code)
        return TicketStatus(
            release_id,
            ticket_id,
            _text(reply[12]),
            _text(reply[1]),
            int(reply[2]),
            int(reply[3]),
            _text(reply[4]),
            int(reply[5]),
            _text(reply[6]),
            int(reply[7]),
            int(reply[8]),
            int(reply[9]),
            int(reply[10]),
            int(reply[11]),
            int(reply[13]) if len(reply) > 13 else 0,
        )

    async def snapshot(self, release_id: str) -> RoomSnapshot | None:
        """The release's fields, or None when there is no such release."""
        tag = keys.tag_of_release(release_id)
        names = [f"{release_id}:{name}" for name in _SNAPSHOT_FIELDS]
        values = await guarded(self.store.client.hmget(keys.room_keys(tag).rooms, names))
        if values[0] is None:
            return None
        v = dict(zip(_SNAPSHOT_FIELDS, values, strict=True))
        return RoomSnapshot(
            release_id=release_id,
            state=_text(v["state"]),
            t0_ms=_int(v["t0_ms"]),
            opens_ms=_int(v["opens_ms"]),
            seed_hash=_text(v["seed_hash"] or ""),
            seed=_text(v["seed"] or ""),
            schedules=tuple(_text(v["schedules"] or "").split()),
            joined=_int(v["joined"]),
            late=_int(v["late"]),
            drawn=_int(v["drawn"]),
            admitted=_int(v["admitted"]),
            outstanding=_int(v["outstanding"]),
            used=_int(v["used"]),
            lapsed=_int(v["lapsed"]),
            drawn_ms=_int(v["drawn_ms"]),
            sold_out_ms=_int(v["sold_out_ms"]),
            factor_pm=_int(v["factor_pm"]),
            token_ms=_int(v["token_ms"]),
            slots=tuple(_text(v["slots"] or "").split()),
            hospital_id=_text(v["hospital"] or ""),
        )

    async def drawn_order(self, release_id: str, *, chunk: int = 5_000) -> list[str]:
        """The drawn tickets in queue order (position 1 first), read in chunks of
        ``chunk`` so Redis is never held long: a watcher's one read after the draw,
        from which it places every ticket it serves."""
        tag = keys.tag_of_release(release_id)
        queue = keys.room_keys(tag).queue
        prefix = f"{release_id}|d|"
        low, high = f"[{prefix}", f"({release_id}|e"
        order: list[str] = []
        while True:
            members = await guarded(
                self.store.client.zrangebylex(queue, low, high, start=0, num=chunk)
            )
            order.extend(_text(m).rsplit("|", 1)[1] for m in members)
            if len(members) < chunk:
                return order
            low = f"({_text(members[-1])}"

    async def tickets(self, release_id: str) -> list[tuple[str, int, int]]:
        """Every ticket of the release as (ticket, joined_ms, late seq; 0 = before T0),
        for the fairness report (an HSCAN of the tag's tickets)."""
        tag = keys.tag_of_release(release_id)
        found: list[tuple[str, int, int]] = []
        try:
            async for name, raw in self.store.client.hscan_iter(
                keys.room_keys(tag).tickets, count=1_000
            ):
                text = _text(raw)
                if not text.startswith("{"):
                    continue  # an index entry
                rec = orjson.loads(text)
                if rec.get("r") == release_id:
                    found.append((_text(name), int(rec["j"]), int(rec["l"])))
        except DRIVER_ERRORS as error:
            raise store_error(error) from error
        return found
