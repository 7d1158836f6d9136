"""What the API does with notifications: the operator's dead-letter view and retry, a
hospital's notification settings, and an account's WeChat subscriptions.

A retry puts the delivery back to pending with its attempts reset and the same
idempotency key, so a message the provider had taken after all is not sent twice.
"""

from __future__ import annotations

from datetime import time
from typing import Any, Final

from inventory.record.pool import acquire

LIST_DEAD_LETTERS: Final = """
SELECT l.id AS dead_letter_id, l.delivery_id, d.kind, d.channel, d.recipient, l.attempts,
       l.error, l.dead_at, e.fact, e.booking_id
FROM notification_dead_letters l
JOIN notification_deliveries d ON d.id = l.delivery_id
JOIN notification_events e ON e.id = d.event_id
WHERE l.retried_at IS NULL AND ($2::text[] IS NULL OR e.hospital_id = ANY($2::text[]))
ORDER BY l.dead_at DESC, l.id DESC
LIMIT $1
"""
#: The hospital a dead letter's message is about ('*' for a ban at every hospital), or no
#: row for an unknown dead letter.
DEAD_LETTER_HOSPITAL: Final = """
SELECT coalesce(e.hospital_id, '*') AS hospital_id
FROM notification_dead_letters l
JOIN notification_deliveries d ON d.id = l.delivery_id
JOIN notification_events e ON e.id = d.event_id
WHERE l.id = $1
"""

#: One statement: the dead letter closed and its delivery pending again, or no row (no
#: such dead letter, or retried already).
RETRY_DEAD_LETTER: Final = """
WITH letter AS (
    UPDATE notification_dead_letters
    SET retried_at = now()
    WHERE id = $1 AND retried_at IS NULL
    RETURNING id, delivery_id
), delivery AS (
    UPDATE notification_deliveries d
    SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = '',
        updated_at = now()
    FROM letter
    WHERE d.id = letter.delivery_id AND d.status = 'dead'
    RETURNING d.id, d.status
)
SELECT letter.id AS dead_letter_id, letter.delivery_id, delivery.status
FROM letter JOIN delivery ON delivery.id = letter.delivery_id
"""
DEAD_LETTER_EXISTS: Final = "SELECT retried_at FROM notification_dead_letters WHERE id = $1"

PUT_HOSPITAL_SETTINGS: Final = """
INSERT INTO notification_hospital_settings AS n
    (hospital_id, reminder_time, sms_sign, wechat_templates, wechat_page)
SELECT $1::text, $2::time, $3::text, $4::jsonb, $5::text
WHERE EXISTS (SELECT 1 FROM hospitals WHERE id = $1::text)
ON CONFLICT (hospital_id) DO UPDATE
    SET reminder_time = EXCLUDED.reminder_time, sms_sign = EXCLUDED.sms_sign,
        wechat_templates = EXCLUDED.wechat_templates, wechat_page = EXCLUDED.wechat_page,
        updated_at = now()
RETURNING hospital_id, reminder_time, sms_sign, wechat_templates, wechat_page,
          (xmax = 0) AS inserted
"""

PUT_SUBSCRIPTION: Final = """
INSERT INTO notification_subscriptions AS s (account_id, kind, openid)
VALUES ($1, $2, $3)
ON CONFLICT (account_id, kind) DO UPDATE SET openid = EXCLUDED.openid, subscribed_at = now()
RETURNING kind, openid, subscribed_at, (xmax = 0) AS inserted
"""
DELETE_SUBSCRIPTION: Final = """
DELETE FROM notification_subscriptions WHERE account_id = $1 AND kind = $2 RETURNING kind
"""
LIST_SUBSCRIPTIONS: Final = """
SELECT kind, openid, subscribed_at FROM notification_subscriptions
WHERE account_id = $1 ORDER BY kind
"""


async def list_dead_letters(
    pool: Any, *, hospitals: frozenset[str] | None, limit: int = 200
) -> list[dict[str, Any]]:
    """Dead letters no one has retried yet, newest first; of ``hospitals`` only unless
    None (a platform operator's view)."""
    scope = None if hospitals is None else sorted(hospitals)
    async with acquire(pool) as connection:
        return [dict(row) for row in await connection.fetch(LIST_DEAD_LETTERS, limit, scope)]


async def dead_letter_hospital(pool: Any, dead_letter_id: int) -> str | None:
    """The hospital a dead letter is about (``*``: every hospital), None if unknown."""
    async with acquire(pool) as connection:
        found: str | None = await connection.fetchval(DEAD_LETTER_HOSPITAL, dead_letter_id)
    return found


async def retry_dead_letter(pool: Any, dead_letter_id: int) -> dict[str, Any] | str:
    """Send a dead letter's delivery again: its new state, or ``"not_found"`` /
    ``"retried"`` (retried before)."""
    async with acquire(pool) as connection, connection.transaction():
        row = await connection.fetchrow(RETRY_DEAD_LETTER, dead_letter_id)
        if row is not None:
            return dict(row)
        exists = await connection.fetchrow(DEAD_LETTER_EXISTS, dead_letter_id)
    return "not_found" if exists is None else "retried"


async def put_hospital_settings(
    pool: Any,
    hospital_id: str,
    *,
    reminder_time: time,
    sms_sign: str,
    wechat_templates: dict[str, str],
    wechat_page: str,
) -> dict[str, Any] | None:
    """Store a hospital's settings; the row (with ``inserted``), or None for an unknown
    hospital."""
    async with acquire(pool) as connection:
        row = await connection.fetchrow(
            PUT_HOSPITAL_SETTINGS,
            hospital_id,
            reminder_time,
            sms_sign,
            wechat_templates,
            wechat_page,
        )
    return None if row is None else dict(row)


async def put_subscription(pool: Any, account_id: str, kind: str, openid: str) -> dict[str, Any]:
    """Record that the account accepted the kind's template (with ``inserted``)."""
    async with acquire(pool) as connection:
        return dict(await connection.fetchrow(PUT_SUBSCRIPTION, account_id, kind, openid))


async def delete_subscription(pool: Any, account_id: str, kind: str) -> bool:
    """Forget a subscription; whether there was one."""
    async with acquire(pool) as connection:
        return await connection.fetchval(DELETE_SUBSCRIPTION, account_id, kind) is not None


async def list_subscriptions(pool: Any, account_id: str) -> list[dict[str, Any]]:
    """The account's subscriptions."""
    async with acquire(pool) as connection:
        return [dict(row) for row in await connection.fetch(LIST_SUBSCRIPTIONS, account_id)]
