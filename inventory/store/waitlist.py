"""The 候补 waitlist's store steps: join, leave, look (lua/waitlist_*.lua).

Offers are not made here: every step that frees a unit (release, expiry, the end of the
anti-scalping wait, 加号, reopen, a larger capacity loaded) offers it to the schedule's
first waiting patient itself, in the same atomic step (lua/includes/waitlist.lua); the
worker then settles the patient-tag side of offers under rules that span tags
(:meth:`SlotStore.settle_offer`).

At most N entries per patient is a rule that spans tags, so a join under it is the same
two-step reservation as a reserve's (lua/includes/patient.lua), on the patient's
``waitlist`` zset instead of its hold tokens: a pending token for the entry, the join in
the schedule's tag, then the token settled, or dropped when the join was refused.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import orjson

from inventory.domain import (
    ACTIVE_WAITLIST_STATES,
    WaitlistEntry,
    WaitlistJoin,
    WaitlistOutcome,
    WaitlistState,
)
from inventory.errors import (
    LUA_OK,
    LUA_REPLAY,
    AdmissionRequiredError,
    InventoryError,
    NotReleasedError,
    PatientRuleError,
    StoreUnavailableError,
    WaitlistLimitError,
    WaitlistUnitsFreeError,
    refusal_for,
)
from inventory.store import keys
from inventory.store.slot_store import TOKEN_CLOCK_MARGIN_MS, SlotStore, _guard, _text


class WaitlistStore:
    """The waitlist steps over a :class:`SlotStore` (its scripts, clock and policies)."""

    def __init__(self, store: SlotStore) -> None:
        self.store = store

    async def join(self, request: WaitlistJoin, *, request_id: str = "") -> WaitlistOutcome:
        """Put the patient on the schedule's waitlist (a retry with the same key, or a
        second join while the patient has an active entry on the schedule, answers that
        entry, ``replayed``). Refuses with ``waitlist_units_free`` while a unit is free,
        ``waitlist_limit`` past the policy's entries per patient, ``patient_rule`` for a
        ban or an open hold in the department that day, and the schedule's refusals."""
        store = self.store
        keys.check_id(request.account_id, "account_id")
        keys.check_id(request.patient_id, "patient_id")
        keys.check_id(request.schedule_id, "schedule_id")
        for schedule_id in request.day_schedule_ids:
            keys.check_id(schedule_id, "schedule_id")
        if request.day_schedule_ids:
            keys.check_id(request.doctor_id, "doctor_id")
        policy = store.policies.for_hospital(request.hospital_id)
        tag = keys.department_day_tag(request.department_id, request.visit_date)
        entry_id = keys.waitlist_entry_id_for(request.account_id, request.idempotency_key, tag)
        pk = keys.patient_waitlist_keys(request.patient_id)
        token_deadline, fresh = 0, False
        two_step = policy.waitlist_max_per_patient > 0 or policy.checks_bans
        if two_step:
            try:
                token_deadline, fresh = await store.acquire_patient_item(
                    pk,
                    entry_id,
                    hospital_id=request.hospital_id,
                    max_items=policy.waitlist_max_per_patient,
                    policy=policy,
                    reap=functools.partial(self.reap_entries, request.patient_id),
                )
            except PatientRuleError as refused:
                if refused.context.get("rule") == "max_open":
                    raise WaitlistLimitError(limit=policy.waitlist_max_per_patient) from None
                raise
        args = [
            store.script_now(),
            entry_id,
            request.schedule_id,
            request.account_id,
            request.patient_id,
            request.channel,
            keys.offer_hold_id_for(entry_id),
            token_deadline,
            request_id,
            " ".join(request.day_schedule_ids),
            request.doctor_id if request.day_schedule_ids else "",
        ]
        reply = await store.call_script("waitlist_join", keys.tag_keys(tag).as_list(), args)
        try:
            outcome = _join_outcome(reply)
        except InventoryError:
            if fresh:
                await self._drop_tokens(request.patient_id, [entry_id], best_effort=False)
            raise
        if two_step:
            entry = outcome.entry
            if entry.entry_id == entry_id and entry.state in ACTIVE_WAITLIST_STATES:
                with contextlib.suppress(StoreUnavailableError):
                    # Lost, the reaper settles it when it finds the entry active.
                    await store.call_script("patient_settle", pk.as_list(), [entry_id])
            elif fresh:
                # Answered with another entry (the patient's active one), or one that has
                # ended: this key's token holds nothing.
                await self._drop_tokens(request.patient_id, [entry_id], best_effort=True)
        return outcome

    async def leave(
        self, entry_id: str, *, account_id: str, request_id: str = ""
    ) -> WaitlistOutcome:
        """Leave the waitlist (an unpaid offer is given back with it, to the next
        patient); an entry that had already ended answers as it is, ``replayed``."""
        store = self.store
        tag = keys.tag_of_hold(entry_id)
        before = await self.entry(entry_id)
        args = [store.script_now(), store._seed(), entry_id, account_id, request_id]
        reply = await store.call_script("waitlist_leave", keys.tag_keys(tag).as_list(), args)
        code = int(reply[0])
        if code not in (LUA_OK, LUA_REPLAY):
            raise refusal_for(code)
        entry = WaitlistEntry.from_record(orjson.loads(_text(reply[2])))
        if code == LUA_OK:
            await self._drop_tokens(entry.patient_id, [entry_id], best_effort=True)
            if before is not None and before.state is WaitlistState.OFFERED:
                with contextlib.suppress(StoreUnavailableError):
                    await store.call_script(
                        "patient_release",
                        keys.patient_keys(entry.patient_id).as_list(),
                        [entry.offer_hold_id],
                    )
        return WaitlistOutcome(entry, 0, replayed=code == LUA_REPLAY)

    async def entry(self, entry_id: str) -> WaitlistEntry | None:
        """The waitlist entry with this id, or None."""
        tag = keys.tag_of_hold(entry_id)
        raw = await _guard(self.store.client.hget(keys.tag_keys(tag).waitlist, entry_id))
        return WaitlistEntry.from_record(orjson.loads(raw)) if raw else None

    async def position(self, entry: WaitlistEntry) -> int:
        """A waiting entry's place in its schedule's queue (1 = next to be offered; a
        doctor's-day entry's best place among its schedules); 0 for an entry that no
        longer waits."""
        if entry.state is not WaitlistState.WAITING:
            return 0
        tk = keys.tag_keys(keys.tag_of_hold(entry.entry_id))
        best = 0
        for schedule_id in entry.day_schedule_ids or (entry.schedule_id,):
            member = f"{schedule_id}|{entry.seq:015d}|{entry.entry_id}"
            ahead = await _guard(
                self.store.client.zlexcount(tk.waitq, f"[{schedule_id}|", f"({member}")
            )
            best = int(ahead) + 1 if best == 0 else min(best, int(ahead) + 1)
        return best

    async def waiting_count(self, tag: str, schedule_id: str) -> int:
        """How many patients wait on a schedule's waitlist."""
        count = await _guard(
            self.store.client.zlexcount(
                keys.tag_keys(tag).waitq, f"[{schedule_id}|", f"({schedule_id}}}"
            )
        )
        return int(count)

    async def waiting_entries(self, tag: str, schedule_ids: Sequence[str]) -> set[str]:
        """The entries waiting on any of these schedules (a doctor's-day entry once)."""
        found: set[str] = set()
        waitq = keys.tag_keys(tag).waitq
        for schedule_id in schedule_ids:
            members = await _guard(
                self.store.client.zrangebylex(waitq, f"[{schedule_id}|", f"({schedule_id}}}")
            )
            found.update(_text(m).rsplit("|", 1)[1] for m in members)
        return found

    async def reap_entries(self, patient_id: str, entry_ids: Sequence[str]) -> int:
        """Drop the patient's waitlist tokens whose entries have ended or never came to
        be (a join whose process died between its steps), as reap_patient_tokens does
        for holds."""
        verdicts: list[str] = []
        for entry_id in entry_ids:
            try:
                entry = await self.entry(entry_id)
            except keys.InvalidIdError:
                entry = None
            if entry is None:
                verdict = "missing"
            elif entry.state in ACTIVE_WAITLIST_STATES:
                verdict = "open"
            else:
                verdict = "ended"
            verdicts += [entry_id, verdict]
        pk = keys.patient_waitlist_keys(patient_id)
        reply = await self.store.call_script(
            "patient_reap",
            pk.as_list(),
            [self.store.script_now(), TOKEN_CLOCK_MARGIN_MS, *verdicts],
        )
        return int(reply[1])

    async def patient_entries(self, patient_id: str) -> dict[str, float]:
        """The patient's waitlist tokens: entry id -> pending deadline (ms), inf once settled."""
        pairs: Any = await _guard(
            self.store.client.zrange(
                keys.patient_waitlist_keys(patient_id).tokens, 0, -1, withscores=True
            )
        )
        return {_text(member): float(score) for member, score in pairs}

    async def _drop_tokens(
        self, patient_id: str, entry_ids: list[str], *, best_effort: bool
    ) -> None:
        try:
            await self.store.call_script(
                "patient_release", keys.patient_waitlist_keys(patient_id).as_list(), entry_ids
            )
        except StoreUnavailableError:
            # A token left behind only makes the limit stricter until it is reaped.
            if not best_effort:
                raise


def _join_outcome(reply: Sequence[Any]) -> WaitlistOutcome:
    code = int(reply[0])
    if code in (LUA_OK, LUA_REPLAY):
        entry = WaitlistEntry.from_record(orjson.loads(_text(reply[2])))
        return WaitlistOutcome(entry, int(reply[3]), replayed=code == LUA_REPLAY)
    extra = _text(reply[4])
    context: dict[str, Any] = {}
    if code == NotReleasedError.lua_code and extra.isdigit():
        context["release_ms"] = int(extra)
    elif code == PatientRuleError.lua_code:
        context["rule"] = extra
    elif code == WaitlistUnitsFreeError.lua_code and extra:
        context["slot_id"] = extra
    elif code == AdmissionRequiredError.lua_code and extra:
        context["release_id"] = extra
    raise refusal_for(code, **context)
