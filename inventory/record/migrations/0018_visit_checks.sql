-- A visited booking without its check-in time, or a no-show without its time, is allowed
-- again: writers other than the visits code (a data import, a correction by hand, the
-- HIS flows of a future version) may settle a visit without them, and the readers take
-- the booking's last change instead (list_unchecked_no_shows, list_patient_no_shows).
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'bookings'::regclass AND contype = 'c'
          AND (pg_get_constraintdef(oid) LIKE '%checked_in_at IS NOT NULL%'
               OR pg_get_constraintdef(oid) LIKE '%no_show_at IS NOT NULL%')
    LOOP
        EXECUTE format('ALTER TABLE bookings DROP CONSTRAINT %I', name);
    END LOOP;
END
$$;
