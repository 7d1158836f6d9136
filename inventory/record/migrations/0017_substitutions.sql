-- Doctor substitution (替诊): an operator offers a suspended schedule's patients another
-- doctor's schedule; each patient accepts (the booking moves there: a reschedule of kind
-- substitution) or declines (cancelled and refunded). While an offer is live the
-- suspension leaves its booking alone (inventory/booking/substitution.py).
CREATE TABLE substitution_offers (
    booking_id         inv_hold_id PRIMARY KEY,  -- one offer per booking
    schedule_id        inv_id NOT NULL,          -- the suspended schedule
    target_schedule_id inv_id NOT NULL REFERENCES schedules (id),
    -- offered: waiting for the patient until respond_by; accepting: its move is under
    -- way; accepted (new_booking_id set); declined.
    status             text NOT NULL DEFAULT 'offered'
                       CHECK (status IN ('offered', 'accepting', 'accepted', 'declined')),
    respond_by         timestamptz NOT NULL,
    new_booking_id     inv_hold_id,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'accepted') = (new_booking_id IS NOT NULL))
);
-- The suspension's look-up of the bookings it must leave alone.
CREATE INDEX substitution_offers_schedule_idx ON substitution_offers (schedule_id, status);
