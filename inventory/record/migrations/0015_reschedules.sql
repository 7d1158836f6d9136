-- Rescheduling (改约): a booking moved to another window keeps its payment. The move's
-- own row is written before its first store step and closed after its last, so that a
-- process dying between the steps of a move across tags leaves a row the worker finds
-- and finishes or undoes (inventory/booking/rescheduling.py). The fee difference of a
-- move to a cheaper window is refunded from the same payment: a payment may now have
-- several refunds, one per part.

CREATE TABLE reschedules (
    -- The new booking's id (a pure function of the account, the request's key and the
    -- target's tag, like a reserve's), so a retried request finds its row.
    id             inv_hold_id PRIMARY KEY,
    booking_id     inv_hold_id NOT NULL,   -- the booking moved
    account_id     inv_id NOT NULL,
    patient_id     inv_id NOT NULL,
    slot_id        inv_id NOT NULL,        -- the target slot
    -- patient: the patient's own move; substitution: an operator's offer (替诊) accepted.
    kind           text NOT NULL DEFAULT 'patient' CHECK (kind IN ('patient', 'substitution')),
    -- pending: steps may be under way; done: moved (money settled); aborted: not moved.
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'done', 'aborted')),
    old_amount_fen bigint NOT NULL CHECK (old_amount_fen >= 0),
    new_amount_fen bigint CHECK (new_amount_fen >= 0),
    refund_fen     bigint NOT NULL DEFAULT 0 CHECK (refund_fen >= 0),
    -- Until when the new booking's step may still happen (the old booking's mark).
    moving_until   timestamptz NOT NULL,
    -- Why it was aborted (the store's refusal code), for the answer and the audit.
    error          text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (id <> booking_id)
);
-- The worker's queue: moves whose steps may have been cut short.
CREATE INDEX reschedules_pending_idx ON reschedules (moving_until) WHERE status = 'pending';
CREATE INDEX reschedules_booking_idx ON reschedules (booking_id);

-- Refunds in parts: part 0 is the refund of what is left of the payment (cancellation,
-- HIS refusal, 停诊...), part n >= 1 the fee difference of the booking line's n-th move.
ALTER TABLE refunds ADD COLUMN part integer NOT NULL DEFAULT 0 CHECK (part >= 0);
ALTER TABLE refunds DROP CONSTRAINT refunds_payment_key;
ALTER TABLE refunds ADD CONSTRAINT refunds_payment_part_key UNIQUE (payment_id, part);
