"""The patient's steps on a hold (reserve, look, release, confirm, cancel), one call each.

A reserve is more than the store's script: the sold-out memory answers first, the rate
limits count the request (inside the reserve's own script call when they can, by a call
of their own before any Postgres look-up otherwise), the slot's location and the
patient's link come from caches or the record, and what the store answers teaches the
caches. That order is the spike's defence, so it lives in one place, here, and the API
handler only parses, calls :meth:`Reservations.reserve` and renders.

Release, confirm and cancel likewise own their store call, the durable record written
before the answer, the caches and the refund. An account sees only its own holds and
bookings: another account's answers :class:`NotFoundError` exactly like a missing one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inventory.booking.ratelimit import ReserveRateLimiter
from inventory.booking.soldout import SoldOutSlots
from inventory.domain import Hold, HoldOutcome, HoldState, ReserveRequest, SlotLocation
from inventory.errors import NotFoundError, RateLimitedError, SoldOutError, ValidationFailedError
from inventory.payments.errors import PaymentRequiredError
from inventory.payments.refunds import request_refund
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue, ScheduleTerms
from inventory.record.patients import PatientRegistry
from inventory.store import keys
from inventory.store.slot_store import SlotStore


class Reservations:
    """The hold steps of one API process over its store, record and caches."""

    def __init__(
        self,
        *,
        store: SlotStore,
        catalogue: PgCatalogue,
        patients: PatientRegistry,
        bookings: PgBookings,
        limiter: ReserveRateLimiter,
        sold_out: SoldOutSlots,
        db: Any,
        payments_enabled: bool,
    ) -> None:
        """``db`` is the asyncpg pool refunds are requested in; ``payments_enabled``: a
        hold with a fee is confirmed by its provider's notification only."""
        self._store = store
        self._catalogue = catalogue
        self._patients = patients
        self._bookings = bookings
        self._limiter = limiter
        self._sold_out = sold_out
        self._db = db
        self._payments_enabled = payments_enabled

    async def reserve(
        self,
        *,
        account_id: str,
        patient_id: str,
        slot_id: str,
        channel: str,
        idempotency_key: str,
        client_ip: str,
        request_id: str,
        admission_token: str = "",
    ) -> tuple[HoldOutcome, ScheduleTerms]:
        """Reserve one unit of a slot for one of the account's patients: the store's
        outcome (the hold; ``replayed`` when a retry with the same idempotency key is
        answered with the hold its first try made) and the terms of its schedule.

        Raises what the store refuses with (``sold_out``, ``rate_limited`` with its
        ``retry_after_s``, ...), and :class:`NotFoundError` for a slot or patient that
        does not exist or is not the account's."""
        store = self._store
        sold_out_tag = self._sold_out.tag_if_sold_out(slot_id)
        if sold_out_tag is not None and not await store.hold_exists(
            keys.hold_id_for(account_id, idempotency_key, sold_out_tag)
        ):
            # Seen sold out within the availability cache's lifetime: answered without the
            # reserve script, the rate-limit call or Postgres. A retry of a reserve that did
            # take a unit (its key names an existing hold) goes on to get that hold back.
            raise SoldOutError()
        limiter = self._limiter
        limits = limiter.buckets(account_id=account_id, client_ip=client_ip)
        catalogue = self._catalogue
        location = catalogue.known_slot_location(slot_id)
        if location is None or not self._patients.known_link(patient_id, account_id):
            # Postgres must be asked: count the request first, by a call of its own, so a
            # caller over its limit is refused before it costs Postgres anything. Known
            # slots and patients (the spike's hot path) are counted by the reserve call.
            await limiter.count(limits)
            limits = None
            location = await catalogue.slot_location(slot_id)
            if location is None:
                raise NotFoundError("no such slot")
            if not await self._patients.belongs_to(patient_id, account_id):
                raise NotFoundError("no such patient")
        try:
            outcome = await store.reserve(
                ReserveRequest(
                    hospital_id=location.hospital_id,
                    department_id=location.department_id,
                    visit_date=location.visit_date,
                    slot_id=slot_id,
                    account_id=account_id,
                    patient_id=patient_id,
                    channel=channel,
                    idempotency_key=idempotency_key,
                    admission_token=admission_token,
                ),
                request_id=request_id,
                rate_limits=limits,
            )
        except RateLimitedError as limited:
            limiter.refused(limited)
            raise
        except SoldOutError:
            self._sold_out.saw_sold_out(
                slot_id, keys.department_day_tag(location.department_id, location.visit_date)
            )
            raise
        schedule_id = outcome.hold.schedule_id
        # Terms this process knows need no coroutine of their own (the hot path's case),
        # and a plain pair is the cheapest answer to build: this runs on every reserve.
        terms = catalogue.known_terms(schedule_id) or await self.terms(schedule_id, location)
        return outcome, terms

    async def hold(self, hold_id: str, *, account_id: str) -> tuple[Hold, ScheduleTerms]:
        """One of the account's holds, with the terms of its schedule."""
        hold = await self._own_hold(hold_id, account_id)
        return hold, await self.terms(hold.schedule_id)

    async def open_holds(
        self, *, account_id: str, limit: int, now_ms: int
    ) -> list[tuple[Hold, ScheduleTerms]]:
        """The account's holds still waiting for payment at ``now_ms``, newest first,
        each with its schedule's terms. Postgres names the candidates (a hold reaches it
        through the outbox, typically within a second of its reserve); the store says
        which of them are still held, since one may have been paid, given back or have
        lapsed since the record last heard of it."""
        hold_ids = await self._bookings.open_hold_ids(account_id, limit)
        found = await asyncio.gather(*(self._store.get_hold(hold_id) for hold_id in hold_ids))
        open_now = [
            hold
            for hold in found
            if hold is not None
            and hold.account_id == account_id
            and hold.state is HoldState.HELD
            and hold.deadline_ms > now_ms
        ]
        return [(hold, await self.terms(hold.schedule_id)) for hold in open_now]

    async def release(
        self, hold_id: str, *, account_id: str, request_id: str
    ) -> tuple[HoldOutcome, ScheduleTerms]:
        """Give a hold back before paying (a booking is cancelled with :meth:`cancel`):
        the store's outcome and the terms of the hold's schedule."""
        hold = await self._own_hold(hold_id, account_id)
        if hold.state is HoldState.BOOKED:
            raise ValidationFailedError(
                "this hold is a booking: cancel it with POST /v1/bookings/{id}/cancel",
                errors=[{"field": "hold_id", "reason": "is a booking"}],
            )
        outcome = await self._store.release(
            hold_id, account_id=account_id, reason="patient_released", request_id=request_id
        )
        # The unit is back (or waiting): this process stops refusing the slot from memory.
        self._sold_out.saw_units(outcome.hold.slot_id)
        return outcome, await self.terms(hold.schedule_id)

    async def confirm(
        self, hold_id: str, *, account_id: str, payment_ref: str, request_id: str
    ) -> dict[str, Any]:
        """Confirm a paid hold: the booking's view, once the booking is in Postgres."""
        hold = await self._own_hold(hold_id, account_id)
        if self._payments_enabled and hold.amount_fen > 0:
            # With a payment provider, a front end's own "payment reference" proves
            # nothing: a hold with a fee is confirmed by the provider's verified
            # notification only (POST /v1/holds/{id}/payments, then the callback).
            if hold.state is not HoldState.BOOKED:
                raise PaymentRequiredError(
                    "this hold has a fee: it is confirmed when its payment is notified",
                    state=hold.state.value,
                )
            # Already booked by its payment (a front end confirming after paying): the
            # booking, answered like any confirm once it is durable (record is idempotent).
            await self._bookings.record(hold)
            return await self.booking(hold_id, account_id=account_id)
        outcome = await self._store.confirm(
            hold_id, account_id=account_id, payment_ref=payment_ref, request_id=request_id
        )
        await self._bookings.record(outcome.hold)
        return await self.booking(hold_id, account_id=account_id)

    async def cancel(
        self, booking_id: str, *, account_id: str, reason: str, request_id: str
    ) -> dict[str, Any]:
        """Cancel a booking, until the hospital's cancellation deadline: its view."""
        hold = await self._own_hold(booking_id, account_id)
        if hold.state not in (HoldState.BOOKED, HoldState.CANCELLED):
            raise NotFoundError("no such booking")
        outcome = await self._store.release(
            booking_id, account_id=account_id, reason=reason, request_id=request_id
        )
        await self._bookings.record(outcome.hold)
        self._sold_out.saw_units(outcome.hold.slot_id)
        # A paid booking's fee goes back, once (GET /v1/bookings/{id}/refund shows it; the
        # payment loop requests it too if this process dies first).
        await request_refund(self._db, booking_id, None, reason, f"cancel:{booking_id}")
        return await self.booking(booking_id, account_id=account_id)

    async def booking(self, booking_id: str, *, account_id: str) -> dict[str, Any]:
        """One of the account's bookings, as its view."""
        booking = await self._bookings.get_for_account(booking_id, account_id)
        if booking is None:
            raise NotFoundError("no such booking")
        return booking

    async def terms(self, schedule_id: str, location: SlotLocation | None = None) -> ScheduleTerms:
        """The terms of a hold's schedule (a schedule is never deleted while it has
        holds); ``location`` (one of its slots') lets them come from Redis (see
        :meth:`PgCatalogue.terms`)."""
        catalogue = self._catalogue
        terms = catalogue.known_terms(schedule_id) or await catalogue.terms(
            schedule_id, location=location
        )
        if terms is None:
            raise NotFoundError("no such schedule")
        return terms

    async def _own_hold(self, hold_id: str, account_id: str) -> Hold:
        hold = await self._store.get_hold(hold_id)
        if hold is None or hold.account_id != account_id:
            raise NotFoundError("no such hold")
        return hold
