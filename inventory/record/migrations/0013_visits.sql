-- Visits: a booking checked in (签到/取号, at a kiosk, by staff, or as the HIS reports it)
-- becomes visited, one never checked in by the end of its session plus the hospital's
-- grace becomes no_show; the consultation's start and end when the HIS gives them (the
-- capacity model's service time); and the no-show rule's bans with their history.
ALTER TABLE bookings
    ADD COLUMN checked_in_at           timestamptz,
    ADD COLUMN checked_in_by           text CHECK (checked_in_by IN ('his', 'staff', 'kiosk')),
    ADD COLUMN consultation_started_at timestamptz,
    ADD COLUMN consultation_ended_at   timestamptz,
    ADD COLUMN no_show_at              timestamptz,
    -- Set once the no-show rule has looked at this no-show (banned or not): a worker that
    -- dies in between looks again, and never twice after.
    ADD COLUMN ban_checked_at          timestamptz,
    ADD CHECK (status <> 'visited' OR checked_in_at IS NOT NULL),
    ADD CHECK (status <> 'no_show' OR no_show_at IS NOT NULL),
    ADD CHECK (consultation_ended_at IS NULL OR consultation_started_at IS NULL
               OR consultation_ended_at >= consultation_started_at);

-- A visit or a no-show needed the HIS's appointment number; a hospital that runs without
-- a HIS connection checks its patients in too, so only his_confirmed keeps the rule.
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'bookings'::regclass AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%his_appointment_no IS NOT NULL%'
    LOOP
        EXECUTE format('ALTER TABLE bookings DROP CONSTRAINT %I', name);
    END LOOP;
END
$$;
ALTER TABLE bookings ADD CONSTRAINT bookings_his_confirmed_number
    CHECK (status <> 'his_confirmed' OR his_appointment_no IS NOT NULL);

-- The no-show rule's queue: no-shows it has not looked at yet.
CREATE INDEX bookings_no_show_unchecked_idx ON bookings (no_show_at)
    WHERE status = 'no_show' AND ban_checked_at IS NULL;
-- The no-show sweep walks the schedules whose sessions ended lately.
CREATE INDEX schedules_ends_at_idx ON schedules (ends_at);

-- Every ban decision and every lift, for audit and for the patient's appeal: who decided
-- (the no-show rule or an operator's account), why, and which no-shows counted. The
-- current ban is patient_bans (and the patient tag in Redis); this table only grows.
-- event_key makes a decision repeated after a crash one row.
CREATE TABLE patient_ban_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key    text NOT NULL CHECK (event_key <> ''),
    patient_id   inv_id NOT NULL REFERENCES patients (id),
    hospital_id  text NOT NULL CHECK (hospital_id = '*' OR hospital_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    action       text NOT NULL CHECK (action IN ('banned', 'lifted')),
    banned_until timestamptz,
    reason       text NOT NULL CHECK (reason <> ''),
    decided_by   text NOT NULL CHECK (decided_by <> ''),
    no_shows     text[] NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL,
    CONSTRAINT patient_ban_history_event_key UNIQUE (event_key),
    CHECK ((action = 'banned') = (banned_until IS NOT NULL))
);
CREATE INDEX patient_ban_history_patient_idx ON patient_ban_history (patient_id, hospital_id, at);
