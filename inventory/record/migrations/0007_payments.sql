-- Payments with a provider (WeChat Pay API v3, see docs/payments.md): what a payment needs
-- to be settled without its hold (a late or lost hold is re-reserved from these columns),
-- the booking it bought, and the leases of the payment and refund loops.

ALTER TABLE payments
    ADD COLUMN currency      text NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    -- jsapi: inside WeChat (mini-program, official account); native: a QR code to scan.
    ADD COLUMN method        text NOT NULL DEFAULT 'jsapi' CHECK (method IN ('jsapi', 'native')),
    -- The hold as it was when the payment started: a payment that arrives after the hold
    -- ended (or after Redis lost it) takes a unit of the same slot for the same patient.
    ADD COLUMN slot_id       inv_id,
    ADD COLUMN patient_id    inv_id,
    ADD COLUMN channel       text,
    -- The hold's deadline after the one extension that starting the payment gives.
    ADD COLUMN hold_deadline timestamptz,
    ADD COLUMN prepay_id     text,
    -- The booking this money bought: the hold itself, or the hold re-reserved for a payment
    -- that came after the deadline. NULL when the payment was settled by a refund instead.
    ADD COLUMN booking_id    inv_hold_id,
    -- When the payment's booking or its refund request was committed (with status paid).
    ADD COLUMN settled_at    timestamptz,
    -- The payment loop looks at a pending payment again from this instant (its lease).
    ADD COLUMN next_check_at timestamptz NOT NULL DEFAULT now();

-- request_refund finds the payment that bought a booking.
CREATE INDEX payments_booking_idx ON payments (booking_id) WHERE booking_id IS NOT NULL;
-- The payment loop's queue: pending payments by when to look at them again.
CREATE INDEX payments_pending_idx ON payments (next_check_at) WHERE status = 'pending';

ALTER TABLE refunds
    -- The Idempotency-Key of the request that created the refund (for audit; a payment is
    -- refunded once whatever the key).
    ADD COLUMN request_key     text NOT NULL DEFAULT '',
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN last_error      text NOT NULL DEFAULT '',
    -- The refund loop tries an open refund again from this instant (back-off and lease).
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX refunds_due_idx ON refunds (next_attempt_at) WHERE status <> 'succeeded';
