-- Three more facts worth a message, recorded like the others in the transaction that
-- makes them (docs/notifications.md):
--   waitlist_offered      a waitlist entry got its offer (a unit held for the patient
--                         until the offer's deadline), as the persister records it
--   substitution_offered  an operator offered a suspended schedule's booking another
--                         doctor's schedule (替诊)
--   booking_rescheduled   a move (改约, or an accepted substitution) is done
-- The last two are lifecycle events (the booking's own outbox, written by the code that
-- decides them); the trigger copies those two types into notification_events, so the
-- notifier keeps reading one table.

CREATE FUNCTION inv_notify_waitlist_offer() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notification_events (source_key, fact, booking_id, patient_id, hospital_id,
                                     detail)
    SELECT 'waitlist:' || NEW.id || ':offered', 'waitlist_offered', NEW.offer_hold_id,
           NEW.patient_id, s.hospital_id,
           jsonb_build_object('entry_id', NEW.id, 'slot_id', NEW.slot_id,
                              'deadline', (SELECT h.deadline FROM holds h
                                           WHERE h.id = NEW.offer_hold_id))
    FROM schedules s
    WHERE s.id = NEW.schedule_id
    ON CONFLICT (source_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER waitlist_entries_notify AFTER INSERT OR UPDATE OF state ON waitlist_entries
    FOR EACH ROW WHEN (NEW.state = 'offered') EXECUTE FUNCTION inv_notify_waitlist_offer();

CREATE FUNCTION inv_notify_lifecycle() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notification_events (source_key, fact, booking_id, patient_id, hospital_id,
                                     detail, occurred_at)
    VALUES ('lifecycle:' || NEW.event_key, NEW.type, NEW.booking_id, NEW.patient_id,
            NEW.hospital_id, NEW.payload - 'reason', NEW.at)
    ON CONFLICT (source_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER lifecycle_events_notify AFTER INSERT ON lifecycle_events
    FOR EACH ROW WHEN (NEW.type IN ('substitution_offered', 'booking_rescheduled'))
    EXECUTE FUNCTION inv_notify_lifecycle();
