-- A doctor's-day waitlist entry (any window of a doctor's day): its doctor and the
-- schedules it waits on, so the record tells it from one schedule's entry and a rebuild
-- can queue it again on each of them. One schedule's entry keeps NULL and '{}'.
ALTER TABLE waitlist_entries
    ADD COLUMN doctor_id inv_id,
    ADD COLUMN day_schedule_ids text[] NOT NULL DEFAULT '{}';
