"""Events -> deliveries: for each fact not yet planned, its kind (inventory/notify/kinds.py)
and one delivery per channel and recipient, in one transaction with marking the event
planned, so a crash plans an event again from the start and the unique (event, channel,
recipient) keeps the second plan from adding anything.

Who gets what:

* WeChat: each account of the kind's audience (the booking's account, or every account
  linked to the patient) that subscribed to the kind, when a template id is known for the
  kind (the hospital's, else the configured one);
* SMS: the patient, when a phone is on record (its ciphertext is only looked at for being
  there) and the kind goes by SMS always, or as the fallback when no WeChat message goes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import structlog

from inventory.notify.kinds import Fact, Kind, kind_of
from inventory.notify.settings import NotifySettings
from inventory.record.pool import acquire

log = structlog.get_logger(__name__)

TAKE_UNPLANNED: Final = """
SELECT e.id, e.source_key, e.fact, e.booking_id, e.patient_id, e.hospital_id, e.detail,
       coalesce(n.wechat_templates, '{}'::jsonb) AS hospital_templates
FROM notification_events e
LEFT JOIN notification_hospital_settings n ON n.hospital_id = e.hospital_id
WHERE e.planned_at IS NULL
ORDER BY e.id
LIMIT $1
FOR UPDATE OF e SKIP LOCKED
"""

#: A booking keeps its hold's id; a hold refunded without a booking has its account too.
BOOKING_ACCOUNTS: Final = "SELECT account_id FROM holds WHERE id = $1"
PATIENT_ACCOUNTS: Final = (
    "SELECT account_id FROM account_patients WHERE patient_id = $1 ORDER BY account_id"
)
SUBSCRIBED: Final = """
SELECT account_id FROM notification_subscriptions
WHERE kind = $1 AND account_id = ANY($2::text[])
ORDER BY account_id
"""
HAS_PHONE: Final = "SELECT phone_enc IS NOT NULL FROM patients WHERE id = $1"

INSERT_DELIVERY: Final = """
INSERT INTO notification_deliveries (event_id, kind, channel, recipient, idempotency_key)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING id
"""
MARK_PLANNED: Final = (
    "UPDATE notification_events SET planned_at = now() WHERE id = ANY($1::bigint[])"
)


def idempotency_key(source_key: str, channel: str, recipient: str) -> str:
    """The key of one delivery: a digest of (the fact's business key, channel,
    recipient), the same whichever process or database row plans it."""
    digest = hashlib.sha256(f"{source_key}\x1f{channel}\x1f{recipient}".encode())
    return digest.hexdigest()[:32]


async def plan_events(
    pool: Any, settings: NotifySettings, *, his: bool, limit: int = 200
) -> tuple[int, int]:
    """Plan up to ``limit`` events; (events planned, deliveries made)."""
    made = 0
    async with acquire(pool) as connection, connection.transaction():
        rows = await connection.fetch(TAKE_UNPLANNED, limit)
        for row in rows:
            kind = kind_of(Fact(row["fact"], row["detail"] or {}, his))
            if kind is None:
                continue
            for channel, recipient in await _targets(connection, row, kind, settings):
                key = idempotency_key(row["source_key"], channel, recipient)
                if await connection.fetchval(
                    INSERT_DELIVERY, row["id"], kind.name, channel, recipient, key
                ):
                    made += 1
        if rows:
            await connection.execute(MARK_PLANNED, [row["id"] for row in rows])
    if rows:
        log.debug("notify.planned", events=len(rows), deliveries=made)
    return len(rows), made


async def _targets(
    connection: Any, row: Any, kind: Kind, settings: NotifySettings
) -> list[tuple[str, str]]:
    """(channel, recipient) pairs for one event of ``kind``."""
    if kind.audience == "booking":
        account = await connection.fetchval(BOOKING_ACCOUNTS, row["booking_id"])
        accounts = [account] if account else []
    else:
        accounts = [
            r["account_id"] for r in await connection.fetch(PATIENT_ACCOUNTS, row["patient_id"])
        ]
    targets: list[tuple[str, str]] = []
    template = row["hospital_templates"].get(kind.name) or settings.wechat_templates.get(kind.name)
    if settings.wechat and template and accounts:
        subscribed = await connection.fetch(SUBSCRIBED, kind.name, accounts)
        targets += [("wechat", f"account:{r['account_id']}") for r in subscribed]
    if (
        settings.sms
        and row["patient_id"]
        and (kind.sms == "always" or not targets)
        and await connection.fetchval(HAS_PHONE, row["patient_id"])
    ):
        targets.append(("sms", f"patient:{row['patient_id']}"))
    return targets
