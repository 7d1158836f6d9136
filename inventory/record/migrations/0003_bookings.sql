-- Holds, bookings, their status history, payments and refunds: the durable record of what
-- the Redis state machine did (written from its outbox events, and by the confirm path,
-- which answers only once the booking is here) and of what happened after (HIS, money).

-- Hold states only move forward: held -> booked -> cancelled, held -> released | expired.
-- Writers therefore order their writes of one hold by (state rank, event seq), which lets a
-- writer without a seq (the confirm path, seq 0) and a redelivered or reordered outbox event
-- meet without ever moving a hold backwards.
CREATE FUNCTION inv_hold_state_rank(state text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT CASE state WHEN 'held' THEN 0 WHEN 'booked' THEN 1 ELSE 2 END $$;

CREATE TABLE holds (
    -- "<department_id>.<yyyymmdd>.<token>": a pure function of (account, Idempotency-Key,
    -- tag), so a retried reserve lands on the same row.
    id           inv_hold_id PRIMARY KEY,
    tag          inv_tag NOT NULL,
    slot_id      inv_id NOT NULL,
    schedule_id  inv_id NOT NULL,
    account_id   inv_id NOT NULL,
    patient_id   inv_id NOT NULL REFERENCES patients (id),
    channel      text NOT NULL CHECK (channel ~ '^[a-z0-9_]{1,32}$'),
    amount_fen   bigint NOT NULL CHECK (amount_fen >= 0),
    state        text NOT NULL
                 CHECK (state IN ('held', 'booked', 'released', 'expired', 'cancelled')),
    deadline     timestamptz NOT NULL,     -- payment deadline (after its one extension)
    extended     boolean NOT NULL DEFAULT false,
    payment_ref  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,     -- when the store made the hold, not this row
    confirmed_at timestamptz,
    ended_at     timestamptz,
    end_reason   text NOT NULL DEFAULT '',
    -- Seq of the tag's event this row reflects; 0 when written from a store reply.
    last_seq     bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The hold id names its tag; a row under another tag would be rebuilt into the wrong one.
    CHECK (tag::text = split_part(id, '.', 1) || ':' || split_part(id, '.', 2)),
    CHECK (state <> 'booked' OR (confirmed_at IS NOT NULL AND payment_ref <> '')),
    CHECK ((state IN ('released', 'expired', 'cancelled')) = (ended_at IS NOT NULL)),
    -- The slot belongs to the schedule (slots' UNIQUE (id, schedule_id)).
    FOREIGN KEY (slot_id, schedule_id) REFERENCES slots (id, schedule_id)
);
-- An account's holds, newest first (list_account_holds).
CREATE INDEX holds_account_idx ON holds (account_id, created_at DESC, id DESC);
-- Rebuilding a tag reads its open units; rebuilding a patient tag, the patient's.
CREATE INDEX holds_open_tag_idx ON holds (tag) WHERE state IN ('held', 'booked');
CREATE INDEX holds_open_patient_idx ON holds (patient_id) WHERE state IN ('held', 'booked');
-- Supports the slot foreign key (capacity changes, slot deletion).
CREATE INDEX holds_slot_idx ON holds (slot_id, schedule_id);

-- A paid hold: what goes on to the HIS. Same id as its hold.
--   confirmed -> submitted -> his_confirmed -> visited | no_show
--   submitted -> rejected                        (HIS refused: released and refunded)
--   confirmed | submitted | his_confirmed -> cancelled   (patient, operator, 停诊)
CREATE TABLE bookings (
    id                 inv_hold_id PRIMARY KEY REFERENCES holds (id),
    -- Copied from the hold so that an account's bookings are read from one index.
    tag                inv_tag NOT NULL,
    slot_id            inv_id NOT NULL,
    schedule_id        inv_id NOT NULL REFERENCES schedules (id),
    account_id         inv_id NOT NULL,
    patient_id         inv_id NOT NULL REFERENCES patients (id),
    amount_fen         bigint NOT NULL CHECK (amount_fen >= 0),
    payment_ref        text NOT NULL CHECK (payment_ref <> ''),
    status             text NOT NULL DEFAULT 'confirmed'
                       CHECK (status IN ('confirmed', 'submitted', 'his_confirmed', 'rejected',
                                         'cancelled', 'visited', 'no_show')),
    confirmed_at       timestamptz NOT NULL,
    -- What the HIS handed back (DESIGN.md: appointment number, visit time and place).
    his_appointment_no text,
    visit_time         timestamptz,
    place              text,
    submitted_at       timestamptz,
    his_confirmed_at   timestamptz,
    cancelled_at       timestamptz,
    cancel_reason      text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (status NOT IN ('his_confirmed', 'visited', 'no_show') OR his_appointment_no IS NOT NULL),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    FOREIGN KEY (slot_id, schedule_id) REFERENCES slots (id, schedule_id)
);
-- An account's bookings, newest first, with keyset pagination (list_account_bookings).
CREATE INDEX bookings_account_idx ON bookings (account_id, confirmed_at DESC, id DESC);
-- The HIS submitter's queue: bookings not yet accepted by the HIS.
CREATE INDEX bookings_his_pending_idx ON bookings (updated_at)
    WHERE status IN ('confirmed', 'submitted');
-- A suspension (停诊) or a reconciliation walks the bookings of one schedule.
CREATE INDEX bookings_schedule_idx ON bookings (schedule_id, status);
CREATE INDEX bookings_slot_idx ON bookings (slot_id, schedule_id);
-- No-show counting for the blacklist rule.
CREATE INDEX bookings_patient_idx ON bookings (patient_id, confirmed_at DESC);

-- Every change of a hold's state or a booking's status, for audit (booking records are
-- health information, PIPL Art. 28) and for the patient's timeline. event_key makes a
-- redelivered change a no-op: "<tag>#<seq>" for a store event, the writer's own key
-- (e.g. "his:<hold_id>:submitted") otherwise.
CREATE TABLE booking_status_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hold_id     inv_hold_id NOT NULL REFERENCES holds (id),
    from_status text,                       -- NULL for the first entry (hold created)
    to_status   text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,       -- when it happened, per the writer's clock
    event_key   text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT booking_status_history_event_key UNIQUE (event_key)
);
CREATE INDEX booking_status_history_hold_idx ON booking_status_history (hold_id, at, id);

CREATE TABLE payments (
    -- Our order number (WeChat Pay out_trade_no: 6-32 of [A-Za-z0-9_-]).
    id              inv_id PRIMARY KEY,
    -- No foreign key to holds: payment starts while the hold's outbox event may still be on
    -- its way to Postgres; the reconciler checks that every hold_id here exists.
    hold_id         inv_hold_id NOT NULL,
    account_id      inv_id NOT NULL,
    provider        text NOT NULL CHECK (provider ~ '^[a-z0-9_]{1,32}$'),
    amount_fen      bigint NOT NULL CHECK (amount_fen >= 0),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'paid', 'closed', 'failed')),
    -- The provider's transaction id, once paid: unique per provider, so a repeated payment
    -- notification finds the row it already wrote instead of recording the money twice.
    provider_txn_id text,
    paid_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_provider_txn_key UNIQUE (provider, provider_txn_id),
    CHECK (status <> 'paid' OR (provider_txn_id IS NOT NULL AND paid_at IS NOT NULL))
);
-- Payments of a hold (paid after expiry -> refund; two payments for one hold -> refund one).
CREATE INDEX payments_hold_idx ON payments (hold_id);
CREATE INDEX payments_account_idx ON payments (account_id, created_at DESC);

CREATE TABLE refunds (
    id                 inv_id PRIMARY KEY,  -- our refund number (out_refund_no)
    payment_id         inv_id NOT NULL REFERENCES payments (id),
    hold_id            inv_hold_id NOT NULL,
    provider           text NOT NULL CHECK (provider ~ '^[a-z0-9_]{1,32}$'),
    amount_fen         bigint NOT NULL CHECK (amount_fen > 0),
    -- expired_after_payment, his_rejected, patient_cancelled, suspended, duplicate_payment...
    reason             text NOT NULL CHECK (reason ~ '^[a-z_]{1,40}$'),
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_refund_id text,
    succeeded_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- A registration fee is refunded whole and once: a failed refund is retried on the same
    -- row (same out_refund_no, which the provider de-duplicates), never by a second row.
    CONSTRAINT refunds_payment_key UNIQUE (payment_id),
    CONSTRAINT refunds_provider_refund_key UNIQUE (provider, provider_refund_id),
    CHECK (status <> 'succeeded' OR succeeded_at IS NOT NULL)
);
CREATE INDEX refunds_hold_idx ON refunds (hold_id);
-- The refund worker's queue.
CREATE INDEX refunds_open_idx ON refunds (created_at) WHERE status <> 'succeeded';
