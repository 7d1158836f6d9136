"""The patient's steps on the 候补 waitlist (join, look, leave, list), one call each.

A join finds the schedule's tag from the catalogue (remembered: a schedule never moves
to another department or date), checks that the patient is the account's, counts the
request against the reserve's rate limits, and then runs the store's join. An account
sees only its own entries: another account's answers :class:`NotFoundError` exactly like
a missing one. Offers are made by the store itself, in the step that frees a unit.
"""

from __future__ import annotations

import contextlib
from datetime import date
from typing import NamedTuple
from zoneinfo import ZoneInfo

from inventory.booking.ratelimit import ReserveRateLimiter
from inventory.domain import (
    Hold,
    WaitlistEntry,
    WaitlistJoin,
    WaitlistOutcome,
)
from inventory.errors import InventoryError, NotFoundError, WaitlistEntryNotFoundError
from inventory.record.catalogue import PgCatalogue
from inventory.record.patients import PatientRegistry
from inventory.record.waitlist import PgWaitlist
from inventory.store import keys
from inventory.store.slot_store import SlotStore
from inventory.store.waitlist import WaitlistStore


class WaitlistAnswer(NamedTuple):
    """An entry as the API shows it: with its position while it waits, its offer's hold
    once it has one, and the zone its instants are written in."""

    entry: WaitlistEntry
    position: int
    offer: Hold | None
    zone: ZoneInfo
    replayed: bool = False


class _Location(NamedTuple):
    hospital_id: str
    department_id: str
    visit_date: date


class Waitlists:
    """The waitlist steps of one API process over its store, record and caches."""

    def __init__(
        self,
        *,
        store: SlotStore,
        catalogue: PgCatalogue,
        patients: PatientRegistry,
        record: PgWaitlist,
        limiter: ReserveRateLimiter,
    ) -> None:
        self._store = store
        self._waitlist = WaitlistStore(store)
        self._catalogue = catalogue
        self._patients = patients
        self._record = record
        self._limiter = limiter
        self._locations: dict[str, _Location] = {}

    async def join(
        self,
        *,
        account_id: str,
        patient_id: str,
        schedule_id: str,
        channel: str,
        idempotency_key: str,
        client_ip: str,
        request_id: str,
    ) -> WaitlistAnswer:
        """Put one of the account's patients on a schedule's waitlist; a retry (same
        key) or a second join of the same patient answers the entry it has,
        ``replayed``. Raises :class:`NotFoundError` for a schedule that does not exist
        and a patient that is not the account's, and what the store refuses with."""
        limiter = self._limiter
        await limiter.count(limiter.buckets(account_id=account_id, client_ip=client_ip))
        location = await self._location(schedule_id)
        if not await self._patients.belongs_to(patient_id, account_id):
            raise NotFoundError("no such patient")
        outcome = await self._waitlist.join(
            WaitlistJoin(
                hospital_id=location.hospital_id,
                department_id=location.department_id,
                visit_date=location.visit_date,
                schedule_id=schedule_id,
                account_id=account_id,
                patient_id=patient_id,
                channel=channel,
                idempotency_key=idempotency_key,
            ),
            request_id=request_id,
        )
        return await self._answer(outcome)

    async def join_day(
        self,
        *,
        account_id: str,
        patient_id: str,
        doctor_id: str,
        visit_date: date,
        channel: str,
        idempotency_key: str,
        client_ip: str,
        request_id: str,
    ) -> WaitlistAnswer:
        """Put one of the account's patients on a doctor's day: the first unit freed in
        any window of the doctor's schedules that day (in the doctor's department) is
        offered to it, in join order with each schedule's own entries. The schedules
        are the record's as of the join. Raises :class:`NotFoundError` for a doctor
        without schedules that day and a patient that is not the account's."""
        limiter = self._limiter
        await limiter.count(limiter.buckets(account_id=account_id, client_ip=client_ip))
        doctor = await self._catalogue.doctor(doctor_id)
        if doctor is None:
            raise NotFoundError("no such doctor")
        rows = [
            row
            for row in await self._catalogue.day_schedules(doctor["department_id"], visit_date)
            if row["doctor_id"] == doctor_id
        ]
        if not rows:
            raise NotFoundError("the doctor has no schedules that day")
        if not await self._patients.belongs_to(patient_id, account_id):
            raise NotFoundError("no such patient")
        schedule_ids = tuple(str(row["id"]) for row in rows)
        outcome = await self._waitlist.join(
            WaitlistJoin(
                hospital_id=str(doctor["hospital_id"]),
                department_id=str(doctor["department_id"]),
                visit_date=visit_date,
                schedule_id=schedule_ids[0],
                account_id=account_id,
                patient_id=patient_id,
                channel=channel,
                idempotency_key=idempotency_key,
                doctor_id=doctor_id,
                day_schedule_ids=schedule_ids,
            ),
            request_id=request_id,
        )
        return await self._answer(outcome)

    async def entry(self, entry_id: str, *, account_id: str) -> WaitlistAnswer:
        """One of the account's entries, with its live position."""
        entry = await self._own_entry(entry_id, account_id)
        position = await self._waitlist.position(entry)
        return await self._answer(WaitlistOutcome(entry, position))

    async def leave(self, entry_id: str, *, account_id: str, request_id: str) -> WaitlistAnswer:
        """Leave a waitlist (an unpaid offer goes to the next patient); leaving an entry
        that has already ended answers it as it is."""
        await self._own_entry(entry_id, account_id)
        try:
            outcome = await self._waitlist.leave(
                entry_id, account_id=account_id, request_id=request_id
            )
        except WaitlistEntryNotFoundError:
            raise NotFoundError("no such waitlist entry") from None
        return await self._answer(outcome)

    async def list_for_account(self, account_id: str, limit: int) -> list[WaitlistAnswer]:
        """The account's entries, newest first: the record's list (Postgres), each
        entry as the store has it now when it can say (fresher than the record, which
        the persister writes a moment later)."""
        answers = []
        for recorded in await self._record.list_for_account(account_id, limit):
            entry = recorded
            with contextlib.suppress(InventoryError):
                entry = await self._waitlist.entry(recorded.entry_id) or recorded
            position = 0
            with contextlib.suppress(InventoryError):
                position = await self._waitlist.position(entry)
            answers.append(await self._answer(WaitlistOutcome(entry, position)))
        return answers

    async def _answer(self, outcome: WaitlistOutcome) -> WaitlistAnswer:
        entry = outcome.entry
        offer = None
        if entry.offered_ms:
            with contextlib.suppress(InventoryError):
                offer = await self._store.get_hold(entry.offer_hold_id)
        terms = self._catalogue.known_terms(entry.schedule_id) or await self._catalogue.terms(
            entry.schedule_id
        )
        if terms is None:
            raise NotFoundError("no such schedule")
        return WaitlistAnswer(entry, outcome.position, offer, terms.zone, outcome.replayed)

    async def _own_entry(self, entry_id: str, account_id: str) -> WaitlistEntry:
        try:
            entry = await self._waitlist.entry(entry_id)
        except keys.InvalidIdError:
            entry = None
        if entry is None or entry.account_id != account_id:
            raise NotFoundError("no such waitlist entry")
        return entry

    async def _location(self, schedule_id: str) -> _Location:
        found = self._locations.get(schedule_id)
        if found is not None:
            return found
        row = await self._catalogue.schedule(schedule_id)
        if row is None:
            raise NotFoundError("no such schedule")
        self._catalogue.remember_terms(row)
        found = _Location(row["hospital_id"], row["department_id"], row["visit_date"])
        if len(self._locations) > 100_000:
            self._locations.clear()
        self._locations[schedule_id] = found
        return found
