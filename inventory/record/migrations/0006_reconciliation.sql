-- The HIS flows (issue 5): the submitter's bookkeeping on bookings, what the HIS last told
-- us about each slot (so capacity changes and other channels' bookings can be told
-- apart), and the reconciler's runs and findings. docs/his.md describes the flows.

-- The submitter (inventory/his/submitter.py) takes bookings confirmed -> submitted ->
-- his_confirmed; a failed attempt puts the booking back to confirmed with a later
-- his_next_attempt_at. his_appointment_id is the HIS's logical id of the Appointment
-- (needed to cancel it); his_cancelled_at is set once a cancellation here has reached
-- the HIS (or the HIS refused it for good: his_last_error says so).
ALTER TABLE bookings
    ADD COLUMN his_appointment_id  text CHECK (his_appointment_id ~ '^[A-Za-z0-9.-]{1,64}$'),
    ADD COLUMN his_attempts        integer NOT NULL DEFAULT 0 CHECK (his_attempts >= 0),
    ADD COLUMN his_next_attempt_at timestamptz,
    ADD COLUMN his_last_error      text NOT NULL DEFAULT '',
    ADD COLUMN his_cancelled_at    timestamptz;

-- Cancelled bookings that may still hold an appointment in the HIS (they were sent at
-- least once) and whose cancellation has not reached it yet: the submitter's second queue.
CREATE INDEX bookings_his_cancel_idx ON bookings (updated_at)
    WHERE status = 'cancelled' AND submitted_at IS NOT NULL AND his_cancelled_at IS NULL;

-- Per slot, the HIS capacity we last applied and the units we keep back for bookings
-- made on the hospital's other channels (window, phone): our capacity is
-- max(0, his_capacity - other_channel). The sync moves his_capacity; the reconciler
-- moves other_channel (and his_capacity when the sync has not run since a change).
CREATE TABLE his_slots (
    slot_id       inv_id PRIMARY KEY REFERENCES slots (id),
    his_capacity  integer NOT NULL CHECK (his_capacity >= 0),
    other_channel integer NOT NULL DEFAULT 0 CHECK (other_channel >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One comparison of HIS, Postgres and Redis over a window of visit dates.
CREATE TABLE reconciliation_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    -- fix: the policy's kinds were fixed; report: nothing was changed.
    mode        text NOT NULL CHECK (mode IN ('fix', 'report')),
    -- The kinds the policy fixes automatically (empty in report mode).
    policy      text[] NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'completed', 'failed')),
    -- kind -> differences found; kind -> differences fixed.
    found       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(found) = 'object'),
    fixed       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(fixed) = 'object'),
    error       text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK (first_day <= last_day),
    CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX reconciliation_runs_started_idx ON reconciliation_runs (started_at DESC);

-- One difference found by a run. subject names what differs (a booking, slot or
-- schedule id, or a HIS appointment id); detail holds ids and counts only, never
-- personal data.
CREATE TABLE reconciliation_items (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   bigint NOT NULL REFERENCES reconciliation_runs (id) ON DELETE CASCADE,
    kind     text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
    subject  text NOT NULL CHECK (subject <> ''),
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
    -- reported: left for a person; fixed: the policy's fix was applied; fix_failed: it
    -- was tried and did not work (error says why).
    action   text NOT NULL CHECK (action IN ('reported', 'fixed', 'fix_failed')),
    error    text NOT NULL DEFAULT ''
);
CREATE INDEX reconciliation_items_run_idx ON reconciliation_items (run_id, kind);
