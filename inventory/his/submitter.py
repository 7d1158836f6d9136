"""The HIS submitter: every confirmed booking reaches the HIS at least once, and only once
in effect (docs/his.md, "Booking submission").

Work comes from Postgres, never from memory, so nothing is lost when a worker dies:

- ``claim_his_submissions`` takes a batch of due bookings (``FOR UPDATE SKIP LOCKED``,
  so several submitters share the queue) and marks them ``submitted``; one whose sender
  died is taken again after ``lease_s``;
- each is created in the HIS with our booking id as the Appointment identifier and
  ``If-None-Exist``, so a retry after a lost answer returns the appointment made the
  first time instead of booking twice;
- success: the HIS's appointment id, number (就诊序号), visit time and place are stored
  and the booking is ``his_confirmed`` (``GET /v1/bookings/{id}`` shows them);
- refusal (full, suspended, past, unknown slot): the booking ends ``rejected`` with the
  reason, a refund is requested and its unit released (:mod:`inventory.his.compensation`);
- no usable answer after the client's own retries (HIS down, timeouts, circuit open):
  back to ``confirmed`` with the next attempt after an exponential, jittered delay,
  counted in ``his_attempts``; it is tried again for as long as it takes.

Two more queues ride along: cancellations made here (by the patient, or by a
suspension) of bookings that were sent to the HIS are sent to it
(``claim_his_cancellations``), and units whose release was lost in a crash are released
again (``list_unreleased_bookings``).

The HIS sees no more than the client allows (its semaphore and token bucket hold for
every call made here); a batch is at most ``batch_size`` bookings.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import structlog

from inventory.his.client import HisClient
from inventory.his.compensation import (
    HIS_CANCELLED,
    HIS_REJECTED,
    end_booking,
    reason_code,
    release_unit,
)
from inventory.his.errors import (
    HisCircuitOpenError,
    HisProtocolError,
    HisRefusedError,
    HisUnavailableError,
)
from inventory.his.scope import EVERY_HOSPITAL, HospitalScope
from inventory.his.types import HisPatient, HisRefusal
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.privacy.crypto import FieldCryptoError, FieldKeyring
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

#: The longest wait between two failed rounds (HIS, Redis or Postgres away).
SUBMITTER_BACKOFF_MAX_S = 30.0

#: Refusals that end a booking: retrying cannot change the HIS's answer.
REJECTING = frozenset(
    {HisRefusal.FULL, HisRefusal.SUSPENDED, HisRefusal.PAST, HisRefusal.NOT_FOUND}
)

#: Who the appointment is for, by our patient id (None: send none).
PatientLookup = Callable[[str], Awaitable[HisPatient | None]]


@dataclass(frozen=True, slots=True)
class SubmitterConfig:
    """How the submitter works. Durations in seconds."""

    batch_size: int = 50
    #: Sleep when the queues are empty.
    poll_interval_s: float = 1.0
    #: A submitted booking whose sender went quiet this long is taken again. Longer than
    #: the client's total_timeout_s, so a slow call is never doubled by a live worker.
    lease_s: float = 120.0
    #: Delay before the n-th retry: uniform in [d/2, d], d = min(max, initial * 2^(n-1)).
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    #: Retry after this long when the client's circuit breaker was open (not counted).
    circuit_retry_s: float = 15.0
    #: Refusals that do not end a booking (invalid, conflict: ours or the HIS's bug) are
    #: retried this much later, for a person to look at meanwhile.
    refused_retry_s: float = 3600.0
    #: How often the lost-release sweep runs, and how old an ended booking must be.
    sweep_interval_s: float = 30.0
    unreleased_after_s: float = 30.0
    acquire_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        for name in ("poll_interval_s", "lease_s", "retry_initial_s", "retry_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass
class SubmitterStats:
    """Counters since start, for metrics (the metrics module maps them)."""

    claimed: int = 0
    his_confirmed: int = 0
    rejected: int = 0
    #: Attempts that got no usable answer (the booking stays confirmed for later).
    deferred: int = 0
    circuit_open: int = 0
    protocol_errors: int = 0
    #: Refusals that do not end a booking (invalid, conflict, other).
    refused_other: int = 0
    #: Bookings whose appointment the hospital had cancelled by the time we learnt of it.
    cancelled_by_his: int = 0
    #: Appointments made for bookings cancelled meanwhile (the cancel queue undoes them).
    late_for_cancelled: int = 0
    cancellations_sent: int = 0
    cancellations_failed: int = 0
    releases_retried: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    last_batch_at: float = 0.0


def keyring_patients(pool: asyncpg.Pool, keyring: FieldKeyring) -> PatientLookup:
    """A :data:`PatientLookup` that decrypts the patient's name and ID number from
    Postgres (the HIS registers the visit under the patient's real name)."""

    async def lookup(patient_id: str) -> HisPatient | None:
        async with acquire(pool, timeout_s=10.0) as connection:
            row = await connection.fetchrow(QUERIES["get_patient"], patient_id)
        if row is None:
            return None
        try:
            name = keyring.decrypt(
                row["name_enc"], table="patients", column="name", row_id=patient_id
            )
            resident_id = keyring.decrypt(
                row["resident_id_enc"], table="patients", column="resident_id", row_id=patient_id
            )
        except FieldCryptoError as error:
            log.error("his.patient_undecryptable", patient=patient_id, error=type(error).__name__)
            return None
        return HisPatient(name, resident_id)

    return lookup


class Submitter:
    """Sends confirmed bookings, and cancellations, to the HIS."""

    def __init__(
        self,
        his: HisClient,
        pool: asyncpg.Pool,
        store: SlotStore,
        *,
        config: SubmitterConfig | None = None,
        patients: PatientLookup | None = None,
        stats: SubmitterStats | None = None,
        rng: random.Random | None = None,
        scope: HospitalScope = EVERY_HOSPITAL,
        connection: str = "default",
    ) -> None:
        self.his = his
        #: The hospitals whose bookings this submitter claims: its connection's queue.
        self.scope = scope
        self.connection = connection
        self.pool = pool
        self.store = store
        self.config = config or SubmitterConfig()
        self.patients = patients
        self.stats = stats if stats is not None else SubmitterStats()
        self._rng = rng or random.Random()

    def retry_delay_s(self, failures: int) -> float:
        """The wait before the next attempt after ``failures`` failed ones (>= 1)."""
        config = self.config
        ceiling = min(config.retry_max_s, config.retry_initial_s * 2 ** max(0, failures - 1))
        return float(ceiling * self._rng.uniform(0.5, 1.0))

    # -- submissions ------------------------------------------------------------------

    async def submit_batch(self) -> int:
        """Claim up to ``batch_size`` due bookings and send each; how many were claimed."""
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            rows = await connection.fetch(
                QUERIES["claim_his_submissions"],
                self.config.batch_size,
                self.config.lease_s,
                *self.scope.params(),
            )
        if not rows:
            return 0
        self.stats.claimed += len(rows)
        self.stats.last_batch_at = time.time()
        await asyncio.gather(*(self.submit(row) for row in rows))
        return len(rows)

    async def submit(self, row: Any) -> None:
        """Send one claimed (submitted) booking and record the outcome."""
        booking_id = row["booking_id"]
        failures = int(row["his_attempts"]) + 1
        try:
            patient = await self.patients(row["patient_id"]) if self.patients else None
            appointment = await self.his.create_appointment(booking_id, row["slot_id"], patient)
        except HisRefusedError as error:
            if error.reason in REJECTING:
                await self._reject(booking_id, error.reason)
            else:
                self.stats.refused_other += 1
                log.error("his.submit_refused", booking=booking_id, reason=error.reason.value)
                await self._defer(
                    booking_id, self.config.refused_retry_s, f"refused: {error.reason}", True
                )
        except HisCircuitOpenError:
            self.stats.circuit_open += 1
            await self._defer(booking_id, self.config.circuit_retry_s, "circuit_open", False)
        except HisUnavailableError as error:
            self.stats.deferred += 1
            await self._defer(booking_id, self.retry_delay_s(failures), _text(error), True)
        except HisProtocolError as error:
            self.stats.protocol_errors += 1
            log.error("his.submit_protocol_error", booking=booking_id, error=str(error))
            await self._defer(booking_id, self.retry_delay_s(failures), _text(error), True)
        else:
            if not appointment.active:
                # Made by an earlier attempt whose answer was lost, then cancelled by the
                # hospital: the booking ends here too (refund, release, patient told).
                await self._cancelled_by_his(booking_id, appointment.cancel_reason)
                return
            async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
                stored = await connection.fetchrow(
                    QUERIES["record_his_appointment"],
                    booking_id,
                    appointment.appointment_id,
                    appointment.number,
                    appointment.visit_start,
                    appointment.location_name,
                )
            if stored is not None and stored["status"] == "his_confirmed":
                self.stats.his_confirmed += 1
                log.info("his.booking_confirmed", booking=booking_id, number=appointment.number)
            else:
                # Cancelled (or rejected) here while the HIS booked it: the cancellation
                # queue takes the appointment back (the reconciler reports the rest).
                self.stats.late_for_cancelled += 1
                log.warning(
                    "his.appointment_for_ended_booking",
                    booking=booking_id,
                    status=stored["status"] if stored is not None else None,
                )

    async def _reject(self, booking_id: str, reason: HisRefusal) -> None:
        ended = await end_booking(
            self.pool,
            self.store,
            booking_id,
            outcome="rejected",
            code=HIS_REJECTED,
            message=reason.value,
            from_status="submitted",
        )
        if ended is not None:
            self.stats.rejected += 1
            by_reason = self.stats.rejected_by_reason
            by_reason[reason.value] = by_reason.get(reason.value, 0) + 1

    async def _cancelled_by_his(self, booking_id: str, reason: str | None) -> None:
        ended = await end_booking(
            self.pool,
            self.store,
            booking_id,
            outcome="cancelled",
            code=HIS_CANCELLED,
            message=reason,
            from_status="submitted",
        )
        if ended is not None:
            self.stats.cancelled_by_his += 1

    async def _defer(self, booking_id: str, delay_s: float, error: str, counted: bool) -> None:
        self.stats.last_error = error
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            await connection.execute(
                QUERIES["defer_his_submission"], booking_id, delay_s, error[:500], counted
            )

    # -- cancellations and lost releases ----------------------------------------------

    async def cancel_batch(self) -> int:
        """Send the cancellations of bookings the HIS may hold; how many were claimed."""
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            rows = await connection.fetch(
                QUERIES["claim_his_cancellations"],
                self.config.batch_size,
                self.config.lease_s,
                *self.scope.params(),
            )
        await asyncio.gather(*(self.cancel(row) for row in rows))
        return len(rows)

    async def cancel(self, row: Any) -> None:
        """Cancel one booking's appointment in the HIS (a failure is retried after the
        lease)."""
        booking_id = row["booking_id"]
        error = ""
        try:
            appointment_id = row["his_appointment_id"]
            if appointment_id is None:
                found = await self.his.find_appointment(booking_id)
                appointment_id = found.appointment_id if found is not None else None
            if appointment_id is None:
                error = "no appointment in the HIS"
            else:
                await self.his.cancel_appointment(
                    appointment_id, row["cancel_reason"] or "cancelled"
                )
        except HisRefusedError as refused:
            error = f"refused: {refused.reason}"  # e.g. past: the visit has started
        except (HisUnavailableError, HisProtocolError) as failed:
            self.stats.cancellations_failed += 1
            self.stats.last_error = _text(failed)
            return
        self.stats.cancellations_sent += 1
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            await connection.execute(QUERIES["mark_his_cancelled"], booking_id, error)
        log.info("his.cancellation_sent", booking=booking_id, error=error or None)

    async def sweep(self) -> int:
        """Release again the units of bookings ended here whose release was lost."""
        async with acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as connection:
            rows = await connection.fetch(
                QUERIES["list_unreleased_bookings"],
                self.config.unreleased_after_s,
                self.config.batch_size,
                *self.scope.params(),
            )
        released = 0
        for row in rows:
            if await release_unit(self.store, row["booking_id"], reason_code(row["cancel_reason"])):
                released += 1
        self.stats.releases_retried += released
        return released

    async def run_once(self) -> int:
        """One batch of submissions and one of cancellations; how many were claimed."""
        return await self.submit_batch() + await self.cancel_batch()

    async def drain(self, *, timeout_s: float = 30.0) -> int:
        """Run batches until nothing due is left (tests, ``inventory dev``); the number
        of bookings claimed. Bookings waiting for a later retry are not waited for."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            claimed = await self.run_once()
            total += claimed
            if claimed == 0:
                break
        return total


async def run_submitter(submitter: Submitter, *, stop: asyncio.Event) -> None:
    """Submit until ``stop``: batches back to back while there is work, a poll interval
    apart when there is none; the sweep every ``sweep_interval_s``. A failed step (HIS,
    Redis or Postgres away) is logged and retried."""
    config = submitter.config
    last_sweep = 0.0
    backoff = Backoff(config.poll_interval_s, max(config.poll_interval_s, SUBMITTER_BACKOFF_MAX_S))
    while not stop.is_set():
        claimed = 0
        try:
            claimed = await submitter.run_once()
            if time.monotonic() - last_sweep >= config.sweep_interval_s:
                last_sweep = time.monotonic()
                await submitter.sweep()
        except TRANSIENT_ERRORS as error:
            submitter.stats.last_error = _text(error)
            delay = backoff.next_delay()
            log.warning(
                "his.submitter_failed",
                connection=submitter.connection,
                error=submitter.stats.last_error,
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        if claimed < config.batch_size:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.poll_interval_s)


def _text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
