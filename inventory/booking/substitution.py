"""Doctor substitution (替诊): an operator offers a suspended schedule's patients another
doctor's schedule; each patient accepts (the booking moves there, through the reschedule
machinery of :mod:`inventory.booking.rescheduling`, payment kept) or declines (the
booking is cancelled and refunded like the suspension's other bookings).

An offer is a row of ``substitution_offers`` per open booking, written before the
schedule is suspended, so no suspension path (the operator's sweep, the HIS sync) can
cancel the booking first: the suspension leaves a booking alone while its offer is live
(``offered`` until ``respond_by``, or ``accepting``) and cancels it with a refund once
the offer has run out unanswered. Per patient, every step is atomic and recoverable:

- accept: the offer becomes ``accepting`` (committed), then the move runs as a reschedule
  of kind ``substitution`` (no cancellation deadline, no reschedule limit); the
  transaction that closes the move closes the offer (``accepted``, or back to
  ``offered`` when the move was refused), whether the API or the worker's move recovery
  closes it;
- decline: the offer becomes ``declined`` (committed: from then on the suspension's sweep
  cancels the booking), then the booking is cancelled and refunded here at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from inventory.booking.rescheduling import Rescheduling
from inventory.errors import ConflictError, NotFoundError, SoldOutError
from inventory.his.compensation import end_booking
from inventory.record.bookings import PgBookings
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

#: The lifecycle_events type of an offer (copied for the notifier by a trigger).
OFFERED_EVENT: Final = "substitution_offered"
#: The cancellation code of a declined offer (a 停诊 the patient chose to be refunded for).
DECLINED: Final = "suspended"


class Substitutions:
    """Offers and answers for one API process."""

    def __init__(
        self,
        *,
        store: SlotStore,
        catalogue: PgCatalogue,
        bookings: PgBookings,
        rescheduling: Rescheduling,
        db: Any,
        acquire_timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self._catalogue = catalogue
        self._bookings = bookings
        self._rescheduling = rescheduling
        self._db = db
        self._timeout = acquire_timeout_s

    async def offer(
        self, schedule_id: str, target_schedule_id: str, *, respond_within_s: int, reason: str
    ) -> dict[str, Any]:
        """Offer ``target_schedule_id`` to every open booking of ``schedule_id``, then
        suspend it (it may be suspended already): the offers made."""
        target = await self._catalogue.schedule(target_schedule_id)
        source = await self._catalogue.schedule(schedule_id)
        if source is None or target is None:
            raise NotFoundError("no such schedule")
        if target["hospital_id"] != source["hospital_id"] or target_schedule_id == schedule_id:
            raise ConflictError("the substitute is another schedule of the same hospital")
        respond_by = datetime.now(tz=UTC) + timedelta(seconds=respond_within_s)
        async with (
            acquire(self._db, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            rows = await connection.fetch(
                QUERIES["offer_substitutions"], schedule_id, target_schedule_id, respond_by
            )
            for row in rows:
                await connection.execute(
                    QUERIES["add_booking_event"],
                    f"{OFFERED_EVENT}:{row['booking_id']}:{target_schedule_id}",
                    OFFERED_EVENT,
                    row["booking_id"],
                    datetime.now(tz=UTC),
                    {
                        "code": "suspended",
                        "reason": reason,
                        "target_schedule_id": target_schedule_id,
                        "respond_by": respond_by.isoformat(),
                    },
                )
        # Offers first, then the suspension: its sweep finds them and leaves the bookings
        # alone until they are answered or run out.
        await self._catalogue.set_status(schedule_id, "suspended", reason)
        log.info(
            "schedule.substitution_offered",
            schedule=schedule_id,
            target=target_schedule_id,
            offers=len(rows),
        )
        return {
            "schedule_id": schedule_id,
            "target_schedule_id": target_schedule_id,
            "respond_by": respond_by.isoformat(),
            "booking_ids": sorted(row["booking_id"] for row in rows),
        }

    async def get(self, booking_id: str, *, account_id: str) -> dict[str, Any]:
        """The offer made to one of the account's bookings."""
        async with acquire(self._db, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(
                QUERIES["get_substitution_offer"], booking_id, account_id
            )
        if row is None:
            raise NotFoundError("no substitution offer for this booking")
        return _view(row)

    async def answer(
        self,
        booking_id: str,
        *,
        account_id: str,
        accept: bool,
        idempotency_key: str,
        request_id: str = "",
        method: str = "jsapi",
    ) -> dict[str, Any]:
        """Accept (the booking moves to the substitute's schedule) or decline (cancelled
        and refunded): the booking the patient now has (the new one, or the cancelled).
        A dearer substitute answers awaiting_payment with the difference's payment (the
        offer stays accepting until the move completes or is abandoned)."""
        async with (
            acquire(self._db, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(
                QUERIES["start_substitution_answer"],
                booking_id,
                account_id,
                "accepting" if accept else "declined",
            )
            if row is None:
                current = await connection.fetchrow(
                    QUERIES["get_substitution_offer"], booking_id, account_id
                )
        if row is None:
            if current is None:
                raise NotFoundError("no substitution offer for this booking")
            if current["status"] == "accepted" and accept and current["new_booking_id"]:
                return await self._answer(current["new_booking_id"], account_id, True)
            raise ConflictError(f"the offer was {current['status']} or ran out")
        if not accept:
            await end_booking(
                self._db,
                self._store,
                booking_id,
                outcome="cancelled",
                code=DECLINED,
                message="declined the substitute doctor",
            )
            return await self._answer(booking_id, account_id, False)
        slot_id = await self._slot_for(booking_id, row["target_schedule_id"])
        moved = await self._rescheduling.reschedule(
            booking_id,
            account_id=account_id,
            slot_id=slot_id,
            idempotency_key=idempotency_key,
            request_id=request_id,
            kind="substitution",
            method=method,
        )
        return {
            "accepted": True,
            "booking": moved["booking"],
            "refund_fen": moved["refund_fen"],
            "status": moved["status"],
            "charge_fen": moved["charge_fen"],
            "reschedule_id": moved["reschedule_id"],
            "payment_id": moved["payment_id"],
            "pay_by": moved["pay_by"],
        }

    async def _answer(self, booking_id: str, account_id: str, accepted: bool) -> dict[str, Any]:
        booking = await self._bookings.get_for_account(booking_id, account_id)
        return {"accepted": accepted, "booking": booking, "refund_fen": 0}

    async def _slot_for(self, booking_id: str, target_schedule_id: str) -> str:
        """The substitute's slot for a booking: the one at the booking's place in its
        schedule's order (the same time of the session), else the first with a free unit
        (none: sold out, and the patient may still decline)."""
        hold = await self._store.get_hold(booking_id)
        target = await self._catalogue.schedule(target_schedule_id)
        slots = [str(s["id"]) for s in await self._catalogue.schedule_slots(target_schedule_id)]
        if hold is None or target is None or not slots:
            raise NotFoundError("no such schedule")
        source = [str(s["id"]) for s in await self._catalogue.schedule_slots(hold.schedule_id)]
        place = source.index(hold.slot_id) if hold.slot_id in source else 0
        tag = keys.department_day_tag(target["department_id"], target["visit_date"])
        counts = await self._store.slot_counts(tag, slots)
        ordered = sorted(range(len(slots)), key=lambda i: (i != place, i))
        for index in ordered:
            found = counts.get(slots[index])
            if found is not None and found.remaining > 0:
                return slots[index]
        raise SoldOutError()


def _view(row: Any) -> dict[str, Any]:
    return {
        "booking_id": row["booking_id"],
        "schedule_id": row["schedule_id"],
        "target_schedule_id": row["target_schedule_id"],
        "status": row["status"],
        "respond_by": row["respond_by"].isoformat(),
        "new_booking_id": row["new_booking_id"],
    }
