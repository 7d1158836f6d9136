"""Facts that are instants, not changes: nothing writes a row when they happen, so the
notifier looks for them and records each once (its ``source_key`` makes a second look a
no-op).

* ``visit_reminder``: an open booking whose visit is tomorrow in its hospital's time
  zone, once the hospital's reminder time of today has passed (its own, else the
  configured default, 08:00). A booking made after that time still gets its reminder.
* ``ban_ended``: a ban whose ``banned_until`` has passed, whether it ran out or was
  lifted (a lift sets it to the moment of lifting), within the last two days, so a
  notifier that was down for a day still tells the patient, and an old ban is not
  announced again after a restore.
"""

from __future__ import annotations

from datetime import time
from typing import Any, Final

from inventory.record.pool import acquire

REMINDERS: Final = """
INSERT INTO notification_events (source_key, fact, booking_id, patient_id, hospital_id,
                                 detail)
SELECT 'reminder:' || b.id || ':' || s.visit_date, 'visit_reminder', b.id, b.patient_id,
       s.hospital_id, jsonb_build_object('visit_date', s.visit_date)
FROM schedules s
JOIN hospitals h ON h.id = s.hospital_id
LEFT JOIN notification_hospital_settings n ON n.hospital_id = h.id
JOIN bookings b ON b.schedule_id = s.id
WHERE s.visit_date BETWEEN current_date AND current_date + 2
  AND s.visit_date = (now() AT TIME ZONE h.timezone)::date + 1
  AND (now() AT TIME ZONE h.timezone)::time >= coalesce(n.reminder_time, $1::time)
  AND b.status IN ('confirmed', 'submitted', 'his_confirmed')
ON CONFLICT (source_key) DO NOTHING
"""

BAN_ENDS: Final = """
INSERT INTO notification_events (source_key, fact, patient_id, hospital_id, detail)
SELECT 'ban_end:' || patient_id || ':' || hospital_id || ':'
           || floor(extract(epoch FROM banned_until))::bigint,
       'ban_ended', patient_id, hospital_id,
       jsonb_build_object('banned_until', banned_until, 'reason', reason)
FROM patient_bans
WHERE banned_until <= now() AND banned_until > now() - interval '2 days'
ON CONFLICT (source_key) DO NOTHING
"""


async def scan(pool: Any, *, reminder_time: time) -> int:
    """Record the reminders and ends of bans that are due; how many were new."""
    async with acquire(pool) as connection:
        reminders = await connection.execute(REMINDERS, reminder_time)
        ends = await connection.execute(BAN_ENDS)
    return _count(reminders) + _count(ends)


def _count(status: str) -> int:
    """The row count of an ``INSERT 0 n`` command status."""
    return int(status.rsplit(" ", 1)[-1])
