-- A move (改约, 替诊) to a dearer window charges the fee difference instead of being
-- refused: the move holds the new unit and starts a payment for the difference (its own
-- payments row, hold_id = the move's new booking id, so payment_id_for(new id) names it);
-- it completes only when that payment is settled, in the transaction that settles it.
-- Unpaid by the hold's deadline, the unit is freed and the old booking kept. charge_fen
-- is the difference (0: the old payment covers the new fee, as before).
ALTER TABLE reschedules
    ADD COLUMN charge_fen bigint NOT NULL DEFAULT 0 CHECK (charge_fen >= 0);
