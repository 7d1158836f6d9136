-- Events decided in Postgres after the reserve path, for whoever tells the patient (the
-- notifier) and for audit: a booking the hospital ended (停诊, a HIS refusal), a visit
-- checked in or missed, a ban decided or lifted. Written in the transaction that makes
-- the change, so an event exists exactly when its change does (a transactional outbox);
-- event_key makes a repeated write of the same change a no-op. Readers go by id; ids
-- are taken at insert, so a reader that must not miss a late commit re-reads a short
-- window behind the newest id it has seen.
CREATE TABLE lifecycle_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key   text NOT NULL CHECK (event_key <> ''),
    type        text NOT NULL CHECK (type ~ '^[a-z_]{1,48}$'),
    hospital_id text,
    patient_id  inv_id,
    booking_id  inv_hold_id,
    schedule_id inv_id,
    at          timestamptz NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lifecycle_events_event_key UNIQUE (event_key)
);
CREATE INDEX lifecycle_events_booking_idx ON lifecycle_events (booking_id)
    WHERE booking_id IS NOT NULL;
CREATE INDEX lifecycle_events_patient_idx ON lifecycle_events (patient_id, at)
    WHERE patient_id IS NOT NULL;

-- Why a schedule is suspended (停诊), as the operator or the HIS gave it: the worker that
-- cancels its bookings shows it to the patient ("suspended: <reason>"). status_source says
-- who decided it: a schedule an operator suspended stays suspended when the HIS still
-- lists it as active (only an operator reopens it); '' for rows older than the column.
ALTER TABLE schedules
    ADD COLUMN status_reason text NOT NULL DEFAULT '',
    ADD COLUMN status_source text NOT NULL DEFAULT ''
        CHECK (status_source IN ('', 'his', 'operator'));
-- The worker's sweep: suspended schedules of the days still to come.
CREATE INDEX schedules_suspended_idx ON schedules (visit_date) WHERE status = 'suspended';
