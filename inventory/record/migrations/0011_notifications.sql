-- Notifications (docs/notifications.md): what the patient is told after the booking.
--
-- The notifier reads the durable record, never Redis: every fact worth a message is
-- written to notification_events by a trigger in the same transaction as the fact itself
-- (a booking paid, confirmed by the HIS, refused, cancelled, marked no-show; a refund that
-- succeeded; a ban), so a committed fact always has its event and a rolled-back one never
-- does, whichever writer (persister, confirm path, HIS flows, refund loop, operator) made
-- it. Facts that are instants rather than changes (the visit reminder, a ban's end) are
-- added by the notifier's own scan with a source_key that makes a second scan a no-op.

-- WeChat subscribe messages (订阅消息) go only to accounts that accepted the kind's
-- template in the mini-program (wx.requestSubscribeMessage): one row per account and
-- kind, with the account's openid. No row: no WeChat message of that kind.
CREATE TABLE notification_subscriptions (
    account_id    inv_id NOT NULL,
    kind          text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
    openid        text NOT NULL CHECK (openid ~ '^[A-Za-z0-9_-]{1,128}$'),
    subscribed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, kind)
);

-- Per hospital: when the visit reminder goes out (the day before, wall clock of the
-- hospital's time zone), the SMS signature (签名) and WeChat template ids by kind. A
-- hospital without a row takes the defaults (08:00, the hospital's name, the configured
-- template ids).
CREATE TABLE notification_hospital_settings (
    hospital_id       inv_id PRIMARY KEY REFERENCES hospitals (id),
    reminder_time     time NOT NULL DEFAULT '08:00',
    sms_sign          text NOT NULL DEFAULT '' CHECK (length(sms_sign) <= 20),
    wechat_templates  jsonb NOT NULL DEFAULT '{}'::jsonb
                      CHECK (jsonb_typeof(wechat_templates) = 'object'),
    wechat_page       text NOT NULL DEFAULT '' CHECK (length(wechat_page) <= 128),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One fact that may be worth a message. source_key names the fact once
-- ("booking:<id>:<status>", "refund:<id>:succeeded", "ban:<patient>:<hospital>:<until>",
-- "reminder:<booking>:<date>", ...), so a fact seen twice is recorded once. planned_at is
-- set when the notifier has turned it into deliveries (possibly none).
CREATE TABLE notification_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_key  text NOT NULL CHECK (source_key <> ''),
    fact        text NOT NULL CHECK (fact ~ '^[a-z_]{1,40}$'),
    booking_id  text,
    patient_id  inv_id,
    hospital_id text,
    -- Ids, amounts and reason codes only; never personal data.
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    planned_at  timestamptz,
    CONSTRAINT notification_events_source_key UNIQUE (source_key)
);
CREATE INDEX notification_events_unplanned_idx ON notification_events (id)
    WHERE planned_at IS NULL;

-- One message to one recipient on one channel. The idempotency key is a function of
-- (event, channel, recipient) and is sent to the provider with every attempt, so a
-- delivery retried after a crash between sending and recording is de-duplicated there.
-- recipient is "account:<id>" (WeChat: its openid is read at send time) or
-- "patient:<id>" (SMS: the phone is decrypted at send time): never the address itself.
--   pending -> sent | dead (dead-lettered, see below) | skipped (nothing to send to any more)
CREATE TABLE notification_deliveries (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id            bigint NOT NULL REFERENCES notification_events (id),
    kind                text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
    channel             text NOT NULL CHECK (channel IN ('wechat', 'sms')),
    recipient           text NOT NULL CHECK (recipient ~ '^(account|patient):[A-Za-z0-9_-]{1,64}$'),
    idempotency_key     text NOT NULL CHECK (idempotency_key ~ '^[0-9a-f]{32}$'),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'dead', 'skipped')),
    -- Attempts started (a claim counts one, before the call is made).
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The sender takes a pending delivery from this instant: its back-off after a failed
    -- attempt, and its lease while an attempt runs (a sender that died is replaced once
    -- the lease is over).
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    last_error          text NOT NULL DEFAULT '',
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notification_deliveries_target UNIQUE (event_id, channel, recipient),
    CONSTRAINT notification_deliveries_key UNIQUE (idempotency_key),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- Deliveries that gave up (retries exhausted, or a refusal no retry can change): the
-- operator's view. Retrying one puts its delivery back to pending with the same key and
-- sets retried_at here; a delivery that fails again gets a new row.
CREATE TABLE notification_dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES notification_deliveries (id),
    error       text NOT NULL,
    attempts    integer NOT NULL CHECK (attempts >= 0),
    dead_at     timestamptz NOT NULL DEFAULT now(),
    retried_at  timestamptz
);
CREATE INDEX notification_dead_letters_open_idx ON notification_dead_letters (dead_at)
    WHERE retried_at IS NULL;
CREATE UNIQUE INDEX notification_dead_letters_one_open ON notification_dead_letters (delivery_id)
    WHERE retried_at IS NULL;

-- The triggers: each fact is recorded in the transaction that makes it.

-- A booking is paid (inserted), or its status moves (his_confirmed, rejected, cancelled,
-- visited, no_show, and whatever later statuses come).
CREATE FUNCTION inv_notify_booking() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO notification_events (source_key, fact, booking_id, patient_id, hospital_id,
                                     detail)
    SELECT 'booking:' || NEW.id || ':' || NEW.status,
           'booking_' || NEW.status, NEW.id, NEW.patient_id, s.hospital_id,
           jsonb_build_object('reason', NEW.cancel_reason, 'amount_fen', NEW.amount_fen,
                              'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END)
    FROM schedules s
    WHERE s.id = NEW.schedule_id
    ON CONFLICT (source_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER bookings_notify AFTER INSERT OR UPDATE OF status ON bookings
    FOR EACH ROW EXECUTE FUNCTION inv_notify_booking();

-- A refund reached the patient.
CREATE FUNCTION inv_notify_refund() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notification_events (source_key, fact, booking_id, patient_id, hospital_id,
                                     detail)
    SELECT 'refund:' || NEW.id || ':succeeded', 'refund_succeeded', NEW.hold_id,
           h.patient_id, s.hospital_id,
           jsonb_build_object('amount_fen', NEW.amount_fen, 'reason', NEW.reason,
                              'refund_id', NEW.id)
    FROM holds h
    JOIN schedules s ON s.id = h.schedule_id
    WHERE h.id = NEW.hold_id
    ON CONFLICT (source_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER refunds_notify AFTER INSERT OR UPDATE OF status ON refunds
    FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION inv_notify_refund();

-- A ban starts (its end, lifted or run out, is found by the notifier's scan once
-- banned_until has passed).
CREATE FUNCTION inv_notify_ban() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.banned_until <= NEW.decided_at OR NEW.banned_until <= now() THEN
        RETURN NULL;  -- a lift, or a ban already over
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.banned_until = NEW.banned_until THEN
        RETURN NULL;
    END IF;
    INSERT INTO notification_events (source_key, fact, patient_id, hospital_id, detail)
    VALUES ('ban:' || NEW.patient_id || ':' || NEW.hospital_id || ':'
                || floor(extract(epoch FROM NEW.banned_until))::bigint,
            'patient_banned', NEW.patient_id, NEW.hospital_id,
            jsonb_build_object('banned_until', NEW.banned_until, 'reason', NEW.reason))
    ON CONFLICT (source_key) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER patient_bans_notify AFTER INSERT OR UPDATE ON patient_bans
    FOR EACH ROW EXECUTE FUNCTION inv_notify_ban();
