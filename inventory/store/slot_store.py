"""SlotStore: the inventory's state machine, one Lua script per step, typed in Python.

Each public coroutine runs one atomic step in Redis (two for reserves under rules
that span tags, see :meth:`SlotStore.reserve`) and returns typed results or raises a
typed :class:`~inventory.errors.InventoryError`. Nothing here changes a count except
through a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, TypeVar, cast
from zoneinfo import ZoneInfo

import orjson
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.typing import EncodableT, ZSetScoredMembers

from inventory.domain import (
    OPEN_STATES,
    Hold,
    HoldOutcome,
    HoldState,
    HospitalPolicy,
    ReserveRequest,
    ScheduleSpec,
    SlotCounts,
    SlotLocation,
)
from inventory.errors import (
    LUA_OK,
    LUA_REPLAY,
    AdmissionRequiredError,
    CancelDeadlinePassedError,
    HoldNotActiveError,
    InventoryError,
    NotReleasedError,
    PatientRuleError,
    PatientWeeklyLimitError,
    RateLimitedError,
    RescheduleFeeHigherError,
    RescheduleInProgressError,
    RescheduleLimitError,
    StoreUnavailableError,
    WaitlistOfferUnsettledError,
    refusal_for,
)
from inventory.store import keys
from inventory.store.autopipeline import AutoPipeline, pipelined_scripts
from inventory.store.connection import RedisClient
from inventory.store.scripts import Scripts, server_supports_shebang

T = TypeVar("T")

#: ``now_ms`` passed to scripts: 0 means "judge by the Redis server's TIME".
SERVER_TIME = 0
#: Steps refused while the write gate is closed (everything a client or operator asks;
#: the worker's own expire, fence and rebuild run ungated).
GATED_SCRIPTS = frozenset(
    {
        "reserve",
        "confirm",
        "release",
        "extend",
        "load_schedule",
        "adjust_capacity",
        "suspend",
        "reopen",
        "patient_acquire",
        "reschedule",
        "reschedule_take",
        "reschedule_mark",
        "waitlist_join",
        "waitlist_leave",
    }
)
#: True while a gated script call runs: a connection opened for it to a Cluster node the
#: fence has not verified refuses it (see inventory/recovery/fence.py, StoreVerification).
GATED_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("gated_call", default=False)
#: Clock margin between two Redis servers when reaping pending patient tokens.
TOKEN_CLOCK_MARGIN_MS = 2_000


@dataclass(frozen=True)
class PolicyBook:
    """Each hospital's policy, with a default for hospitals not listed."""

    default: HospitalPolicy = field(default_factory=HospitalPolicy)
    by_hospital: Mapping[str, HospitalPolicy] = field(default_factory=dict)

    def for_hospital(self, hospital_id: str) -> HospitalPolicy:
        """The policy that applies to ``hospital_id``."""
        return self.by_hospital.get(hospital_id, self.default)


@dataclass(frozen=True, slots=True)
class ExpireResult:
    """What one expirer sweep did."""

    tags: int
    changed: int
    still_due: int


@dataclass(frozen=True, slots=True)
class RateBuckets:
    """Rate-limit buckets (GCRA, lua/includes/gcra.lua) a request is counted against,
    all or nothing: each bucket's key, and its interval (ms) and burst as script
    arguments. :meth:`SlotStore.reserve` checks them in the same script call as the
    reserve itself when it can (one Redis round trip instead of two)."""

    keys: tuple[str, ...]
    #: interval_ms and burst of each bucket, in the order of ``keys``.
    args: tuple[float, ...]
    #: Told the (1-based) buckets that could not be counted because their node was out
    #: of reach, on Cluster, where the request then goes on without them (fail-open).
    unavailable: Callable[[Sequence[int]], None] | None = field(default=None, compare=False)


#: What the ``extra`` element of a hold step's refusal means, by return code.
_EXTRA_NAMES = {
    NotReleasedError.lua_code: "release_ms",
    PatientRuleError.lua_code: "rule",
    PatientWeeklyLimitError.lua_code: "rule",
    CancelDeadlinePassedError.lua_code: "deadline_ms",
    HoldNotActiveError.lua_code: "state",
    AdmissionRequiredError.lua_code: "release_id",
    RescheduleLimitError.lua_code: "limit",
    RescheduleFeeHigherError.lua_code: "fee_fen",
    RescheduleInProgressError.lua_code: "moving_until_ms",
}


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("instants given to the store must be timezone-aware")
    return int(moment.timestamp() * 1000)


def fingerprint(slot_id: str, patient_id: str, channel: str) -> str:
    """What an idempotency key was used for: same key + same fingerprint = a retry."""
    material = f"{slot_id}\x00{patient_id}\x00{channel}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: A slot's counts by their wire names: the fields ``{slot}:cap``, ``{slot}:rem``, ...
#: of a tag's slots hash, the keys of the outbox events' payloads (which the Postgres
#: projection reads) and the scripts' own names. Stored hashes and events keep them;
#: Python says capacity, remaining, held, booked, waiting, and this module is the one
#: place that translates between the two.
WIRE_COUNT_NAMES: Final = {
    "capacity": "cap",
    "remaining": "rem",
    "held": "held",
    "booked": "booked",
    "waiting": "wait",
}
_COUNT_OF_WIRE_NAME: Final = {wire: name for name, wire in WIRE_COUNT_NAMES.items()}


def _counts(reply: Sequence[Any], start: int) -> SlotCounts:
    # The scripts answer rem, held, booked, wait, cap (lua/reserve.lua's header).
    remaining, held, booked, waiting, capacity = (int(v) for v in reply[start : start + 5])
    return SlotCounts(
        capacity=capacity, remaining=remaining, held=held, booked=booked, waiting=waiting
    )


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0  # not a count: the slot then fails SlotCounts.conserved


def counts_of_slots_hash(raw: Mapping[Any, Any]) -> dict[str, SlotCounts]:
    """Every slot's counts in a tag's slots hash as ``HGETALL`` answers it (a count
    missing from the hash reads 0); the hash's other fields are left out."""
    found: dict[str, dict[str, int]] = {}
    for field_name, value in raw.items():
        slot_id, _, wire = _text(field_name).rpartition(":")
        name = _COUNT_OF_WIRE_NAME.get(wire)
        if name is not None:
            found.setdefault(slot_id, dict.fromkeys(WIRE_COUNT_NAMES, 0))[name] = _count(value)
    return {slot_id: SlotCounts(**counts) for slot_id, counts in found.items()}


class SlotStore:
    """The async store API over Redis (standalone or Cluster).

    Build it with :meth:`connect_scripts`; ``clock`` (epoch ms) replaces the Redis
    server's TIME as the judge of deadlines, for tests that move time.
    """

    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        *,
        policies: PolicyBook | None = None,
        clock: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        reclaim_limit: int = 64,
        expire_batch: int = 200,
        write_gate: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.policies = policies or PolicyBook()
        self._clock = clock
        self._rng = rng or random.Random()
        self.reclaim_limit = reclaim_limit
        self.expire_batch = expire_batch
        #: Raises while state changes on the node holding the given key must be
        #: refused (the API's verified-store gate).
        self.write_gate = write_gate
        #: Rate-limit buckets ride in the reserve call itself on a single server; on
        #: Cluster they live under other hash tags than the tag's keys.
        self.folds_rate_limits = not isinstance(client, RedisCluster)

    @classmethod
    async def connect_scripts(
        cls,
        client: RedisClient,
        *,
        pipeline: AutoPipeline | None = None,
        reconnect_gate: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> SlotStore:
        """Register the scripts (with ``#!lua`` on Redis 7+) and build a store.

        Script calls go through ``pipeline`` when given (one auto-pipelined connection;
        the steps in :data:`GATED_SCRIPTS` check ``reconnect_gate`` again after it
        reconnects), else through ``client``, which serves every other command."""
        shebang = server_supports_shebang(await _redis_version(client))
        if pipeline is None:
            scripts = Scripts.register(client, shebang=shebang)
        else:
            scripts = pipelined_scripts(
                pipeline, shebang=shebang, gate=reconnect_gate, gated=GATED_SCRIPTS
            )
        return cls(client, scripts, **kwargs)

    # -- plumbing ---------------------------------------------------------------------

    def script_now(self) -> int:
        """A script call's ``now_ms`` argument: the test clock's now, else 0 (the
        script reads Redis TIME)."""
        return self._clock() if self._clock is not None else SERVER_TIME

    def _seed(self) -> int:
        return self._rng.randrange(1, 2**31 - 1)

    async def _call(self, name: str, keys_: list[str], args: list[Any]) -> list[Any]:
        # Driver errors are wrapped here as _guard wraps them, without _guard's own
        # coroutine frame: every reserve's task resumes through each frame of its chain
        # when Redis answers (docs/benchmarks.md).
        script = self.scripts[name]
        if self.write_gate is None or name not in GATED_SCRIPTS:
            try:
                reply: list[Any] = await script(keys=keys_, args=args)
            except _DRIVER_ERRORS as error:
                raise store_error(error) from error
            return reply
        self.write_gate(keys_[0])
        token = GATED_CALL.set(True)
        try:
            gated: list[Any] = await script(keys=keys_, args=args)
        except _DRIVER_ERRORS as error:
            raise store_error(error) from error
        finally:
            GATED_CALL.reset(token)
        return gated

    async def call_script(self, name: str, keys_: list[str], args: list[Any]) -> list[Any]:
        """Run one registered script (for scripts outside the state machine, such as
        rate_limit), with driver errors wrapped like every store call."""
        return await self._call(name, keys_, args)

    async def now_ms(self) -> int:
        """The clock deadlines are judged by: the test clock, else Redis TIME."""
        if self._clock is not None:
            return self._clock()
        seconds, micros = await _guard(self.client.time())
        return int(seconds) * 1000 + int(micros) // 1000

    async def take_rate_limits(self, buckets: RateBuckets) -> None:
        """Count one request in every bucket, or in none: :class:`RateLimitedError`
        (with the refusing buckets) when any is over its limit (lua/rate_limit.lua).

        On Cluster each bucket has its own hash tag, so each gets its own call (sent
        together) and counts on its own there; a bucket whose node is out of reach is
        skipped (fail-open, reported to ``buckets.unavailable``): a rate limit must not
        stop reserves for tags on live masters because an account's or an address's
        bucket hashed to a dead one (docs/durability.md, "Redis Cluster")."""
        if self.folds_rate_limits:
            retry_ms, refused = await self._rate_limit_call(buckets.keys, buckets.args)
        else:
            replies = await asyncio.gather(
                *(
                    self._rate_limit_call((key,), buckets.args[2 * i : 2 * i + 2])
                    for i, key in enumerate(buckets.keys)
                ),
                return_exceptions=True,
            )
            counted: list[tuple[int, list[int]]] = []
            unavailable: list[int] = []
            for index, reply in enumerate(replies, start=1):
                if isinstance(reply, BaseException):
                    if not (isinstance(reply, Exception) and node_unreachable(reply)):
                        raise reply
                    unavailable.append(index)
                else:
                    counted.append((reply[0], [index] if reply[1] else []))
            if unavailable and buckets.unavailable is not None:
                buckets.unavailable(unavailable)
            retry_ms = max((ms for ms, _ in counted), default=0)
            refused = [i for _, no in counted for i in no]
        if refused:
            raise RateLimitedError.after_ms(retry_ms, refused)

    async def _rate_limit_call(
        self, bucket_keys: Sequence[str], bucket_args: Sequence[float]
    ) -> tuple[int, list[int]]:
        """One rate_limit call: (ms to wait, refusing buckets), ``(0, [])`` if counted."""
        reply = await self._call("rate_limit", list(bucket_keys), [self.script_now(), *bucket_args])
        code = int(reply[0])
        if code == LUA_OK:
            return 0, []
        if code == RateLimitedError.lua_code:
            return int(reply[1]), [int(i) for i in reply[2:]]
        # invalid_argument, as the same buckets passed to reserve get
        raise refusal_for(code, detail=f"rate_limit refused its arguments ({code})")

    def _hold_outcome(self, reply: Sequence[Any], **context: Any) -> HoldOutcome:
        code = int(reply[0])
        if code == RateLimitedError.lua_code:
            retry_ms, *buckets = (int(part) for part in _text(reply[8]).split())
            raise RateLimitedError.after_ms(retry_ms, buckets)
        record = _text(reply[2])
        hold = Hold.from_record(orjson.loads(record)) if record else None
        if code in (LUA_OK, LUA_REPLAY) and hold is not None:
            event_id = _text(reply[1]) or None
            return HoldOutcome(hold, _counts(reply, 3), event_id, replayed=code == LUA_REPLAY)
        extra = _text(reply[8])
        error = refusal_for(code, **context)
        if hold is not None:
            error.context["hold"] = hold
        if extra:
            error.context[_EXTRA_NAMES.get(code, "detail")] = (
                int(extra) if extra.isdigit() else extra
            )
        raise error

    # -- set-up steps -----------------------------------------------------------------

    async def load_schedule(
        self, spec: ScheduleSpec, policy: HospitalPolicy | None = None, *, postgres_seq: int = 0
    ) -> str:
        """Create or update a schedule and its slots' capacities; returns the event id.

        ``postgres_seq`` is the highest seq Postgres recorded for the tag: a tag whose
        Redis history is behind it (lost with a node's data) is fenced and the load
        refused with ``store_fenced``, never started again from zero counts."""
        policy = policy or self.policies.for_hospital(spec.hospital_id)
        tag = keys.department_day_tag(spec.department_id, spec.visit_date)
        args: list[Any] = [
            self.script_now(),
            tag,
            keys.check_id(spec.schedule_id, "schedule_id"),
            _ms(spec.release_at),
            _ms(spec.starts_at),
            _ms(spec.ends_at),
            _ms(spec.cancel_deadline),
            spec.fee_fen,
            policy.hold_ttl_s * 1000,
            policy.max_hold_s * 1000,
            policy.extend_s * 1000,
            int(policy.one_per_day),
            policy.rerelease_min_s * 1000,
            policy.rerelease_max_s * 1000,
            keys.check_id(spec.hospital_id, "hospital_id"),
            spec.department_id,
            spec.visit_date.isoformat(),
            postgres_seq,
            len(spec.slots),
        ]
        for slot in spec.slots:
            args += [keys.check_id(slot.slot_id, "slot_id"), slot.capacity]
        args += [policy.waitlist_offer_s * 1000, int(policy.spans_tags)]
        reply = await self._call("load_schedule", keys.tag_keys(tag).as_list(), args)
        if int(reply[0]) != LUA_OK:
            raise refusal_for(int(reply[0]), detail=_text(reply[2]))
        await _guard(self.client.sadd(keys.TAG_REGISTRY_KEY, tag))
        if spec.slots:
            await self.copy_slot_locations(
                [slot.slot_id for slot in spec.slots],
                SlotLocation(
                    spec.hospital_id, spec.department_id, spec.visit_date, spec.schedule_id
                ),
            )
        return _text(reply[1])

    async def copy_slot_locations(self, slot_ids: list[str], location: SlotLocation) -> None:
        """Record where these slots live (read by :meth:`slot_location`)."""
        await self.copy_slot_location_map(dict.fromkeys(slot_ids, location))

    async def copy_slot_location_map(self, locations: Mapping[str, SlotLocation]) -> None:
        """Record where each of these slots lives, in one call."""
        mapping: dict[EncodableT, EncodableT] = {
            slot_id: "|".join(
                (loc.hospital_id, loc.department_id, loc.visit_date.isoformat(), loc.schedule_id)
            )
            for slot_id, loc in locations.items()
        }
        if mapping:
            await _guard(self.client.hset(keys.SLOT_LOCATIONS_KEY, mapping=mapping))

    async def schedule_times(self, tag: str, schedule_id: str) -> tuple[int, int] | None:
        """A loaded schedule's (session start, cancellation deadline) in ms, as its tag
        holds them (None: not loaded in this tag)."""
        start, deadline = await _guard(
            self.client.hmget(
                keys.tag_keys(tag).schedules,
                [f"{schedule_id}:start_ms", f"{schedule_id}:cancel_deadline_ms"],
            )
        )
        if start is None or deadline is None:
            return None
        return int(start), int(deadline)

    async def slot_location(self, slot_id: str) -> SlotLocation | None:
        """Where a slot lives, as its schedule's last load recorded it (None: not
        recorded, e.g. loaded before this record existed: ask Postgres)."""
        value = await _guard(self.client.hget(keys.SLOT_LOCATIONS_KEY, slot_id))
        if not value:
            return None
        hospital_id, department_id, visit_date, schedule_id = _text(value).split("|")
        return SlotLocation(hospital_id, department_id, date.fromisoformat(visit_date), schedule_id)

    async def adjust_capacity(self, tag: str, slot_id: str, delta: int) -> SlotCounts:
        """Add (加号) or remove free units of a slot."""
        args = [self.script_now(), keys.check_id(slot_id, "slot_id"), delta]
        reply = await self._call("adjust_capacity", keys.tag_keys(tag).as_list(), args)
        if int(reply[0]) != LUA_OK:
            raise refusal_for(int(reply[0]))
        return _counts(reply, 2)

    async def suspend(self, tag: str, schedule_id: str, reason: str) -> bool:
        """Suspend a schedule (停诊); False if it already was."""
        return await self._set_status("suspend", tag, schedule_id, reason)

    async def reopen(self, tag: str, schedule_id: str, reason: str) -> bool:
        """Reopen a suspended schedule; False if it was open."""
        return await self._set_status("reopen", tag, schedule_id, reason)

    async def _set_status(self, script: str, tag: str, schedule_id: str, reason: str) -> bool:
        args = [self.script_now(), keys.check_id(schedule_id, "schedule_id"), reason]
        reply = await self._call(script, keys.tag_keys(tag).as_list(), args)
        code = int(reply[0])
        if code not in (LUA_OK, LUA_REPLAY):
            raise refusal_for(code)
        return code == LUA_OK

    # -- the patient's steps ----------------------------------------------------------

    async def reserve(
        self,
        request: ReserveRequest,
        *,
        request_id: str = "",
        rate_limits: RateBuckets | None = None,
    ) -> HoldOutcome:
        """Take one unit of a slot as a hold with a payment deadline.

        Under rules that span tags (at most N open per patient, at most M within 7
        days, the blacklist) this is
        the two-step reservation: a pending token on the patient's tag, then the hold
        in the slot's tag, then the token is settled, or released when the hold was
        refused. If this process dies between the steps, the pending token is reaped
        once its window is over (see lua/includes/patient.lua).

        ``rate_limits`` are counted first, all or nothing (:class:`RateLimitedError`
        and nothing else done when one is over): on a single Redis server inside the
        reserve script itself; on Cluster (other hash tags) and before a two-step
        reservation's token, by their own script call first.
        """
        keys.check_id(request.account_id, "account_id")
        keys.check_id(request.slot_id, "slot_id")
        policy = self.policies.for_hospital(request.hospital_id)
        tag = keys.department_day_tag(request.department_id, request.visit_date)
        hold_id = keys.hold_id_for(request.account_id, request.idempotency_key, tag)
        token_deadline = 0
        fresh_token = False
        folded: RateBuckets | None = None
        if rate_limits is not None:
            if self.folds_rate_limits and not policy.spans_tags:
                folded = rate_limits
            else:
                await self.take_rate_limits(rate_limits)
        if policy.spans_tags:
            token_deadline, fresh_token = await self._acquire_patient_token(
                request, hold_id, policy
            )
        args = [
            self.script_now(),
            self._seed(),
            hold_id,
            request.slot_id,
            request.account_id,
            keys.check_id(request.patient_id, "patient_id"),
            request.channel,
            fingerprint(request.slot_id, request.patient_id, request.channel),
            token_deadline,
            self.reclaim_limit,
            request_id,
        ]
        tag_keys = keys.tag_keys(tag).as_list()
        if request.admission_token:
            # The reserve's other layout: the rooms hash after the tag's keys, the token
            # after the fixed arguments (lua/reserve.lua).
            tag_keys.append(keys.room_keys(tag).rooms)
            args.append(request.admission_token)
        if folded is not None:
            tag_keys = [*tag_keys, *folded.keys]
            args += folded.args
        reply = await self._call("reserve", tag_keys, args)
        try:
            outcome = self._hold_outcome(reply)
        except InventoryError:
            if fresh_token:
                await self._release_tokens(request.patient_id, [hold_id])
            raise
        if policy.spans_tags:
            if outcome.hold.state in OPEN_STATES:
                await self._settle_token(request.patient_id, hold_id)
            elif fresh_token:
                # A retry that replayed a hold which has since ended: it holds nothing,
                # so neither may its token.
                await self._release_tokens(request.patient_id, [hold_id], best_effort=True)
        return outcome

    async def confirm(
        self, hold_id: str, *, account_id: str, payment_ref: str, request_id: str = ""
    ) -> HoldOutcome:
        """Turn a paid hold into a booking; ``account_id=""`` for trusted system callers.
        ``request_id`` (here and in reserve and release) is stamped on the events."""
        tag = keys.tag_of_hold(hold_id)
        args = [self.script_now(), self._seed(), hold_id, account_id, payment_ref, request_id]
        tag_keys = keys.tag_keys(tag).as_list()
        try:
            return self._hold_outcome(await self._call("confirm", tag_keys, args))
        except WaitlistOfferUnsettledError:
            # A waitlist offer paid before the worker checked its patient's rules: check
            # them now, then confirm again (a refused offer has been released meanwhile,
            # so the second answer says so).
            await self.settle_offer(hold_id)
        return self._hold_outcome(await self._call("confirm", tag_keys, args))

    async def release(
        self,
        hold_id: str,
        *,
        account_id: str,
        reason: str,
        force: bool = False,
        request_id: str = "",
    ) -> HoldOutcome:
        """Give a hold back, or cancel a booking (until the cancellation deadline,
        unless ``force``: HIS refusal, suspension)."""
        tag = keys.tag_of_hold(hold_id)
        args = [
            self.script_now(),
            self._seed(),
            hold_id,
            account_id,
            reason,
            "1" if force else "0",
            request_id,
        ]
        outcome = self._hold_outcome(
            await self._call("release", keys.tag_keys(tag).as_list(), args)
        )
        if not outcome.replayed:
            await self._release_tokens(outcome.hold.patient_id, [hold_id], best_effort=True)
        return outcome

    async def extend(self, hold_id: str, *, account_id: str) -> HoldOutcome:
        """Extend a hold once, when payment starts, within its maximum lifetime."""
        tag = keys.tag_of_hold(hold_id)
        args = [self.script_now(), self._seed(), hold_id, account_id]
        return self._hold_outcome(await self._call("extend", keys.tag_keys(tag).as_list(), args))

    # -- rescheduling (改约) ------------------------------------------------------------

    async def reschedule_in_tag(
        self,
        old_id: str,
        new_id: str,
        *,
        account_id: str,
        slot_id: str,
        max_moves: int,
        max_amount: int = -1,
        force: bool = False,
        request_id: str = "",
    ) -> HoldOutcome:
        """Move a booking to another slot of its own tag in one step (lua/reschedule.lua):
        the new booking; the old one is cancelled with reason ``rescheduled``.
        ``max_amount``: the highest fee the old payment covers (-1: any)."""
        tag = keys.tag_of_hold(old_id)
        if keys.tag_of_hold(new_id) != tag:
            raise ValueError("reschedule_in_tag moves a booking within its tag")
        args = [
            self.script_now(),
            self._seed(),
            old_id,
            new_id,
            account_id,
            keys.check_id(slot_id, "slot_id"),
            max_moves,
            max_amount,
            "1" if force else "0",
            self.reclaim_limit,
            request_id,
        ]
        return self._hold_outcome(
            await self._call("reschedule", keys.tag_keys(tag).as_list(), args)
        )

    async def mark_move(
        self,
        mode: str,
        old_id: str,
        new_id: str,
        *,
        account_id: str = "",
        until_ms: int = 0,
        max_moves: int = 0,
        force: bool = False,
        request_id: str = "",
    ) -> HoldOutcome:
        """The old booking's side of a move across tags (lua/reschedule_mark.lua):
        ``begin`` (mark it moving until ``until_ms``), ``finish`` (cancel it for the new
        booking), ``abort`` (drop the mark; ``until_ms`` is then the clock margin past
        the mark's end, -1 for at once)."""
        tag = keys.tag_of_hold(old_id)
        args = [
            self.script_now(),
            self._seed(),
            mode,
            old_id,
            new_id,
            account_id,
            until_ms,
            max_moves,
            "1" if force else "0",
            request_id,
        ]
        return self._hold_outcome(
            await self._call("reschedule_mark", keys.tag_keys(tag).as_list(), args)
        )

    async def take_move(
        self,
        new_id: str,
        old: Hold,
        *,
        slot_id: str,
        until_ms: int,
        token_deadline_ms: int = 0,
        max_amount: int = -1,
        request_id: str = "",
        hold_until_ms: int = 0,
    ) -> HoldOutcome:
        """Step two of a move across tags (lua/reschedule_take.lua): the new booking,
        in its own tag, with ``old``'s account, patient and payment. ``hold_until_ms`` > 0
        (a charged move to a dearer target): the new unit is a hold until then instead,
        booked by :meth:`confirm` once the fee difference is paid."""
        tag = keys.tag_of_hold(new_id)
        args = [
            self.script_now(),
            self._seed(),
            new_id,
            old.hold_id,
            old.account_id,
            old.patient_id,
            old.channel,
            old.payment_ref,
            old.moves,
            keys.check_id(slot_id, "slot_id"),
            max_amount,
            until_ms,
            token_deadline_ms,
            self.reclaim_limit,
            request_id,
            hold_until_ms,
        ]
        return self._hold_outcome(
            await self._call("reschedule_take", keys.tag_keys(tag).as_list(), args)
        )

    async def release_patient_tokens(self, patient_id: str, hold_ids: list[str]) -> None:
        """Drop the patient's tokens of these holds (best effort: a token left behind
        only makes the rules stricter until it is reaped)."""
        await self._release_tokens(patient_id, hold_ids, best_effort=True)

    # -- the expirer ------------------------------------------------------------------

    async def expire_tag(self, tag: str, *, max_calls: int = 10) -> tuple[int, int]:
        """Sweep due timers of one tag in bounded batches: (changed, still due)."""
        changed = still_due = 0
        for _ in range(max_calls):
            args = [self.script_now(), self._seed(), self.expire_batch]
            reply = await self._call("expire", keys.tag_keys(tag).as_list(), args)
            if int(reply[0]) != LUA_OK:
                raise refusal_for(int(reply[0]))
            changed += int(reply[1])
            still_due = int(reply[2])
            if still_due == 0:
                break
        return changed, still_due

    async def expire_all(self, *, max_calls_per_tag: int = 10) -> ExpireResult:
        """One sweep over every registered tag (fenced tags are skipped)."""
        tags = sorted(_text(t) for t in await _guard(self.client.smembers(keys.TAG_REGISTRY_KEY)))
        changed = still_due = 0
        for tag in tags:
            try:
                tag_changed, tag_due = await self.expire_tag(tag, max_calls=max_calls_per_tag)
            except InventoryError as error:
                if error.code != "store_fenced":
                    raise
                continue
            changed += tag_changed
            still_due += tag_due
        return ExpireResult(tags=len(tags), changed=changed, still_due=still_due)

    # -- fencing and rebuild ----------------------------------------------------------

    async def fence_if_behind(self, tag: str, postgres_seq: int) -> tuple[bool, int]:
        """Fence ``tag`` if Redis's sequence is below Postgres's; (fenced, redis seq)."""
        reply = await self._call("fence", keys.tag_keys(tag).as_list(), [postgres_seq, tag])
        if int(reply[0]) != LUA_OK:
            raise refusal_for(int(reply[0]))
        return int(reply[2]) == 1, int(reply[1])

    async def replace_tag(
        self,
        tag: str,
        *,
        seq: int,
        meta: Mapping[str, Any],
        schedules: Sequence[Mapping[str, Any]],
        slots: Sequence[Mapping[str, Any]],
        holds: Sequence[Mapping[str, Any]],
        waitlist: Sequence[Mapping[str, Any]] = (),
        waitlist_seq: int = 0,
    ) -> int:
        """Replace a tag's state with what Postgres recorded and lift its fence;
        returns the units free afterwards (see lua/rebuild.lua). Each of ``slots`` is
        ``{"id", "schedule", "capacity"}``; ``waitlist`` the live entries as the
        scripts keep them."""
        wire_slots = [
            {"id": s["id"], "schedule": s["schedule"], WIRE_COUNT_NAMES["capacity"]: s["capacity"]}
            for s in slots
        ]
        args = [
            tag,
            seq,
            orjson.dumps(dict(meta)).decode(),
            orjson.dumps(list(schedules)).decode(),
            orjson.dumps(wire_slots).decode(),
            orjson.dumps(list(holds)).decode(),
            orjson.dumps(list(waitlist)).decode(),
            waitlist_seq,
        ]
        reply = await self._call("rebuild", keys.tag_keys(tag).as_list(), args)
        if int(reply[0]) != LUA_OK:
            raise refusal_for(int(reply[0]))
        return int(reply[1])

    # -- reads ------------------------------------------------------------------------

    async def get_hold(self, hold_id: str) -> Hold | None:
        """The hold or booking with this id, or None."""
        tag = keys.tag_of_hold(hold_id)
        raw = await _guard(self.client.hget(keys.tag_keys(tag).holds, hold_id))
        return Hold.from_record(orjson.loads(raw)) if raw else None

    async def hold_exists(self, hold_id: str) -> bool:
        """Whether a hold or booking with this id exists (one HEXISTS, no script)."""
        tag = keys.tag_of_hold(hold_id)
        return bool(await _guard(self.client.hexists(keys.tag_keys(tag).holds, hold_id)))

    async def slot_counts(self, tag: str, slot_ids: Iterable[str]) -> dict[str, SlotCounts]:
        """Counts of several slots of one tag, in one round trip."""
        ids = list(slot_ids)
        fields = [f"{s}:{wire}" for s in ids for wire in WIRE_COUNT_NAMES.values()]
        if not fields:
            return {}
        values = await _guard(self.client.hmget(keys.tag_keys(tag).slots, fields))
        width = len(WIRE_COUNT_NAMES)
        result = {}
        for i, slot_id in enumerate(ids):
            chunk = values[i * width : (i + 1) * width]
            if chunk[0] is None:  # no such slot
                continue
            result[slot_id] = SlotCounts(
                **dict(zip(WIRE_COUNT_NAMES, map(_count, chunk), strict=True))
            )
        return result

    # -- patient tag ------------------------------------------------------------------

    async def ban_patient(
        self, patient_id: str, *, hospital_id: str, until_ms: int, reason: str
    ) -> str:
        """Blacklist a patient at a hospital ("*": all) until ``until_ms``; 0 lifts it."""
        pk = keys.patient_keys(patient_id)
        args = [self.script_now(), patient_id, hospital_id, until_ms, reason]
        reply = await self._call("patient_ban", pk.as_list(), args)
        if int(reply[0]) != LUA_OK:
            raise refusal_for(int(reply[0]))
        return _text(reply[1])

    async def patient_tokens(self, patient_id: str) -> dict[str, float]:
        """The patient's tokens: hold id -> pending deadline (ms) or inf once settled."""
        pairs = await _guard(
            self.client.zrange(keys.patient_keys(patient_id).tokens, 0, -1, withscores=True)
        )
        # WITHSCORES: (member, score) pairs.
        return {_text(member): float(score) for member, score in cast(ZSetScoredMembers, pairs)}

    async def _acquire_patient_token(
        self, request: ReserveRequest, hold_id: str, policy: HospitalPolicy
    ) -> tuple[int, bool]:
        """Step one; returns (token deadline ms or 0, whether a new token was taken)."""
        return await self.acquire_patient_token(
            request.patient_id, hold_id, hospital_id=request.hospital_id, policy=policy
        )

    async def acquire_patient_token(
        self,
        patient_id: str,
        hold_id: str,
        *,
        hospital_id: str,
        policy: HospitalPolicy | None = None,
        replaces: str = "",
    ) -> tuple[int, bool]:
        """Step one of the two-step reservation on the patient's tag for ``hold_id``
        (the blacklist, at most N open, at most M within 7 days): (token deadline ms or
        0 once settled, whether a new token was taken). ``replaces``: the booking the
        hold takes the place of (a reschedule), counted by no rule. A refusal over a
        counting rule reaps the patient's stale tokens and tries once more."""
        policy = policy or self.policies.for_hospital(hospital_id)
        pk = keys.patient_keys(patient_id)
        args = [
            self.script_now(),
            hold_id,
            keys.check_id(hospital_id, "hospital_id"),
            policy.max_open_per_patient,
            policy.token_window_s * 1000,
            "1" if policy.checks_bans else "0",
            policy.max_in_7_days_per_patient,
            replaces,
        ]
        for attempt in range(2):
            reply = await self._call("patient_acquire", pk.as_list(), args)
            code = int(reply[0])
            if code in (LUA_OK, LUA_REPLAY):
                return int(float(reply[1])), code == LUA_OK
            rule = _text(reply[2])
            # Only the counting rules can be lifted by reaping stale tokens.
            if rule not in ("max_open", "max_in_7_days") or attempt == 1:
                context: dict[str, Any] = {"rule": rule}
                if rule == "blacklisted":
                    context["banned_until_ms"] = int(reply[3])
                elif rule == "max_in_7_days":
                    context["limit"] = policy.max_in_7_days_per_patient
                raise refusal_for(code, **context)
            # At the limit: some tokens may be stale (holds ended, or a step one whose
            # process died). Reap them, then try once more.
            await self.reap_patient_tokens(patient_id, [_text(t) for t in reply[4:]])
        raise AssertionError("unreachable")  # pragma: no cover

    async def settle_patient_token(self, patient_id: str, hold_id: str) -> None:
        """Step two: the hold exists, so its token counts for good (until released)."""
        await self._call("patient_settle", keys.patient_keys(patient_id).as_list(), [hold_id])

    async def acquire_patient_item(
        self,
        pk: keys.PatientKeys,
        item_id: str,
        *,
        hospital_id: str,
        max_items: int,
        policy: HospitalPolicy,
        reap: Callable[[list[str]], Awaitable[int]],
    ) -> tuple[int, bool]:
        """Step one of a two-step on the patient's tag (lua/patient_acquire.lua) over
        another zset than the hold tokens (``pk.tokens``: the waitlist's entries): the
        blacklist (when the policy checks it) and at most ``max_items`` of the zset (0:
        no limit), then a pending token for ``item_id``. Returns (the token's pending
        deadline ms or 0, whether a new token was taken); refuses with
        :class:`PatientRuleError` (``rule`` "blacklisted" or "max_open") after reaping
        stale tokens once with ``reap``."""
        args = [
            self.script_now(),
            item_id,
            keys.check_id(hospital_id, "hospital_id"),
            max_items,
            policy.token_window_s * 1000,
            "1" if policy.checks_bans else "0",
        ]
        for attempt in range(2):
            reply = await self._call("patient_acquire", pk.as_list(), args)
            code = int(reply[0])
            if code in (LUA_OK, LUA_REPLAY):
                return int(float(reply[1])), code == LUA_OK
            rule = _text(reply[2])
            if code != PatientRuleError.lua_code or rule != "max_open" or attempt == 1:
                context: dict[str, Any] = {"rule": rule}
                if rule == "blacklisted":
                    context["banned_until_ms"] = int(reply[3])
                raise refusal_for(code, **context)
            await reap([_text(t) for t in reply[4:]])
        raise AssertionError("unreachable")  # pragma: no cover

    async def settle_offer(self, hold_id: str) -> str:
        """The patient side of a waitlist offer (the worker's step, and confirm's when
        an offer is paid before it): under rules on the patient's tag (blacklist, at
        most N open) take and settle the patient's token for the offer's hold, then tell
        its tag (lua/waitlist_settle.lua). A refused offer is released there and its
        unit offered to the next waiting patient. Returns "settled", "refused" or
        "gone" (not an unsettled open offer any more). Safe to repeat after a crash at
        any point: a token taken again is a replay, a settled offer is settled again."""
        tag = keys.tag_of_hold(hold_id)
        verdict = "settled"
        hold = await self.get_hold(hold_id)
        if hold is not None and hold.state is HoldState.HELD:
            hospital = await _guard(self.client.hget(keys.tag_keys(tag).meta, "hospital"))
            policy = self.policies.for_hospital(_text(hospital or ""))
            if policy.spans_tags and hospital:
                try:
                    await self.acquire_patient_token(
                        hold.patient_id, hold_id, hospital_id=_text(hospital), policy=policy
                    )
                except (PatientRuleError, PatientWeeklyLimitError) as refused:
                    verdict = str(refused.context.get("rule") or "patient_rule")
                else:
                    await self._settle_token(hold.patient_id, hold_id)
        args = [self.script_now(), self._seed(), hold_id, verdict]
        reply = await self._call("waitlist_settle", keys.tag_keys(tag).as_list(), args)
        code = int(reply[0])
        if code == LUA_REPLAY:
            return "gone"
        if code != LUA_OK:
            raise refusal_for(code)
        return "settled" if verdict == "settled" else "refused"

    async def unsettled_offers(self, tag: str, limit: int = 100) -> list[str]:
        """The tag's waitlist offers whose patient side is not settled yet, oldest first."""
        found = await _guard(self.client.zrange(keys.tag_keys(tag).offers, 0, limit - 1))
        return [_text(hold_id) for hold_id in found]

    async def reap_patient_tokens(self, patient_id: str, hold_ids: Sequence[str]) -> int:
        """Drop the patient's tokens whose holds have ended or never happened."""
        now = await self.now_ms()
        # Tags are named by the hospital's local visit date (China has one time zone).
        today = datetime.fromtimestamp(now / 1000, tz=ZoneInfo("Asia/Shanghai")).date()
        verdicts: list[str] = []
        for hold_id in hold_ids:
            hold = await self.get_hold(hold_id)
            if hold is None:
                verdict = "missing"
            elif hold.state is HoldState.BOOKED:
                visit_over = keys.visit_date_of_tag(keys.tag_of_hold(hold_id)) < today
                verdict = "ended" if visit_over else "open"
            else:
                verdict = "open" if hold.is_open(now) else "ended"
            verdicts += [hold_id, verdict]
        pk = keys.patient_keys(patient_id)
        reply = await self._call(
            "patient_reap", pk.as_list(), [self.script_now(), TOKEN_CLOCK_MARGIN_MS, *verdicts]
        )
        return int(reply[1])

    async def _settle_token(self, patient_id: str, hold_id: str) -> None:
        # The hold exists; if settling is lost, the reaper settles the pending token
        # when it finds the hold open. Nothing is oversold meanwhile.
        with contextlib.suppress(StoreUnavailableError):
            await self._call("patient_settle", keys.patient_keys(patient_id).as_list(), [hold_id])

    async def _release_tokens(
        self, patient_id: str, hold_ids: list[str], *, best_effort: bool = False
    ) -> None:
        try:
            await self._call("patient_release", keys.patient_keys(patient_id).as_list(), hold_ids)
        except StoreUnavailableError:
            # A token left behind only makes the rule stricter until it is reaped.
            if not best_effort:
                raise


def node_unreachable(error: Exception) -> bool:
    """Whether a store call failed because the node holding its keys is out of reach
    (down, or its slots served by no master), not because of the call itself."""
    if isinstance(error, StoreUnavailableError):
        return True
    cause = error.__cause__ if isinstance(error, InventoryError) else error
    return isinstance(
        cause, redis.exceptions.ClusterDownError | redis.exceptions.RedisClusterException
    )


async def _redis_version(client: RedisClient) -> str:
    # On Cluster ask the default node alone (one that answered): every node would fail
    # the start while one master is down.
    ask = {"target_nodes": RedisCluster.DEFAULT_NODE} if isinstance(client, RedisCluster) else {}
    info = await _guard(client.info("server", **ask))
    if "redis_version" not in info:  # RedisCluster: one entry per node
        info = next(iter(info.values()))
    return str(info["redis_version"])


#: Driver errors that say "the store cannot answer now", not "the store refused":
#: an unreachable node, a Cluster that is down or has a slot without a node, a slot
#: moving or a primary that is now a replica. Each is a 503 ``store_unavailable`` with
#: Retry-After, never a 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
    TimeoutError,
)


def store_error(error: Exception) -> InventoryError:
    """The inventory error for a driver error (see :data:`UNAVAILABLE_ERRORS`)."""
    if isinstance(error, TimeoutError) and not isinstance(error, redis.exceptions.RedisError):
        return StoreUnavailableError("Redis call timed out")
    if isinstance(error, UNAVAILABLE_ERRORS):
        return StoreUnavailableError(str(error))
    # redis-py strips the "OOM" prefix into its own class; match both to be sure.
    if isinstance(error, redis.exceptions.OutOfMemoryError) or "OOM" in str(error):
        return StoreUnavailableError("Redis is out of memory")
    if isinstance(error, redis.exceptions.RedisClusterException):
        # The client found no node to send to (the slot map is being rebuilt).
        return StoreUnavailableError(str(error))
    return InventoryError(f"Redis refused a script call: {error}")


#: The driver's failures, wrapped by :func:`store_error` at this adapter boundary.
_DRIVER_ERRORS: Final = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    TimeoutError,
)


#: The driver's failures, by a public name, for the store's sibling adapters (the
#: waiting room's) to wrap as :func:`store_error` does.
DRIVER_ERRORS: Final = _DRIVER_ERRORS


async def guarded(awaitable: Awaitable[T]) -> T:
    """Run a Redis call, wrapping driver failures as every store call does."""
    return await _guard(awaitable)


async def _guard(awaitable: Awaitable[T]) -> T:
    """Run a Redis call, wrapping driver failures at this adapter boundary."""
    try:
        return await awaitable
    except _DRIVER_ERRORS as error:
        raise store_error(error) from error
