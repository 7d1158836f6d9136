"""The notifier: the worker's loop that plans events, sends due deliveries, scans for
reminders and ends of bans, and samples its gauges.

Like every worker loop it outlives Postgres outages (logs, backs off with jitter,
resumes) and ends only on a bug; a provider outage is not an error of the loop at all
but of single deliveries, which back off on their own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

import structlog

from inventory.notify.channels import Channel
from inventory.notify.kinds import KINDS
from inventory.notify.planner import plan_events
from inventory.notify.scanner import scan
from inventory.notify.sender import Sender
from inventory.notify.settings import NotifySettings
from inventory.notify.sms import HttpSmsChannel
from inventory.notify.wechat import WeChatSubscribeChannel
from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.privacy.crypto import FieldKeyring
from inventory.record.pool import acquire

log = structlog.get_logger(__name__)

#: The longest wait between two rounds after failures.
BACKOFF_MAX_S: Final = 30.0

SAMPLE: Final = """
SELECT channel, kind, count(*) AS waiting,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_s
FROM notification_deliveries
WHERE status = 'pending'
GROUP BY channel, kind
"""
SAMPLE_UNPLANNED: Final = """
SELECT count(*) AS waiting,
       coalesce(extract(epoch FROM now() - min(occurred_at)), 0)::float8 AS oldest_s
FROM notification_events WHERE planned_at IS NULL
"""
SAMPLE_DEAD: Final = """
SELECT d.channel, d.kind, count(*) AS open
FROM notification_dead_letters l
JOIN notification_deliveries d ON d.id = l.delivery_id
WHERE l.retried_at IS NULL
GROUP BY d.channel, d.kind
"""


def open_channels(settings: NotifySettings) -> dict[str, Channel]:
    """The configured channels."""
    channels: dict[str, Channel] = {}
    if settings.wechat:
        channels["wechat"] = WeChatSubscribeChannel(
            settings.wechat_url,
            settings.wechat_appid,
            settings.wechat_secret,
            timeout_s=settings.call_timeout_s,
        )
    if settings.sms:
        channels["sms"] = HttpSmsChannel(
            settings.sms_url, settings.sms_api_key, timeout_s=settings.call_timeout_s
        )
    return channels


async def run_notifier(
    pool: Any,
    settings: NotifySettings,
    *,
    keyring: FieldKeyring | None,
    his: bool,
    stop: asyncio.Event,
) -> None:
    """Notify until ``stop`` is set."""
    channels = open_channels(settings)
    metrics.declare_notification_kinds(KINDS)
    if "sms" in channels and keyring is None:
        # Phones cannot be read without the field keys: each SMS is retried (and shows in
        # the oldest-unsent age) until the worker has them, or dead-lettered.
        log.error("notify.sms_without_field_keys")
    sender = Sender(pool, channels, settings, keyring)
    backoff = Backoff(settings.interval_s, max(settings.interval_s, BACKOFF_MAX_S))
    last_scan = -float("inf")  # the first round scans
    log.info("notify.started", channels=sorted(channels), his=his)
    try:
        while not stop.is_set():
            busy = False
            try:
                if time.monotonic() - last_scan >= settings.scan_interval_s:
                    last_scan = time.monotonic()
                    await scan(pool, reminder_time=settings.reminder_time)
                planned, _ = await plan_events(pool, settings, his=his)
                sent = await sender.send_due()
                busy = planned > 0 or sent > 0
                await sample(pool)
            except TRANSIENT_ERRORS as error:
                delay = backoff.next_delay()
                log.warning(
                    "notify.loop_failed",
                    error=f"{type(error).__name__}: {error}"[:300],
                    failures=backoff.failures,
                    retry_in_s=round(delay, 2),
                )
                await sleep_unless_stopped(stop, delay)
                continue
            backoff.reset()
            if not busy:
                await sleep_unless_stopped(stop, settings.interval_s)
    finally:
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.close()


async def sample(pool: Any) -> None:
    """The gauges: deliveries waiting and the oldest's age by channel and kind, events
    not yet planned, open dead letters."""
    async with acquire(pool) as connection:
        pending = await connection.fetch(SAMPLE)
        unplanned = await connection.fetchrow(SAMPLE_UNPLANNED)
        dead = await connection.fetch(SAMPLE_DEAD)
    metrics.observe_notification_backlog(
        [(r["channel"], r["kind"], r["waiting"], r["oldest_s"]) for r in pending],
        unplanned=(unplanned["waiting"], unplanned["oldest_s"]),
        dead=[(r["channel"], r["kind"], r["open"]) for r in dead],
    )
