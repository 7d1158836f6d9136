"""Deliveries -> providers, at least once, each at most once beyond what the provider
de-duplicates.

One attempt of a delivery:

1. *claim* (committed): attempts + 1 and ``next_attempt_at`` = now + the lease, so no other
   sender takes it while this one works, and a sender that dies is replaced once the
   lease is over;
2. *send*: the message is rendered from the booking as it is now, the address read (the
   openid of the account's subscription) or decrypted (the patient's phone) right here,
   and the provider called with the delivery's idempotency key;
3. *record*: sent, or a later attempt (back-off), or the dead letter.

A crash between 2 and 3 leaves the delivery pending: it is claimed again after the lease
and sent again with the same key, which the provider answers with the first message.

Addresses and texts never reach a log line: lines name the delivery, its kind and
channel, and the error's short code.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog

from inventory.notify.channels import (
    Channel,
    Outgoing,
    PermanentSendError,
    SendError,
)
from inventory.notify.kinds import KINDS
from inventory.notify.settings import NotifySettings
from inventory.notify.templates import (
    HospitalTemplates,
    MessageContext,
    sms_text,
    wechat_message,
)
from inventory.ops import metrics
from inventory.privacy.crypto import FieldCryptoError, FieldKeyring
from inventory.record.pool import acquire

log = structlog.get_logger(__name__)

CLAIM_DUE: Final = """
UPDATE notification_deliveries d
SET attempts = d.attempts + 1,
    next_attempt_at = now() + make_interval(secs => $2::double precision),
    updated_at = now()
FROM notification_events e
WHERE d.event_id = e.id AND d.id IN (
    SELECT id FROM notification_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING d.id, d.kind, d.channel, d.recipient, d.idempotency_key, d.attempts,
          e.booking_id, e.patient_id, e.hospital_id, e.detail
"""

#: A booking's (or a hold's: a payment that came after its hold ended is refunded
#: without a booking) where and when, with what the HIS gave when it did.
BOOKING_CONTEXT: Final = """
SELECT hp.name AS hospital_name, hp.timezone AS hospital_timezone,
       dep.name AS department_name, doc.name AS doctor_name,
       coalesce(b.visit_time, sl.starts_at) AS visit_at, coalesce(b.place, s.location) AS place,
       b.his_appointment_no, h.amount_fen
FROM holds h
JOIN slots sl ON sl.id = h.slot_id
JOIN schedules s ON s.id = h.schedule_id
JOIN doctors doc ON doc.id = s.doctor_id
JOIN departments dep ON dep.id = s.department_id
JOIN hospitals hp ON hp.id = s.hospital_id
LEFT JOIN bookings b ON b.id = h.id
WHERE h.id = $1
"""
HOSPITAL: Final = "SELECT name, timezone FROM hospitals WHERE id = $1"
HOSPITAL_SETTINGS: Final = """
SELECT sms_sign, wechat_templates, wechat_page
FROM notification_hospital_settings WHERE hospital_id = $1
"""
OPENID: Final = """
SELECT openid FROM notification_subscriptions WHERE account_id = $1 AND kind = $2
"""
PHONE: Final = "SELECT phone_enc FROM patients WHERE id = $1"

MARK_SENT: Final = """
UPDATE notification_deliveries
SET status = 'sent', sent_at = now(), provider_message_id = $2, last_error = '',
    updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
MARK_SKIPPED: Final = """
UPDATE notification_deliveries
SET status = 'skipped', last_error = $2, updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
RETRY_LATER: Final = """
UPDATE notification_deliveries
SET next_attempt_at = now() + make_interval(secs => $2::double precision), last_error = $3,
    updated_at = now()
WHERE id = $1 AND status = 'pending'
"""
MARK_DEAD: Final = """
WITH dead AS (
    UPDATE notification_deliveries
    SET status = 'dead', last_error = $2, updated_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING id, attempts
)
INSERT INTO notification_dead_letters (delivery_id, error, attempts)
SELECT id, $2, attempts FROM dead
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery taken for an attempt."""

    id: int
    kind: str
    channel: str
    recipient: str
    key: str
    attempts: int
    booking_id: str | None
    patient_id: str | None
    hospital_id: str | None
    detail: Mapping[str, Any]


def retry_delay_s(attempts: int, settings: NotifySettings, rng: random.Random) -> float:
    """The wait after the ``attempts``-th failed attempt: doubling from the first delay up
    to the cap, drawn in [delay/2, delay] so deliveries that failed together (a provider
    outage) do not come back in step."""
    delay = min(settings.retry_max_s, settings.retry_initial_s * 2 ** max(attempts - 1, 0))
    return rng.uniform(delay / 2, delay)


class Sender:
    """Claims due deliveries and sends them through their channels."""

    def __init__(
        self,
        pool: Any,
        channels: Mapping[str, Channel],
        settings: NotifySettings,
        keyring: FieldKeyring | None,
        *,
        concurrency: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._settings = settings
        self._keyring = keyring
        self._concurrency = concurrency
        self._rng = rng or random.Random()

    async def send_due(self, *, limit: int = 50) -> int:
        """One round: claim up to ``limit`` due deliveries and attempt each; how many."""
        async with acquire(self._pool) as connection:
            rows = await connection.fetch(CLAIM_DUE, limit, self._settings.lease_s)
        claimed = [
            Claimed(
                r["id"],
                r["kind"],
                r["channel"],
                r["recipient"],
                r["idempotency_key"],
                r["attempts"],
                r["booking_id"],
                r["patient_id"],
                r["hospital_id"],
                r["detail"] or {},
            )
            for r in rows
        ]
        gate = asyncio.Semaphore(self._concurrency)

        async def attempt(delivery: Claimed) -> None:
            async with gate:
                await self._attempt(delivery)

        await asyncio.gather(*(attempt(d) for d in claimed))
        return len(claimed)

    async def _attempt(self, delivery: Claimed) -> None:
        labels = (delivery.channel, delivery.kind)
        channel = self._channels.get(delivery.channel)
        if channel is None:
            # Planned while the channel was configured, which it is no longer: retried
            # until it comes back or the attempts run out (then the operator sees it).
            await self._failed(delivery, "channel_off", "the channel is not configured")
            return
        if delivery.channel == "sms" and self._keyring is None:
            # No field keys, no phone: wait (and show in the unsent age) until the worker
            # is given them, rather than skip a message it could send then.
            await self._failed(delivery, "no_field_keys", "the worker has no field keys")
            return
        try:
            async with acquire(self._pool) as connection:
                outgoing = await self._render(connection, delivery)
        except FieldCryptoError as error:
            # A ciphertext no configured key opens: no retry helps, the operator must.
            await self._dead(delivery, f"phone_undecryptable: {type(error).__name__}")
            return
        if isinstance(outgoing, str):
            async with acquire(self._pool) as connection:
                await connection.execute(MARK_SKIPPED, delivery.id, outgoing)
            metrics.observe_notification("skipped", *labels)
            log.info(
                "notify.skipped",
                delivery=delivery.id,
                kind=delivery.kind,
                channel=delivery.channel,
                reason=outgoing,
            )
            return
        try:
            message_id = await channel.send(outgoing)
        except PermanentSendError as error:
            metrics.observe_notification("failed", *labels)
            await self._dead(delivery, error.code)
            return
        except SendError as error:
            await self._failed(delivery, error.code, str(error))
            return
        async with acquire(self._pool) as connection:
            await connection.execute(MARK_SENT, delivery.id, message_id)
        metrics.observe_notification("sent", *labels)
        log.info(
            "notify.sent",
            delivery=delivery.id,
            kind=delivery.kind,
            channel=delivery.channel,
            attempts=delivery.attempts,
        )

    async def _failed(self, delivery: Claimed, code: str, message: str) -> None:
        metrics.observe_notification("failed", delivery.channel, delivery.kind)
        if delivery.attempts >= self._settings.max_attempts:
            await self._dead(delivery, f"{code}: attempts exhausted")
            return
        delay = retry_delay_s(delivery.attempts, self._settings, self._rng)
        async with acquire(self._pool) as connection:
            await connection.execute(RETRY_LATER, delivery.id, delay, code)
        metrics.observe_notification("retried", delivery.channel, delivery.kind)
        log.warning(
            "notify.retry",
            delivery=delivery.id,
            kind=delivery.kind,
            channel=delivery.channel,
            error=code,
            attempts=delivery.attempts,
            retry_in_s=round(delay, 1),
        )

    async def _dead(self, delivery: Claimed, error: str) -> None:
        async with acquire(self._pool) as connection:
            await connection.execute(MARK_DEAD, delivery.id, error)
        metrics.observe_notification("dead_lettered", delivery.channel, delivery.kind)
        log.error(
            "notify.dead_letter",
            delivery=delivery.id,
            kind=delivery.kind,
            channel=delivery.channel,
            error=error,
            attempts=delivery.attempts,
        )

    async def _render(self, connection: Any, delivery: Claimed) -> Outgoing | str:
        """The message ready to send, or why there is nothing to send any more."""
        context = await _context(connection, delivery)
        if context is None:
            return "subject_gone"
        hospital = await self._hospital(connection, delivery.hospital_id, context.hospital)
        kind = KINDS.get(delivery.kind)
        if kind is None:
            return "unknown_kind"
        if delivery.channel == "wechat":
            account_id = delivery.recipient.removeprefix("account:")
            openid = await connection.fetchval(OPENID, account_id, kind.name)
            if openid is None:
                return "unsubscribed"
            message = wechat_message(kind.name, context, hospital)
            if message is None:
                return "no_template"
            return Outgoing(address=openid, key=delivery.key, wechat=message)
        patient_id = delivery.recipient.removeprefix("patient:")
        blob = await connection.fetchval(PHONE, patient_id)
        if blob is None or self._keyring is None:  # (no keyring: refused before the claim)
            return "no_phone"
        phone = self._keyring.decrypt(blob, table="patients", column="phone", row_id=patient_id)
        return Outgoing(
            address=phone,
            key=delivery.key,
            sms_text=sms_text(kind.name, context, hospital),
            sms_sign=hospital.sign,
        )

    async def _hospital(
        self, connection: Any, hospital_id: str | None, name: str
    ) -> HospitalTemplates:
        row = None
        if hospital_id:
            row = await connection.fetchrow(HOSPITAL_SETTINGS, hospital_id)
        templates = dict(self._settings.wechat_templates)
        if row is None:
            return HospitalTemplates(
                sign=self._settings.sms_sign or name, wechat_templates=templates
            )
        templates.update(row["wechat_templates"] or {})
        return HospitalTemplates(
            sign=row["sms_sign"] or self._settings.sms_sign or name,
            wechat_templates=templates,
            page=row["wechat_page"],
        )


async def _context(connection: Any, delivery: Claimed) -> MessageContext | None:
    """What the message says, read now (the booking's latest number, time and place)."""
    detail = delivery.detail
    reason = str(detail.get("reason") or "")
    words = reason.split(":", 1)[1].strip() if ":" in reason else ""
    amount = detail.get("amount_fen")
    if delivery.booking_id and KINDS[delivery.kind].audience == "booking":
        row = await connection.fetchrow(BOOKING_CONTEXT, delivery.booking_id)
        if row is None:
            return None
        return MessageContext(
            hospital=row["hospital_name"],
            timezone=row["hospital_timezone"],
            department=row["department_name"],
            doctor=row["doctor_name"],
            visit_at=row["visit_at"],
            place=row["place"] or "",
            his_no=row["his_appointment_no"] or "",
            amount_fen=int(amount) if amount is not None else row["amount_fen"],
            reason=words,
            # An offer's answer-by or pay-by instant (waitlist, substitution).
            until=_instant(detail.get("deadline") or detail.get("respond_by")),
            booking_id=delivery.booking_id,
        )
    hospital_name, zone = "各合作医院", "Asia/Shanghai"
    if delivery.hospital_id and delivery.hospital_id != "*":
        row = await connection.fetchrow(HOSPITAL, delivery.hospital_id)
        if row is not None:
            hospital_name, zone = row["name"], row["timezone"]
    return MessageContext(
        hospital=hospital_name,
        timezone=zone,
        until=_instant(detail.get("banned_until")),
        reason=words,
    )


def _instant(value: Any) -> datetime | None:
    """An instant of a fact's detail (ISO text, as jsonb writes it), or None."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None
