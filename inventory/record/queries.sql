-- Named queries of slot-inventory (procrastinate style: SQL lives in SQL files).
--
-- Each query starts with "-- name: <name>", then optional comment lines (its description),
-- then "-- params: a, b, c" naming $1, $2, $3 in order (empty when there are none), then
-- the statement. inventory/record/queries.py loads them into the typed mapping QUERIES and checks
-- that every $n is named. Ids are text; money is integer fen; instants are timestamptz.


-- ===================================================================== catalogue reads

-- name: list_hospitals
-- Every hospital, by name: the first screen of the patient's path.
-- params:
SELECT id, name, timezone, policy, created_at, updated_at
FROM hospitals
ORDER BY name, id;

-- name: get_hospital
-- One hospital, or no row.
-- params: hospital_id
SELECT id, name, timezone, policy, created_at, updated_at
FROM hospitals
WHERE id = $1;

-- name: get_department
-- One department, or no row (which hospital an operator acts on when it writes it).
-- params: department_id
SELECT id, hospital_id, parent_id, name, sort_order, created_at, updated_at
FROM departments
WHERE id = $1;

-- name: get_doctor
-- One doctor, or no row.
-- params: doctor_id
SELECT id, hospital_id, department_id, name, title, specialty, created_at, updated_at
FROM doctors
WHERE id = $1;

-- name: list_department_tree
-- A hospital's departments in tree order: depth first, siblings by sort_order, name, id.
-- depth is 0 at the top level; path lists the ids from the top department down to this
-- one. Every department reached from a top-level one appears once (a department has one
-- parent, so a walk from the top cannot loop; departments whose parents form a loop are
-- unreachable and left out).
-- params: hospital_id
WITH RECURSIVE ranked AS (
    SELECT d.id, d.parent_id, d.name, d.sort_order,
           row_number() OVER (PARTITION BY d.parent_id
                              ORDER BY d.sort_order, d.name, d.id) AS position
    FROM departments d
    WHERE d.hospital_id = $1
), tree AS (
    SELECT r.id, r.parent_id, r.name, r.sort_order, 0 AS depth,
           ARRAY[r.id::text] AS path, ARRAY[r.position] AS sort_key
    FROM ranked r
    WHERE r.parent_id IS NULL
    UNION ALL
    SELECT r.id, r.parent_id, r.name, r.sort_order, t.depth + 1,
           t.path || r.id::text, t.sort_key || r.position
    FROM ranked r
    JOIN tree t ON r.parent_id = t.id
)
SELECT id, parent_id, name, sort_order, depth, path
FROM tree
ORDER BY sort_key;

-- name: list_department_doctors
-- The doctors of a department, by name.
-- params: department_id
SELECT id, hospital_id, department_id, name, title, specialty
FROM doctors
WHERE department_id = $1
ORDER BY name, id;

-- name: list_department_schedules
-- The schedules of a department on a visit date (that is, of one tag), in session order,
-- with the doctor's name, title (职称) and specialty (擅长), the number of slots and their
-- total capacity. What is still free is Redis's business, not this query's.
-- params: department_id, visit_date
SELECT s.id, s.hospital_id, s.department_id, s.doctor_id, s.visit_date, s.session,
       s.starts_at, s.ends_at, s.release_at, s.cancel_deadline, s.fee_fen, s.location,
       s.status, s.updated_at,
       d.name AS doctor_name, d.title AS doctor_title, d.specialty AS doctor_specialty,
       c.slot_count, c.capacity
FROM schedules s
JOIN doctors d ON d.id = s.doctor_id
CROSS JOIN LATERAL (
    SELECT count(*) AS slot_count, coalesce(sum(sl.capacity), 0) AS capacity
    FROM slots sl
    WHERE sl.schedule_id = s.id
) c
WHERE s.department_id = $1 AND s.visit_date = $2
ORDER BY s.starts_at, d.name, s.id;

-- name: list_schedule_rooms
-- The latest waiting room (queued release) of each of the given schedules that has one:
-- what a patient joins before the release instant.
-- params: schedule_ids
SELECT DISTINCT ON (s.id) s.id AS schedule_id, r.release_id, r.opens_at, r.t0
FROM unnest($1::text[]) AS s (id)
JOIN room_releases r ON r.schedule_ids @> ARRAY[s.id]
ORDER BY s.id, r.t0 DESC, r.release_id;

-- name: get_schedule
-- One schedule with its doctor, department and hospital (name, timezone, policy), or no
-- row: what loading it into Redis and answering about it need.
-- params: schedule_id
SELECT s.id, s.hospital_id, s.department_id, s.doctor_id, s.visit_date, s.session,
       s.starts_at, s.ends_at, s.release_at, s.cancel_deadline, s.fee_fen, s.location,
       s.status, s.updated_at,
       d.name AS doctor_name, d.title AS doctor_title, d.specialty AS doctor_specialty,
       dep.name AS department_name,
       h.name AS hospital_name, h.timezone AS hospital_timezone, h.policy AS hospital_policy
FROM schedules s
JOIN doctors d ON d.id = s.doctor_id
JOIN departments dep ON dep.id = s.department_id
JOIN hospitals h ON h.id = s.hospital_id
WHERE s.id = $1;

-- name: list_schedule_slots
-- The slots of a schedule in time order.
-- params: schedule_id
SELECT id, schedule_id, starts_at, ends_at, capacity
FROM slots
WHERE schedule_id = $1
ORDER BY starts_at, id;

-- name: list_tag_slots
-- Every slot of every schedule of one tag (department, visit date): with
-- list_department_schedules, all that load_schedule and a rebuild of the tag need.
-- params: department_id, visit_date
SELECT sl.id, sl.schedule_id, sl.starts_at, sl.ends_at, sl.capacity
FROM slots sl
JOIN schedules s ON s.id = sl.schedule_id
WHERE s.department_id = $1 AND s.visit_date = $2
ORDER BY sl.schedule_id, sl.starts_at, sl.id;

-- name: get_slot_location
-- Where a slot lives, or no row: its schedule, hospital, and the department and visit
-- date that name its tag (a reserve needs them before it can reach Redis).
-- params: slot_id
SELECT sl.id AS slot_id, s.id AS schedule_id, s.hospital_id, s.department_id,
       s.visit_date, s.status AS schedule_status, sl.capacity
FROM slots sl
JOIN schedules s ON s.id = sl.schedule_id
WHERE sl.id = $1;

-- name: list_slot_locations
-- Where every slot after slot_id lives, in slot id order, a page at a time: what
-- `inventory rebuild` copies to Redis for reserves while Postgres is down.
-- params: after_slot_id, limit
SELECT sl.id AS slot_id, s.id AS schedule_id, s.hospital_id, s.department_id, s.visit_date
FROM slots sl
JOIN schedules s ON s.id = sl.schedule_id
WHERE sl.id > $1
ORDER BY sl.id
LIMIT $2;


-- ===================================================================== catalogue writes
-- Operator and HIS-sync upserts: insert, or overwrite the row with the given values.
-- "inserted" is true when the row is new (xmax = 0 on a freshly inserted row version).

-- name: upsert_hospital
-- params: hospital_id, name, timezone, policy
INSERT INTO hospitals (id, name, timezone, policy)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE
    SET name = EXCLUDED.name, timezone = EXCLUDED.timezone, policy = EXCLUDED.policy,
        updated_at = now()
RETURNING id, name, timezone, policy, created_at, updated_at, (xmax = 0) AS inserted;

-- name: upsert_department
-- A department; parent_id NULL for a top-level one. The parent must be in the same
-- hospital (checked at commit, so a subtree may be written in any order).
-- params: department_id, hospital_id, parent_id, name, sort_order
INSERT INTO departments (id, hospital_id, parent_id, name, sort_order)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
    SET hospital_id = EXCLUDED.hospital_id, parent_id = EXCLUDED.parent_id,
        name = EXCLUDED.name, sort_order = EXCLUDED.sort_order, updated_at = now()
RETURNING id, hospital_id, parent_id, name, sort_order, created_at, updated_at,
          (xmax = 0) AS inserted;

-- name: upsert_doctor
-- params: doctor_id, hospital_id, department_id, name, title, specialty
INSERT INTO doctors (id, hospital_id, department_id, name, title, specialty)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE
    SET hospital_id = EXCLUDED.hospital_id, department_id = EXCLUDED.department_id,
        name = EXCLUDED.name, title = EXCLUDED.title, specialty = EXCLUDED.specialty,
        updated_at = now()
RETURNING id, hospital_id, department_id, name, title, specialty, created_at, updated_at,
          (xmax = 0) AS inserted;

-- name: upsert_schedule
-- A schedule. Its department and visit date (its tag) cannot change once written: a
-- trigger refuses that with check_violation. status is 'open' or 'suspended'.
-- params: schedule_id, hospital_id, department_id, doctor_id, visit_date, session, starts_at, ends_at, release_at, cancel_deadline, fee_fen, location, status
INSERT INTO schedules (id, hospital_id, department_id, doctor_id, visit_date, session,
                       starts_at, ends_at, release_at, cancel_deadline, fee_fen, location,
                       status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE
    SET hospital_id = EXCLUDED.hospital_id, department_id = EXCLUDED.department_id,
        doctor_id = EXCLUDED.doctor_id, visit_date = EXCLUDED.visit_date,
        session = EXCLUDED.session, starts_at = EXCLUDED.starts_at,
        ends_at = EXCLUDED.ends_at, release_at = EXCLUDED.release_at,
        cancel_deadline = EXCLUDED.cancel_deadline, fee_fen = EXCLUDED.fee_fen,
        location = EXCLUDED.location, status = EXCLUDED.status, updated_at = now()
RETURNING id, hospital_id, department_id, doctor_id, visit_date, session, starts_at,
          ends_at, release_at, cancel_deadline, fee_fen, location, status, created_at,
          updated_at, (xmax = 0) AS inserted;

-- name: set_schedule_status
-- Suspend (停诊) or reopen a schedule, with why (shown to the patients a suspension
-- cancels); no row if there is no such schedule.
-- params: schedule_id, status, reason, source
UPDATE schedules
SET status = $2, status_reason = $3, status_source = $4, updated_at = now()
WHERE id = $1
RETURNING id, status, status_reason, status_source, updated_at;

-- name: upsert_slot
-- A slot. It cannot move to another schedule once written (trigger, check_violation).
-- params: slot_id, schedule_id, starts_at, ends_at, capacity
INSERT INTO slots (id, schedule_id, starts_at, ends_at, capacity)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
    SET schedule_id = EXCLUDED.schedule_id, starts_at = EXCLUDED.starts_at,
        ends_at = EXCLUDED.ends_at, capacity = EXCLUDED.capacity, updated_at = now()
RETURNING id, schedule_id, starts_at, ends_at, capacity, created_at, updated_at,
          (xmax = 0) AS inserted;

-- name: raise_slot_capacity
-- `inventory rebuild --raise-oversold`: a slot's capacity raised to the units its open
-- holds and bookings already take (never lowered), so Redis can be rebuilt from it.
-- params: slot_id, capacity
UPDATE slots SET capacity = $2, updated_at = now()
WHERE id = $1 AND capacity < $2
RETURNING id, capacity;


-- ===================================================================== patients
-- Registering: in one transaction, insert_patient; if it returns no row the ID number is
-- already a patient, so get_patient_by_blind_index (the API checks the name before
-- linking); then link_account_patient.

-- name: insert_patient
-- A new patient, or no row when a patient with this blind index exists already.
-- blind_index is the 32-byte HMAC of the canonical ID number; *_enc are ciphertexts.
-- params: patient_id, account_id, blind_index, key_id, name_enc, phone_enc, resident_id_enc, gender, birth_date
INSERT INTO patients (id, account_id, blind_index, key_id, name_enc, phone_enc,
                      resident_id_enc, gender, birth_date)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (blind_index) DO NOTHING
RETURNING id, account_id, blind_index, key_id, name_enc, phone_enc, resident_id_enc, gender,
          birth_date, created_at, updated_at;

-- name: get_patient
-- params: patient_id
SELECT id, account_id, blind_index, key_id, name_enc, phone_enc, resident_id_enc, gender,
       birth_date, created_at, updated_at
FROM patients
WHERE id = $1;

-- name: get_patient_by_blind_index
-- The patient with this ID number (by its blind index), or no row.
-- params: blind_index
SELECT id, account_id, blind_index, key_id, name_enc, phone_enc, resident_id_enc, gender,
       birth_date, created_at, updated_at
FROM patients
WHERE blind_index = $1;

-- name: link_account_patient
-- Let an account book for a patient; no row if it already could. relation is one of
-- self, child, parent, spouse, other.
-- params: account_id, patient_id, relation
INSERT INTO account_patients (account_id, patient_id, relation)
VALUES ($1, $2, $3)
ON CONFLICT (account_id, patient_id) DO NOTHING
RETURNING account_id, patient_id, relation, created_at;

-- name: unlink_account_patient
-- The account no longer books for the patient; no row if it did not.
-- params: account_id, patient_id
DELETE FROM account_patients
WHERE account_id = $1 AND patient_id = $2
RETURNING account_id, patient_id;

-- name: account_has_patient
-- The ownership check: may this account book for this patient?
-- params: account_id, patient_id
SELECT EXISTS (
    SELECT 1 FROM account_patients WHERE account_id = $1 AND patient_id = $2
) AS linked;

-- name: list_account_patients
-- The patients an account books for, in the order it added them.
-- params: account_id
SELECT p.id, p.account_id, p.blind_index, p.key_id, p.name_enc, p.phone_enc,
       p.resident_id_enc, p.gender, p.birth_date, p.created_at, p.updated_at,
       ap.relation, ap.created_at AS linked_at
FROM account_patients ap
JOIN patients p ON p.id = ap.patient_id
WHERE ap.account_id = $1
ORDER BY ap.created_at, p.id;

-- name: list_account_patient_links
-- Every account-patient link after (patient_id, account_id), in that order, a page at a
-- time: what `inventory rebuild` copies to Redis for reserves while Postgres is down.
-- params: after_patient_id, after_account_id, limit
SELECT patient_id, account_id
FROM account_patients
WHERE (patient_id, account_id) > ($1, $2)
ORDER BY patient_id, account_id
LIMIT $3;

-- name: get_account_patient
-- One of the account's patients, or no row (also when it exists but is not linked).
-- params: account_id, patient_id
SELECT p.id, p.account_id, p.blind_index, p.key_id, p.name_enc, p.phone_enc,
       p.resident_id_enc, p.gender, p.birth_date, p.created_at, p.updated_at,
       ap.relation, ap.created_at AS linked_at
FROM account_patients ap
JOIN patients p ON p.id = ap.patient_id
WHERE ap.account_id = $1 AND ap.patient_id = $2;

-- name: upsert_patient_ban
-- The durable copy of a patient_ban step (hospital_id '*' = every hospital; a lifted ban
-- has banned_until = the moment it was lifted). A decision older than the stored one is
-- ignored (no row), so a late redelivery cannot undo a newer decision.
-- params: patient_id, hospital_id, banned_until, reason, decided_at
INSERT INTO patient_bans AS b (patient_id, hospital_id, banned_until, reason, decided_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (patient_id, hospital_id) DO UPDATE
    SET banned_until = EXCLUDED.banned_until, reason = EXCLUDED.reason,
        decided_at = EXCLUDED.decided_at
    WHERE b.decided_at <= EXCLUDED.decided_at
RETURNING patient_id, hospital_id, banned_until, reason, decided_at;

-- name: list_patient_bans
-- A patient's bans, current and past (rebuilding the patient tag reads the current ones).
-- params: patient_id
SELECT patient_id, hospital_id, banned_until, reason, decided_at
FROM patient_bans
WHERE patient_id = $1
ORDER BY hospital_id;

-- name: lock_patients_to_reencrypt
-- Key rotation: the next batch of patients whose ciphertexts are not under the current key,
-- in id order after after_id, locked for the re-encrypting transaction; rows another
-- transaction holds are skipped (the next run picks them up).
-- params: current_key_id, after_id, batch
SELECT id, key_id, name_enc, phone_enc, resident_id_enc
FROM patients
WHERE key_id <> $1 AND id > $2
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: update_patient_ciphertexts
-- Key rotation: store a patient's re-encrypted fields and the key that encrypted them.
-- params: patient_id, key_id, name_enc, phone_enc, resident_id_enc
UPDATE patients
SET key_id = $2, name_enc = $3, phone_enc = $4, resident_id_enc = $5, updated_at = now()
WHERE id = $1
RETURNING id, key_id;

-- name: count_patients_by_key
-- Rows per data key: a key may be retired when its count is 0.
-- params:
SELECT key_id, count(*) AS patients
FROM patients
GROUP BY key_id
ORDER BY key_id;


-- ===================================================================== holds and bookings

-- name: upsert_hold
-- Write a hold as the store recorded it (inventory.domain.Hold; instants as timestamptz,
-- confirmed_at and ended_at NULL while they have not happened). last_seq is the seq of the
-- tag's event the record reflects, 0 when it comes from a store reply. A row is only
-- moved forward, by (state rank, last_seq) with held < booked < ended: a redelivered or
-- reordered event, or a reply older than the row, changes nothing and returns no row.
-- params: hold_id, tag, slot_id, schedule_id, account_id, patient_id, channel, amount_fen, state, deadline, extended, payment_ref, created_at, confirmed_at, ended_at, end_reason, last_seq
INSERT INTO holds AS h (id, tag, slot_id, schedule_id, account_id, patient_id, channel,
                        amount_fen, state, deadline, extended, payment_ref, created_at,
                        confirmed_at, ended_at, end_reason, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, deadline = EXCLUDED.deadline, extended = EXCLUDED.extended,
        payment_ref = EXCLUDED.payment_ref, confirmed_at = EXCLUDED.confirmed_at,
        ended_at = EXCLUDED.ended_at, end_reason = EXCLUDED.end_reason,
        last_seq = greatest(h.last_seq, EXCLUDED.last_seq), updated_at = now()
    WHERE (inv_hold_state_rank(EXCLUDED.state), EXCLUDED.last_seq)
          > (inv_hold_state_rank(h.state), h.last_seq)
RETURNING id AS hold_id, state, last_seq, (xmax = 0) AS inserted;

-- name: upsert_waitlist_entry
-- Write a waitlist entry as its event recorded it (inventory.domain.WaitlistEntry). A row
-- only moves forward, by the tag's seq of the event: a redelivered or reordered event
-- changes nothing and returns no row.
-- A doctor's-day entry's schedule_id becomes the offered window's with its offer.
-- params: entry_id, tag, schedule_id, account_id, patient_id, channel, join_seq, state, offer_hold_id, slot_id, joined_at, offered_at, ended_at, end_reason, last_seq, doctor_id, day_schedule_ids
INSERT INTO waitlist_entries AS w (id, tag, schedule_id, account_id, patient_id, channel,
                                   join_seq, state, offer_hold_id, slot_id, joined_at,
                                   offered_at, ended_at, end_reason, last_seq, doctor_id,
                                   day_schedule_ids)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, schedule_id = EXCLUDED.schedule_id,
        slot_id = EXCLUDED.slot_id, offered_at = EXCLUDED.offered_at,
        ended_at = EXCLUDED.ended_at, end_reason = EXCLUDED.end_reason,
        last_seq = EXCLUDED.last_seq, updated_at = now()
    WHERE EXCLUDED.last_seq > w.last_seq
RETURNING id AS entry_id, state, last_seq, (xmax = 0) AS inserted;

-- name: list_account_waitlist
-- An account's waitlist entries (every state), newest first.
-- params: account_id, limit
SELECT id AS entry_id, tag, schedule_id, account_id, patient_id, channel, join_seq, state,
       offer_hold_id, slot_id, joined_at, offered_at, ended_at, end_reason, last_seq,
       updated_at, doctor_id, day_schedule_ids
FROM waitlist_entries
WHERE account_id = $1
ORDER BY joined_at DESC, id
LIMIT $2;

-- name: get_hold
-- params: hold_id
SELECT id AS hold_id, tag, slot_id, schedule_id, account_id, patient_id, channel,
       amount_fen, state, deadline, extended, payment_ref, created_at, confirmed_at,
       ended_at, end_reason, last_seq, updated_at
FROM holds
WHERE id = $1;

-- name: list_account_holds
-- An account's holds (every state), newest first.
-- params: account_id, limit
SELECT id AS hold_id, tag, slot_id, schedule_id, account_id, patient_id, channel,
       amount_fen, state, deadline, extended, payment_ref, created_at, confirmed_at,
       ended_at, end_reason, last_seq, updated_at
FROM holds
WHERE account_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_account_open_holds
-- An account's holds the record has as still waiting for payment (held, deadline ahead),
-- newest first; the store (Redis) has the last word on each one's state.
-- params: account_id, limit
SELECT id AS hold_id, tag, slot_id, schedule_id, account_id, patient_id, channel,
       amount_fen, state, deadline, extended, payment_ref, created_at, confirmed_at,
       ended_at, end_reason, last_seq, updated_at
FROM holds
WHERE account_id = $1 AND state = 'held' AND deadline > now()
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: insert_booking
-- Record the booking of a booked (or since cancelled) hold, copying it from the hold row:
-- write the hold with upsert_hold first, in the same transaction. No row if the booking
-- exists already or the hold is not booked.
-- params: hold_id
INSERT INTO bookings (id, tag, slot_id, schedule_id, account_id, patient_id, amount_fen,
                      payment_ref, confirmed_at)
SELECT h.id, h.tag, h.slot_id, h.schedule_id, h.account_id, h.patient_id, h.amount_fen,
       h.payment_ref, h.confirmed_at
FROM holds h
WHERE h.id = $1 AND h.state IN ('booked', 'cancelled')
ON CONFLICT (id) DO NOTHING
RETURNING id AS booking_id, status, confirmed_at;

-- name: cancel_booking
-- Mark a booking cancelled (patient, operator or 停诊); no row if it is not open (already
-- cancelled, rejected by the HIS, visited or no-show).
-- params: booking_id, cancelled_at, reason
UPDATE bookings
SET status = 'cancelled', cancelled_at = $2, cancel_reason = $3, updated_at = now()
WHERE id = $1 AND status IN ('confirmed', 'submitted', 'his_confirmed')
RETURNING id AS booking_id, status, cancelled_at, cancel_reason;

-- name: add_status_history
-- One change of a hold's state or a booking's status; no row if event_key was recorded
-- before ("<tag>#<seq>" for a store event).
-- params: hold_id, from_status, to_status, reason, at, event_key
INSERT INTO booking_status_history (hold_id, from_status, to_status, reason, at, event_key)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (event_key) DO NOTHING
RETURNING id, hold_id, from_status, to_status, reason, at, event_key;

-- name: list_status_history
-- The timeline of one hold and its booking, oldest first.
-- params: hold_id
SELECT id, hold_id, from_status, to_status, reason, at, event_key, recorded_at
FROM booking_status_history
WHERE hold_id = $1
ORDER BY at, id;

-- name: get_booking
-- One booking with where and when the visit is, or no row (workers and operators; the
-- API uses get_account_booking).
-- params: booking_id
SELECT *
FROM booking_details
WHERE booking_id = $1;

-- name: get_account_booking
-- One of the account's bookings (same columns as get_booking), or no row: another
-- account's booking looks exactly like a missing one.
-- params: account_id, booking_id
SELECT *
FROM booking_details
WHERE account_id = $1 AND booking_id = $2;

-- name: list_account_bookings
-- An account's bookings, newest confirmation first, a page at a time: pass NULL, NULL for
-- the first page, then the last row's confirmed_at and booking_id for the next.
-- params: account_id, before_confirmed_at, before_booking_id, limit
SELECT *
FROM booking_details
WHERE account_id = $1
  AND ($2::timestamptz IS NULL
       OR (confirmed_at, booking_id::text) < ($2::timestamptz, $3::text))
ORDER BY confirmed_at DESC, booking_id DESC
LIMIT $4;


-- ===================================================================== event log and fence

-- name: record_event
-- Record one outbox event. inserted: it is new. Otherwise (tag, seq) was recorded before:
-- stored_stream_id = stream_id means a redelivery (acknowledge it); another stream id
-- means the tag's Redis history diverged from ours (fence the tag); NULL means a
-- concurrent writer committed it meanwhile (read it again).
-- params: tag, seq, type, at, payload, stream_id
WITH inserted AS (
    INSERT INTO inventory_events (tag, seq, type, at, payload, stream_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (tag, seq) DO NOTHING
    RETURNING seq
)
SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
       (SELECT e.stream_id FROM inventory_events e
        WHERE e.tag = $1 AND e.seq = $2) AS stored_stream_id;

-- name: record_events
-- Record a batch of outbox events in one statement (parallel arrays, one element per
-- event): one row back per event, in (tag, seq) order, with inserted and
-- stored_stream_id as in record_event. tag_sequences advances once per tag.
-- params: tags, seqs, types, ats, payloads, stream_ids
WITH batch AS (
    SELECT *
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[],
                $6::text[]) AS b(tag, seq, type, at, payload, stream_id)
), inserted AS (
    INSERT INTO inventory_events (tag, seq, type, at, payload, stream_id)
    SELECT tag, seq, type, at, payload, stream_id FROM batch
    ON CONFLICT (tag, seq) DO NOTHING
    RETURNING tag, seq
)
SELECT b.tag, b.seq, b.stream_id, (i.seq IS NOT NULL) AS inserted,
       e.stream_id AS stored_stream_id
FROM batch b
LEFT JOIN inserted i ON i.tag::text = b.tag AND i.seq = b.seq
LEFT JOIN inventory_events e ON e.tag::text = b.tag AND e.seq = b.seq
ORDER BY b.tag, b.seq;

-- name: get_tag_sequence
-- The highest seq Postgres has recorded for a tag, or no row if none: the fence refuses
-- the tag while Redis's seq for it is lower.
-- params: tag
SELECT tag, last_seq, updated_at
FROM tag_sequences
WHERE tag = $1;

-- name: list_tag_sequences
-- get_tag_sequence for many tags at once; tags without events have no row.
-- params: tags
SELECT tag, last_seq, updated_at
FROM tag_sequences
WHERE tag = ANY ($1::text[])
ORDER BY tag;

-- name: get_tag_event_span
-- How many events Postgres holds for a tag, and their lowest and highest seq: fewer
-- events than the span means a gap (an event still on its way, or dead-lettered), which
-- tag_sequences.last_seq (the highest seq) cannot show.
-- params: tag
SELECT count(*) AS events, min(seq) AS first_seq, max(seq) AS last_seq
FROM inventory_events
WHERE tag = $1;

-- name: list_all_tag_sequences
-- Every tag Postgres has events of, with its highest seq: what the fence compares the
-- Redis store against after a restart or failover.
-- params:
SELECT tag, last_seq, updated_at
FROM tag_sequences
ORDER BY tag;

-- name: list_bookings_without_confirm_event
-- Bookings confirmed since $1 whose booking_confirmed event Postgres has not recorded (no
-- history row held -> booked): the persister has not got to it yet, or Redis lost the
-- event (a failover, a lost file) before anyone persisted it. After a Redis restart or
-- failover the fence looks each one up in Redis: the tag's sequence cannot show such a
-- loss, since Postgres never saw the lost seq.
-- params: since
SELECT b.id AS hold_id, b.tag
FROM bookings b
WHERE b.confirmed_at >= $1
  AND b.status NOT IN ('cancelled', 'rejected')
  AND NOT EXISTS (
      SELECT 1 FROM booking_status_history h
      WHERE h.hold_id = b.id AND h.from_status = 'held' AND h.to_status = 'booked')
ORDER BY b.tag, b.id;

-- name: list_tag_open_holds
-- The open holds and bookings of one tag (state held or booked): with the tag's
-- schedules and slots, what a rebuild of the tag restores into Redis.
-- params: tag
SELECT id AS hold_id, tag, slot_id, schedule_id, account_id, patient_id, channel,
       amount_fen, state, deadline, extended, payment_ref, created_at, confirmed_at,
       ended_at, end_reason, last_seq, updated_at
FROM holds
WHERE tag = $1 AND state IN ('held', 'booked')
ORDER BY created_at, id;

-- name: list_tag_live_waitlist
-- The waitlist entries of one tag still waiting or offered, in join order: what a rebuild
-- of the tag queues again (an offered one's hold is among list_tag_open_holds's).
-- params: tag
SELECT id AS entry_id, tag, schedule_id, account_id, patient_id, channel, join_seq, state,
       offer_hold_id, slot_id, joined_at, offered_at, ended_at, end_reason, last_seq,
       updated_at, doctor_id, day_schedule_ids
FROM waitlist_entries
WHERE tag = $1 AND state IN ('waiting', 'offered')
ORDER BY join_seq;

-- name: list_live_waitlist_by_patient
-- Every waitlist entry still waiting or offered, by patient: the patient tags' entry
-- tokens a rebuild restores (at most N entries per patient counts them).
-- params:
SELECT patient_id, id AS entry_id
FROM waitlist_entries
WHERE state IN ('waiting', 'offered')
ORDER BY patient_id, id;

-- name: get_tag_waitlist_seq
-- The highest join order a tag's waitlist has given (0 without entries): a rebuilt tag
-- numbers new joins after it.
-- params: tag
SELECT coalesce(max(join_seq), 0)::bigint AS join_seq
FROM waitlist_entries
WHERE tag = $1;

-- name: list_open_patient_holds
-- Every open hold and booking by patient, for rebuilding the patient tags' tokens.
-- params:
SELECT patient_id, id AS hold_id
FROM holds
WHERE state IN ('held', 'booked')
ORDER BY patient_id, id;

-- name: list_current_bans
-- Every ban still in force, for rebuilding the patient tags' blacklists.
-- params:
SELECT patient_id, hospital_id, banned_until
FROM patient_bans
WHERE banned_until > now()
ORDER BY patient_id, hospital_id;

-- name: list_tag_events
-- A tag's recorded events after a seq, in order (audit, replay, rebuild checks).
-- params: tag, after_seq, limit
SELECT tag, seq, type, at, payload, stream_id, received_at
FROM inventory_events
WHERE tag = $1 AND seq > $2
ORDER BY seq
LIMIT $3;

-- name: record_dead_letter
-- An outbox entry that could not be applied; a repeat bumps attempts and keeps the
-- latest error.
-- params: stream, entry_id, tag, seq, payload, error
INSERT INTO dead_letters AS d (stream, entry_id, tag, seq, payload, error)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (stream, entry_id) DO UPDATE
    SET attempts = d.attempts + 1, error = EXCLUDED.error, last_failed_at = now()
RETURNING id, stream, entry_id, attempts, first_failed_at, last_failed_at;


-- ===================================================================== idempotency keys

-- name: claim_idempotency_key
-- Claim a key for a first request; no row if the key is taken (then get_idempotency_key:
-- same fingerprint and a response = replay it; no response yet = still running; another
-- fingerprint = idempotency_key_reused).
-- params: account_id, key, operation, fingerprint
INSERT INTO idempotency_keys (account_id, key, operation, fingerprint)
VALUES ($1, $2, $3, $4)
ON CONFLICT (account_id, key) DO NOTHING
RETURNING account_id, key, operation, fingerprint, created_at;

-- name: get_idempotency_key
-- params: account_id, key
SELECT account_id, key, operation, fingerprint, response_status, response_body,
       created_at, completed_at
FROM idempotency_keys
WHERE account_id = $1 AND key = $2;

-- name: complete_idempotency_key
-- Store the response of the request that claimed the key; no row if already completed.
-- params: account_id, key, response_status, response_body
UPDATE idempotency_keys
SET response_status = $3, response_body = $4, completed_at = now()
WHERE account_id = $1 AND key = $2 AND completed_at IS NULL
RETURNING account_id, key, response_status, completed_at;

-- name: release_idempotency_key
-- Drop an uncompleted claim (the request failed before doing anything), so a retry runs.
-- params: account_id, key
DELETE FROM idempotency_keys
WHERE account_id = $1 AND key = $2 AND completed_at IS NULL
RETURNING account_id, key;

-- name: take_over_idempotency_key
-- Drop a claim that never got a response and is older than abandoned_s seconds (its
-- request's process died), when it is still the claim read (same created_at).
-- params: account_id, key, created_at, abandoned_s
DELETE FROM idempotency_keys
WHERE account_id = $1 AND key = $2 AND completed_at IS NULL AND created_at = $3
  AND created_at < now() - make_interval(secs => $4::double precision)
RETURNING account_id, key;

-- name: prune_idempotency_keys
-- Delete keys older than retention_s seconds, never younger than 24 hours.
-- params: retention_s
WITH gone AS (
    DELETE FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => greatest($1::double precision, 86400))
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone;


-- ===================================================================== payments and refunds

-- name: insert_payment
-- Start a payment for a hold. The id (our out_trade_no) is derived from the hold id, so a
-- repeated start finds the same row: no row when it exists already (then get_payment).
-- sub_mchid: the hospital's sub-merchant that collects it (WeChat Pay partner mode; NULL
-- for the service's own merchant).
-- params: payment_id, hold_id, account_id, provider, amount_fen, currency, method, slot_id, patient_id, channel, hold_deadline, next_check_at, sub_mchid
INSERT INTO payments (id, hold_id, account_id, provider, amount_fen, currency, method,
                      slot_id, patient_id, channel, hold_deadline, next_check_at, sub_mchid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO NOTHING
RETURNING id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method,
          status, provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id,
          patient_id, channel, hold_deadline, next_check_at, created_at, updated_at,
          sub_mchid;

-- name: get_payment
-- One payment, or no row.
-- params: payment_id
SELECT id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method, status,
       provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id, patient_id,
       channel, hold_deadline, next_check_at, created_at, updated_at, sub_mchid
FROM payments
WHERE id = $1;

-- name: lock_payment
-- One payment, locked until the transaction ends: whoever settles a payment (the
-- notification, the payment loop) decides under this lock, so two deciders never split
-- one payment into a booking and a refund.
-- params: payment_id
SELECT id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method, status,
       provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id, patient_id,
       channel, hold_deadline, next_check_at, created_at, updated_at, sub_mchid
FROM payments
WHERE id = $1
FOR UPDATE;

-- name: set_payment_prepay
-- Remember the provider's prepay id of a pending payment; no row when it is not pending.
-- params: payment_id, prepay_id
UPDATE payments
SET prepay_id = $2, updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING id AS payment_id, prepay_id;

-- name: settle_payment
-- Record the money and what it bought, together: status paid with the provider's
-- transaction, and the booking (NULL when a refund was requested instead). No row when the
-- payment was settled already (a repeated notification).
-- params: payment_id, provider_txn_id, paid_at, booking_id
UPDATE payments
SET status = 'paid', provider_txn_id = $2, paid_at = $3, booking_id = $4,
    settled_at = now(), updated_at = now()
WHERE id = $1 AND settled_at IS NULL
RETURNING id AS payment_id, status, provider_txn_id, paid_at, booking_id, settled_at;

-- name: close_payment
-- A pending payment closed at the provider (its hold ended unpaid); no row otherwise.
-- params: payment_id
UPDATE payments
SET status = 'closed', updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING id AS payment_id, status;

-- name: claim_due_payments
-- Pending payments whose hold ended (next_check_at passed), at most limit, each leased
-- for lease_s seconds: another process skips them meanwhile, and one whose check failed
-- comes back when the lease is over.
-- params: limit, lease_s
UPDATE payments
SET next_check_at = now() + make_interval(secs => $2::double precision), updated_at = now()
WHERE id IN (
    SELECT id FROM payments
    WHERE status = 'pending' AND next_check_at <= now()
    ORDER BY next_check_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method,
          status, provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id,
          patient_id, channel, hold_deadline, next_check_at, created_at, updated_at,
          sub_mchid;

-- name: list_payments_to_refund
-- Paid payments whose booking was cancelled or rejected by the HIS and that have no refund
-- yet: the safety net behind the cancel route and the HIS flow, which request the refund
-- themselves.
-- params: limit
SELECT p.id AS payment_id, p.booking_id, p.amount_fen, b.status AS booking_status,
       b.cancel_reason
FROM payments p
JOIN bookings b ON b.id = p.booking_id
WHERE p.status = 'paid'
  AND b.status IN ('cancelled', 'rejected')
  -- A booking cancelled by its reschedule hands its payment on to the new booking (the
  -- reschedule's own settlement moves booking_id): nothing to refund here.
  AND b.cancel_reason <> 'rescheduled'
  AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.part = 0)
ORDER BY b.updated_at
LIMIT $1;

-- name: get_booking_payment
-- The paid payment behind a booking: the one that bought it, else the one started for it
-- as a hold (settled by a refund). No row when nothing was paid through a provider, nor
-- when the payment now backs another booking (a reschedule moved it).
-- params: booking_id
SELECT id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method, status,
       provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id, patient_id,
       channel, hold_deadline, next_check_at, created_at, updated_at, sub_mchid
FROM payments
WHERE status = 'paid' AND (booking_id = $1 OR (hold_id = $1 AND booking_id IS NULL))
ORDER BY (booking_id IS NOT DISTINCT FROM $1) DESC, created_at
LIMIT 1;

-- name: insert_refund
-- Request the refund of a paid payment, at most once per payment and part (0: what is
-- left of it; n >= 1: the fee difference of a booking line's n-th reschedule): no row when
-- the part has a refund already (then get_payment_refund) or the payment is not paid.
-- params: refund_id, payment_id, hold_id, amount_fen, reason, request_key, part
INSERT INTO refunds (id, payment_id, hold_id, provider, amount_fen, reason, request_key, part)
SELECT $1, p.id, $3, p.provider, $4, $5, $6, $7
FROM payments p
WHERE p.id = $2 AND p.status = 'paid'
ON CONFLICT (payment_id, part) DO NOTHING
RETURNING id AS refund_id, payment_id, hold_id, provider, amount_fen, reason, status,
          provider_refund_id, succeeded_at, request_key, attempts, last_error,
          next_attempt_at, created_at, updated_at;

-- name: get_payment_refund
-- One part of a payment's refunds (0: what was left of it), or no row.
-- params: payment_id, part
SELECT id AS refund_id, payment_id, hold_id, provider, amount_fen, reason, status,
       provider_refund_id, succeeded_at, request_key, attempts, last_error, next_attempt_at,
       created_at, updated_at
FROM refunds
WHERE payment_id = $1 AND part = $2;

-- name: list_booking_payments
-- Every paid payment that backs a booking: the one that bought it (or its line's first
-- booking, handed on by reschedules) and the fee differences of charged moves, oldest
-- first. Falls back like get_booking_payment to a payment started for it as a hold.
-- params: booking_id
SELECT id AS payment_id, hold_id, account_id, provider, amount_fen, currency, method, status,
       provider_txn_id, paid_at, prepay_id, booking_id, settled_at, slot_id, patient_id,
       channel, hold_deadline, next_check_at, created_at, updated_at, sub_mchid
FROM payments
WHERE status = 'paid' AND (booking_id = $1 OR (hold_id = $1 AND booking_id IS NULL))
ORDER BY created_at, id;

-- name: refunded_parts_fen
-- What the fee differences of a payment's reschedules refunded (parts >= 1), in fen.
-- params: payment_id
SELECT coalesce(sum(amount_fen), 0)::bigint AS refunded_fen
FROM refunds
WHERE payment_id = $1 AND part >= 1;

-- name: list_account_booking_refunds
-- Every refund of one of the account's bookings (or holds), oldest first: one per payment
-- behind the booking (its fee, and the differences of charged moves) and per part (a
-- cheaper move's difference); no row for another account's.
-- params: account_id, booking_id
SELECT r.id AS refund_id, r.payment_id, r.hold_id, r.provider, r.amount_fen, r.reason,
       r.status, r.provider_refund_id, r.succeeded_at, r.request_key, r.attempts,
       r.last_error, r.next_attempt_at, r.created_at, r.updated_at
FROM refunds r
JOIN payments p ON p.id = r.payment_id
WHERE r.hold_id = $2 AND p.account_id = $1
ORDER BY r.created_at, r.id;

-- name: claim_due_refunds
-- Open refunds due for an attempt (next_attempt_at passed), at most limit, each leased for
-- lease_s seconds and counted as an attempt. A refund is retried on its own row and
-- out_refund_no, which the provider de-duplicates.
-- params: limit, lease_s
UPDATE refunds
SET next_attempt_at = now() + make_interval(secs => $2::double precision),
    attempts = attempts + 1, updated_at = now()
WHERE id IN (
    SELECT id FROM refunds
    WHERE status <> 'succeeded' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id AS refund_id, payment_id, hold_id, provider, amount_fen, reason, status,
          provider_refund_id, succeeded_at, request_key, attempts, last_error,
          next_attempt_at, created_at, updated_at,
          -- The provider wants the order's total beside a refund of part of it.
          (SELECT p.amount_fen FROM payments p WHERE p.id = refunds.payment_id) AS total_fen,
          (SELECT p.sub_mchid FROM payments p WHERE p.id = refunds.payment_id) AS sub_mchid;

-- name: finish_refund
-- The outcome of one attempt: succeeded (final), pending (the provider is processing it)
-- or failed (retried from next_attempt_at). No row when the refund had succeeded already.
-- params: refund_id, status, provider_refund_id, last_error, next_attempt_at
UPDATE refunds
SET status = $2,
    provider_refund_id = coalesce($3, provider_refund_id),
    succeeded_at = CASE WHEN $2 = 'succeeded' THEN coalesce(succeeded_at, now()) END,
    last_error = $4,
    next_attempt_at = $5,
    updated_at = now()
WHERE id = $1 AND status <> 'succeeded'
RETURNING id AS refund_id, status, provider_refund_id, succeeded_at, attempts, last_error;


-- ===================================================================== reschedules
-- A booking's move to another window (inventory/booking/rescheduling.py).

-- name: insert_reschedule
-- Record a move before its first store step. A retry with the same key finds its row:
-- an aborted move (refused: sold out, ...) is tried again, pending again with a new
-- moving_until; no row when it is pending or done (then lock_reschedule). charge_fen: the
-- fee difference the move charges (0: none; set again by set_reschedule_charge once the
-- new unit is held at the fee the store has).
-- params: reschedule_id, booking_id, account_id, patient_id, slot_id, kind, old_amount_fen, moving_until, charge_fen
INSERT INTO reschedules (id, booking_id, account_id, patient_id, slot_id, kind, old_amount_fen,
                         moving_until, charge_fen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE
SET status = 'pending', moving_until = EXCLUDED.moving_until, charge_fen = EXCLUDED.charge_fen,
    error = '', updated_at = now()
WHERE reschedules.status = 'aborted' AND reschedules.booking_id = EXCLUDED.booking_id
  AND reschedules.slot_id = EXCLUDED.slot_id
RETURNING id AS reschedule_id, booking_id, account_id, patient_id, slot_id, kind, status,
          old_amount_fen, new_amount_fen, refund_fen, moving_until, error, created_at,
          updated_at, charge_fen;

-- name: lock_reschedule
-- One move, or no row, locked until the transaction ends: the steps of a move run under
-- this lock, so two requests with the same key and the worker's recovery never run them
-- at once.
-- params: reschedule_id
SELECT id AS reschedule_id, booking_id, account_id, patient_id, slot_id, kind, status,
       old_amount_fen, new_amount_fen, refund_fen, moving_until, error, created_at, updated_at,
       charge_fen
FROM reschedules
WHERE id = $1
FOR UPDATE;

-- name: finish_reschedule
-- Close a move: done (with the new fee and the difference refunded) or aborted (with the
-- refusal's code). A done move stays done: the store moved the booking, whatever an
-- earlier attempt to close it said.
-- params: reschedule_id, status, new_amount_fen, refund_fen, error
UPDATE reschedules
SET status = $2, new_amount_fen = $3, refund_fen = $4, error = $5, updated_at = now()
WHERE id = $1 AND status <> 'done'
RETURNING id AS reschedule_id, status;

-- name: set_reschedule_charge
-- The fee difference of a charged move as the held unit's fee says (a fee changed between
-- the request's look at the catalogue and the store step).
-- params: reschedule_id, charge_fen
UPDATE reschedules
SET charge_fen = $2, updated_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING id AS reschedule_id, charge_fen;

-- name: claim_pending_reschedules
-- Moves still pending well after their store steps could have happened (a process died
-- between them), at most limit, each leased for lease_s seconds (moving_until moves on).
-- params: margin_s, limit, lease_s
UPDATE reschedules
SET moving_until = now() + make_interval(secs => $3::double precision), updated_at = now()
WHERE id IN (
    SELECT id FROM reschedules
    WHERE status = 'pending'
      AND moving_until < now() - make_interval(secs => $1::double precision)
    ORDER BY moving_until
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING id AS reschedule_id, booking_id, account_id, patient_id, slot_id, kind, status,
          old_amount_fen, new_amount_fen, refund_fen, moving_until, error, created_at,
          updated_at, charge_fen;

-- name: move_booking_payment
-- The payments that bought a booking (its fee, and the fee differences of charged moves
-- that led to it) now back the booking that replaced it; no row when nothing was paid
-- through a provider (or they were moved already).
-- params: old_booking_id, new_booking_id
UPDATE payments
SET booking_id = $2, updated_at = now()
WHERE status = 'paid' AND (booking_id = $1 OR (hold_id = $1 AND booking_id IS NULL))
RETURNING id AS payment_id, amount_fen, created_at;


-- ===================================================================== substitution offers
-- Doctor substitution (替诊, inventory/booking/substitution.py). An offer is live while
-- offered and not past respond_by, or accepting (a move under way; for ten minutes past
-- respond_by at most): the suspension leaves a booking with a live offer alone.

-- name: offer_substitutions
-- Offer a substitute schedule to every open booking of a schedule (an offer not yet
-- answered is renewed); the bookings offered.
-- params: schedule_id, target_schedule_id, respond_by
INSERT INTO substitution_offers (booking_id, schedule_id, target_schedule_id, respond_by)
SELECT b.id, $1::text, $2::text, $3
FROM bookings b
WHERE b.schedule_id = $1::text AND b.status IN ('confirmed', 'submitted', 'his_confirmed')
ON CONFLICT (booking_id) DO UPDATE
SET target_schedule_id = EXCLUDED.target_schedule_id, respond_by = EXCLUDED.respond_by,
    updated_at = now()
WHERE substitution_offers.status = 'offered'
RETURNING booking_id;

-- name: get_substitution_offer
-- The offer made to one of the account's bookings, or no row (also for another account's).
-- params: booking_id, account_id
SELECT o.booking_id, o.schedule_id, o.target_schedule_id, o.status, o.respond_by,
       o.new_booking_id
FROM substitution_offers o
JOIN bookings b ON b.id = o.booking_id
WHERE o.booking_id = $1 AND b.account_id = $2;

-- name: start_substitution_answer
-- The patient answers: accepting (a move starts; again while one is under way) or
-- declined, only while the offer is live; no row otherwise (then get_substitution_offer).
-- params: booking_id, account_id, status
UPDATE substitution_offers o
SET status = $3, updated_at = now()
FROM bookings b
WHERE o.booking_id = $1 AND b.id = o.booking_id AND b.account_id = $2
  AND ((o.status = 'offered' AND o.respond_by > now())
       OR (o.status = 'accepting' AND $3 = 'accepting'))
RETURNING o.booking_id, o.target_schedule_id, o.status;

-- name: close_substitution_offer
-- A substitution's move closed: accepted (with the new booking) or, refused, offered
-- again (the patient may decline, or the offer runs out); no row when it was not accepting.
-- params: booking_id, status, new_booking_id
UPDATE substitution_offers
SET status = $2, new_booking_id = $3, updated_at = now()
WHERE booking_id = $1 AND status = 'accepting'
RETURNING booking_id, status;

-- name: list_schedule_kept_bookings
-- The bookings of a schedule whose substitution offer is live: its suspension leaves them
-- alone.
-- params: schedule_id
SELECT booking_id
FROM substitution_offers
WHERE schedule_id = $1
  AND ((status = 'offered' AND respond_by > now())
       OR (status = 'accepting' AND respond_by + interval '10 minutes' > now()));


-- ===================================================================== HIS flows
-- The schedule sync, the booking submitter and the reconciler (inventory/his/,
-- docs/his.md). Windows are visit dates, both ends included.

-- name: list_window_schedules
-- Every schedule with a visit date in the window (any status) of the hospitals in scope:
-- only_hospitals (NULL: every hospital) and but_hospitals scope it to the hospitals one HIS
-- connection serves (inventory/his/connections.py).
-- params: first_day, last_day, only_hospitals, but_hospitals
SELECT id, hospital_id, department_id, doctor_id, visit_date, session, starts_at, ends_at,
       release_at, cancel_deadline, fee_fen, location, status, status_source
FROM schedules
WHERE visit_date BETWEEN $1 AND $2
  AND ($3::text[] IS NULL OR hospital_id = ANY($3::text[]))
  AND hospital_id <> ALL($4::text[])
ORDER BY visit_date, id;

-- name: list_window_slots
-- Every slot of the window's schedules with what the HIS last told us about it
-- (his_capacity and other_channel NULL when nothing yet) and how many of our bookings
-- of the slot the HIS holds or is being sent (submitted, his_confirmed); hospitals in
-- scope as in list_window_schedules.
-- params: first_day, last_day, only_hospitals, but_hospitals
SELECT sl.id, sl.schedule_id, sl.starts_at, sl.ends_at, sl.capacity,
       hs.his_capacity, hs.other_channel, ours.platform_booked
FROM slots sl
JOIN schedules s ON s.id = sl.schedule_id
LEFT JOIN his_slots hs ON hs.slot_id = sl.id
CROSS JOIN LATERAL (
    SELECT count(*) AS platform_booked
    FROM bookings b
    WHERE b.slot_id = sl.id AND b.status IN ('submitted', 'his_confirmed')
) ours
WHERE s.visit_date BETWEEN $1 AND $2
  AND ($3::text[] IS NULL OR s.hospital_id = ANY($3::text[]))
  AND s.hospital_id <> ALL($4::text[])
ORDER BY sl.schedule_id, sl.starts_at, sl.id;

-- name: upsert_his_slots
-- Record, per slot, the HIS capacity applied and the units kept back for other channels
-- (arrays of equal length); a row is only rewritten when a value changed, and only the
-- rows written are returned.
-- params: slot_ids, his_capacities, other_channels
INSERT INTO his_slots AS hs (slot_id, his_capacity, other_channel)
SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[])
ON CONFLICT (slot_id) DO UPDATE
    SET his_capacity = EXCLUDED.his_capacity, other_channel = EXCLUDED.other_channel,
        updated_at = now()
    WHERE (hs.his_capacity, hs.other_channel)
          IS DISTINCT FROM (EXCLUDED.his_capacity, EXCLUDED.other_channel)
RETURNING slot_id, his_capacity, other_channel;

-- name: list_suspensions_to_finish
-- Suspended schedules (visit date from since_date on) that still hold an open booking or
-- an open hold as Postgres knows them: what the worker's suspension sweep cancels.
-- params: since_date, limit
SELECT s.id AS schedule_id, s.department_id, s.visit_date, s.status_reason
FROM schedules s
WHERE s.status = 'suspended' AND s.visit_date >= $1
  AND (EXISTS (SELECT 1 FROM bookings b
               WHERE b.schedule_id = s.id
                 AND b.status IN ('confirmed', 'submitted', 'his_confirmed')
                 AND NOT EXISTS (SELECT 1 FROM substitution_offers o
                                 WHERE o.booking_id = b.id
                                   AND ((o.status = 'offered' AND o.respond_by > now())
                         OR (o.status = 'accepting'
                             AND o.respond_by + interval '10 minutes' > now()))))
       OR EXISTS (SELECT 1 FROM holds h
                  WHERE h.tag = s.department_id || ':' || to_char(s.visit_date, 'YYYYMMDD')
                    AND h.schedule_id = s.id AND h.state IN ('held', 'booked')
                    AND NOT EXISTS (SELECT 1 FROM substitution_offers o
                                    WHERE o.booking_id = h.id
                                      AND ((o.status = 'offered' AND o.respond_by > now())
                         OR (o.status = 'accepting'
                             AND o.respond_by + interval '10 minutes' > now())))))
ORDER BY s.visit_date, s.id
LIMIT $2;

-- name: add_booking_event
-- One event of a booking for lifecycle_events (the record of decisions), with its hospital,
-- patient and schedule copied from the booking, in the caller's transaction. No row when
-- the event was recorded already (same event_key) or the booking does not exist.
-- params: event_key, type, booking_id, at, payload
INSERT INTO lifecycle_events (event_key, type, hospital_id, patient_id, booking_id,
                              schedule_id, at, payload)
SELECT $1, $2, s.hospital_id, b.patient_id, b.id, b.schedule_id, $4, $5
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
WHERE b.id = $3
ON CONFLICT (event_key) DO NOTHING
RETURNING id, type, booking_id;

-- name: list_lifecycle_events
-- Lifecycle events after an id, in id order (the notifier, audit, tests).
-- params: after_id, limit
SELECT id, event_key, type, hospital_id, patient_id, booking_id, schedule_id, at, payload,
       recorded_at
FROM lifecycle_events
WHERE id > $1
ORDER BY id
LIMIT $2;

-- name: list_schedule_open_bookings
-- The bookings of a schedule that are still open (confirmed, submitted, his_confirmed):
-- what a suspension (停诊) cancels; not those whose substitution offer is live (offered
-- and not run out, or accepting: see list_schedule_kept_bookings).
-- params: schedule_id
SELECT id AS booking_id, slot_id, status, amount_fen, his_appointment_id
FROM bookings b
WHERE schedule_id = $1 AND status IN ('confirmed', 'submitted', 'his_confirmed')
  AND NOT EXISTS (SELECT 1 FROM substitution_offers o
                  WHERE o.booking_id = b.id
                    AND ((o.status = 'offered' AND o.respond_by > now())
                         OR (o.status = 'accepting'
                             AND o.respond_by + interval '10 minutes' > now())))
ORDER BY id;

-- name: claim_his_submissions
-- Take up to `limit` bookings to send to the HIS: confirmed ones whose next attempt is
-- due, and submitted ones whose sender went quiet for lease_s seconds (it died). They
-- become submitted. SKIP LOCKED: several submitters share the queue. Only bookings of
-- the hospitals in scope (as in list_window_schedules): each HIS connection has its
-- own queue, so a HIS that is down holds up its own hospitals' bookings only.
-- params: limit, lease_s, only_hospitals, but_hospitals
WITH due AS (
    SELECT b.id
    FROM bookings b
    JOIN schedules s ON s.id = b.schedule_id
    WHERE ((b.status = 'confirmed'
            AND (b.his_next_attempt_at IS NULL OR b.his_next_attempt_at <= now()))
           OR (b.status = 'submitted'
               AND b.submitted_at < now() - make_interval(secs => $2::double precision)))
      AND ($3::text[] IS NULL OR s.hospital_id = ANY($3::text[]))
      AND s.hospital_id <> ALL($4::text[])
    ORDER BY b.updated_at, b.id
    LIMIT $1
    FOR UPDATE OF b SKIP LOCKED
)
UPDATE bookings b
SET status = 'submitted', submitted_at = now(), updated_at = now()
FROM due
WHERE b.id = due.id
RETURNING b.id AS booking_id, b.slot_id, b.schedule_id, b.patient_id, b.amount_fen,
          b.his_attempts, b.confirmed_at;

-- name: record_his_appointment
-- The HIS holds the booking's appointment: store its id, number (就诊序号), visit time
-- and place; a confirmed or submitted booking becomes his_confirmed. A booking cancelled
-- meanwhile keeps its status (the cancellation queue then cancels the appointment). No
-- row for a rejected, visited or unknown booking.
-- params: booking_id, appointment_id, appointment_no, visit_time, place
UPDATE bookings
SET his_appointment_id = $2, his_appointment_no = $3, visit_time = $4, place = $5,
    his_confirmed_at = CASE WHEN status IN ('confirmed', 'submitted') THEN now()
                            ELSE his_confirmed_at END,
    status = CASE WHEN status IN ('confirmed', 'submitted') THEN 'his_confirmed'
                  ELSE status END,
    his_next_attempt_at = NULL, his_last_error = '', updated_at = now()
WHERE id = $1 AND status IN ('confirmed', 'submitted', 'his_confirmed', 'cancelled')
RETURNING id AS booking_id, status, his_appointment_id, his_appointment_no, visit_time,
          place;

-- name: defer_his_submission
-- An attempt got no usable answer: back to confirmed, next attempt after delay_s;
-- counted adds one to his_attempts (not when the call was never sent). No row if the
-- booking is no longer submitted.
-- params: booking_id, delay_s, error, counted
UPDATE bookings
SET status = 'confirmed',
    his_next_attempt_at = now() + make_interval(secs => $2::double precision),
    his_last_error = $3,
    his_attempts = his_attempts + CASE WHEN $4::boolean THEN 1 ELSE 0 END,
    updated_at = now()
WHERE id = $1 AND status = 'submitted'
RETURNING id AS booking_id, status, his_attempts, his_next_attempt_at;

-- name: reject_booking
-- The HIS refused the booking (full, suspended, past): it ends as rejected with the
-- reason the patient is shown. No row unless it was confirmed or submitted. Release its
-- unit and request its refund (request_refund, same transaction) after.
-- params: booking_id, reason
UPDATE bookings
SET status = 'rejected', cancel_reason = $2, his_next_attempt_at = NULL, updated_at = now()
WHERE id = $1 AND status IN ('confirmed', 'submitted')
RETURNING id AS booking_id, status, cancel_reason, amount_fen;

-- name: claim_his_cancellations
-- Take up to `limit` cancelled bookings that were sent to the HIS and whose cancellation
-- has not reached it; each is leased for lease_s seconds (a failed attempt is retried
-- once the lease is over). SKIP LOCKED: several workers share the queue. Hospitals in
-- scope as in claim_his_submissions.
-- params: limit, lease_s, only_hospitals, but_hospitals
WITH due AS (
    SELECT b.id
    FROM bookings b
    JOIN schedules s ON s.id = b.schedule_id
    WHERE b.status = 'cancelled' AND b.submitted_at IS NOT NULL AND b.his_cancelled_at IS NULL
      AND (b.his_next_attempt_at IS NULL OR b.his_next_attempt_at <= now())
      AND ($3::text[] IS NULL OR s.hospital_id = ANY($3::text[]))
      AND s.hospital_id <> ALL($4::text[])
    ORDER BY b.updated_at, b.id
    LIMIT $1
    FOR UPDATE OF b SKIP LOCKED
)
UPDATE bookings b
SET his_next_attempt_at = now() + make_interval(secs => $2::double precision)
FROM due
WHERE b.id = due.id
RETURNING b.id AS booking_id, b.his_appointment_id, b.cancel_reason;

-- name: mark_his_cancelled
-- The cancellation reached the HIS, or the HIS has nothing to cancel, or it refused for
-- good (error says why; empty when cancelled). No row unless the booking is cancelled.
-- params: booking_id, error
UPDATE bookings
SET his_cancelled_at = now(), his_last_error = $2, his_next_attempt_at = NULL
WHERE id = $1 AND status = 'cancelled'
RETURNING id AS booking_id, his_cancelled_at, his_last_error;

-- name: list_unreleased_bookings
-- Bookings that ended here (rejected, or cancelled by a HIS flow) more than older_than_s
-- seconds ago while their unit is still booked in the projection: the unit's release
-- was lost (a crash between the two steps). The submitter releases them again (each
-- connection's for the hospitals in its scope, as in claim_his_submissions).
-- params: older_than_s, limit, only_hospitals, but_hospitals
SELECT b.id AS booking_id, b.status, b.cancel_reason
FROM holds h
JOIN bookings b ON b.id = h.id
JOIN schedules s ON s.id = b.schedule_id
WHERE h.state = 'booked' AND b.status IN ('rejected', 'cancelled')
  AND b.updated_at < now() - make_interval(secs => $1::double precision)
  AND ($3::text[] IS NULL OR s.hospital_id = ANY($3::text[]))
  AND s.hospital_id <> ALL($4::text[])
ORDER BY b.updated_at, b.id
LIMIT $2;

-- name: list_window_bookings
-- Every booking with a visit date in the window, any status, of the hospitals in scope
-- (as in list_window_schedules): the reconciler's view.
-- params: first_day, last_day, only_hospitals, but_hospitals
SELECT b.id AS booking_id, b.tag, b.slot_id, b.schedule_id, b.status, b.cancel_reason,
       b.his_appointment_id, b.his_appointment_no, b.submitted_at, b.his_cancelled_at,
       b.confirmed_at, b.updated_at, s.visit_date, b.consultation_started_at,
       b.consultation_ended_at
FROM schedules s
JOIN bookings b ON b.schedule_id = s.id
WHERE s.visit_date BETWEEN $1 AND $2
  AND ($3::text[] IS NULL OR s.hospital_id = ANY($3::text[]))
  AND s.hospital_id <> ALL($4::text[])
ORDER BY b.id;

-- name: requeue_his_submission
-- The HIS lost a booking it had: forget what it handed back and send the booking again
-- (confirmed, due now). No row unless it was submitted or his_confirmed.
-- params: booking_id
UPDATE bookings
SET status = 'confirmed', his_appointment_id = NULL, his_appointment_no = NULL,
    visit_time = NULL, place = NULL, his_confirmed_at = NULL, his_next_attempt_at = NULL,
    updated_at = now()
WHERE id = $1 AND status IN ('submitted', 'his_confirmed')
RETURNING id AS booking_id, status;

-- name: list_department_booking_outcomes
-- Every booking of a department's schedules with a visit date from from_date to to_date
-- (inclusive), as the capacity estimator reads it (inventory/capacity/records.py): the
-- session start and length in hours, the slot start, and the outcome mapped to the
-- estimator's statuses (visited -> attended, no_show, cancelled, anything else -> booked).
-- service_minutes is the consultation's length when the HIS gave its start and end
-- (bookings.consultation_started_at/ended_at), NULL otherwise.
-- params: department_id, from_date, to_date
SELECT s.department_id, s.starts_at AS session_start, sl.starts_at AS slot_start,
       CASE b.status
           WHEN 'visited' THEN 'attended'
           WHEN 'no_show' THEN 'no_show'
           WHEN 'cancelled' THEN 'cancelled'
           ELSE 'booked'
       END AS status,
       (EXTRACT(EPOCH FROM (b.consultation_ended_at - b.consultation_started_at))
           / 60.0)::double precision AS service_minutes,
       (EXTRACT(EPOCH FROM (s.ends_at - s.starts_at)) / 3600.0)::double precision
           AS session_hours
FROM schedules s
JOIN bookings b ON b.schedule_id = s.id
JOIN slots sl ON sl.id = b.slot_id
WHERE s.department_id = $1 AND s.visit_date BETWEEN $2 AND $3
ORDER BY s.starts_at, sl.starts_at, b.id;

-- name: start_reconciliation_run
-- params: first_day, last_day, mode, policy
INSERT INTO reconciliation_runs (first_day, last_day, mode, policy)
VALUES ($1, $2, $3, $4)
RETURNING id, started_at;

-- name: finish_reconciliation_run
-- params: run_id, status, found, fixed, error
UPDATE reconciliation_runs
SET status = $2, found = $3, fixed = $4, error = $5, finished_at = now()
WHERE id = $1
RETURNING id, status, started_at, finished_at;

-- name: add_reconciliation_items
-- A run's findings, arrays of equal length; no rows when there is no such run.
-- params: run_id, kinds, subjects, details, actions, errors
INSERT INTO reconciliation_items (run_id, kind, subject, detail, action, error)
SELECT r.id, f.kind, f.subject, f.detail, f.action, f.error
FROM reconciliation_runs r
CROSS JOIN unnest($2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[])
    AS f (kind, subject, detail, action, error)
WHERE r.id = $1
RETURNING id;

-- name: sample_open_money_and_his_queue
-- The worker's sample of what is still open (each from a partial index): payments waiting
-- for the provider, refunds not yet succeeded, bookings not yet accepted by the HIS, each
-- with the age in seconds of its oldest (NULL when there is none).
-- params:
SELECT
    (SELECT count(*) FROM payments WHERE status = 'pending') AS payments_pending,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM payments WHERE status = 'pending') AS payment_oldest_pending_s,
    (SELECT count(*) FROM refunds WHERE status = 'pending') AS refunds_pending,
    (SELECT count(*) FROM refunds WHERE status = 'failed') AS refunds_failed,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM refunds WHERE status <> 'succeeded') AS refund_oldest_open_s,
    (SELECT count(*) FROM bookings WHERE status = 'confirmed') AS his_confirmed_waiting,
    (SELECT count(*) FROM bookings WHERE status = 'submitted') AS his_submitted_waiting,
    (SELECT extract(epoch FROM now() - min(updated_at))::float8
       FROM bookings WHERE status IN ('confirmed', 'submitted')) AS his_oldest_waiting_s;

-- name: sample_his_queue_by_hospital
-- The bookings not yet accepted by the HIS by hospital (the worker adds them up by the
-- HIS connection serving each): confirmed, submitted, and the age in seconds of the
-- oldest. Only hospitals with some.
-- params:
SELECT s.hospital_id,
       count(*) FILTER (WHERE b.status = 'confirmed') AS confirmed,
       count(*) FILTER (WHERE b.status = 'submitted') AS submitted,
       extract(epoch FROM now() - min(b.updated_at))::float8 AS oldest_s
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
WHERE b.status IN ('confirmed', 'submitted')
GROUP BY s.hospital_id
ORDER BY s.hospital_id;


-- ===================================================================== operator audit

-- name: begin_operator_audit
-- The entry of an operator action about to run (completed by finish_operator_audit).
-- params: actor, role, scope, method, route, object, request_id
INSERT INTO operator_audit (actor, role, scope, method, route, object, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, at;

-- name: finish_operator_audit
-- The outcome of an entry that has none yet: no row if it has one already.
-- params: id, status, hospital_id, before, after
UPDATE operator_audit
SET status = $2, hospital_id = $3, before = $4, after = $5, finished_at = now()
WHERE id = $1 AND status IS NULL
RETURNING id, status, finished_at;

-- name: list_operator_audit
-- Entries from since (inclusive) to until (exclusive), oldest first, a page at a time
-- after after_id; of the given hospitals only (NULL: every entry, also those naming no
-- hospital). A hospital's entries are those acting on it.
-- params: hospitals, since, until, after_id, limit
SELECT id, at, actor, role, scope, hospital_id, method, route, object, request_id, status,
       before, after, finished_at
FROM operator_audit
WHERE ($1::text[] IS NULL OR hospital_id = ANY($1::text[]))
  AND at >= $2 AND at < $3 AND id > $4
ORDER BY id
LIMIT $5;


-- ===================================================================== hospital reports

-- name: list_schedule_outcomes
-- Every schedule of a hospital with a visit date from from_date to to_date (inclusive),
-- with what a report needs of it: its capacity (the sum of its slots'), the instant it
-- sold out (the first instant its units held or booked reached its capacity, from the
-- holds' creation and end times; at one instant an end counts before a creation, so a
-- unit given back and taken again is not counted twice), the units held or booked one
-- hour after its release, its bookings by outcome, and its 候补 waitlist entries (joined,
-- offered a unit, taken, lapsed; a doctor's-day entry counts under the schedule it was
-- offered, or the first it waited on). Schedules without capacity never sell out.
-- params: hospital_id, from_date, to_date
WITH sched AS (
    SELECT s.id, s.department_id, dep.name AS department_name, s.visit_date, s.release_at,
           s.starts_at, s.status,
           (SELECT coalesce(sum(sl.capacity), 0) FROM slots sl WHERE sl.schedule_id = s.id)
               AS capacity
    FROM schedules s
    JOIN departments dep ON dep.id = s.department_id
    WHERE s.hospital_id = $1 AND s.visit_date BETWEEN $2 AND $3
), changes AS (
    SELECT h.schedule_id, h.created_at AS at, 1 AS delta
    FROM holds h JOIN sched ON sched.id = h.schedule_id
    UNION ALL
    SELECT h.schedule_id, h.ended_at AS at, -1 AS delta
    FROM holds h JOIN sched ON sched.id = h.schedule_id
    WHERE h.ended_at IS NOT NULL
), running AS (
    SELECT schedule_id, at,
           sum(delta) OVER (PARTITION BY schedule_id ORDER BY at, delta
                            ROWS UNBOUNDED PRECEDING) AS taken
    FROM changes
), sold_out AS (
    SELECT r.schedule_id, min(r.at) AS sold_out_at
    FROM running r JOIN sched ON sched.id = r.schedule_id
    WHERE sched.capacity > 0 AND r.taken >= sched.capacity
    GROUP BY r.schedule_id
), first_hour AS (
    SELECT h.schedule_id, count(*) AS taken_first_hour
    FROM holds h JOIN sched ON sched.id = h.schedule_id
    WHERE h.created_at < sched.release_at + interval '1 hour'
      AND (h.ended_at IS NULL OR h.ended_at >= sched.release_at + interval '1 hour')
    GROUP BY h.schedule_id
), outcomes AS (
    SELECT b.schedule_id,
           count(*) FILTER (WHERE b.status NOT IN ('cancelled', 'rejected')) AS booked,
           count(*) FILTER (WHERE b.status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE b.status = 'rejected') AS rejected,
           count(*) FILTER (WHERE b.status = 'visited') AS visited,
           count(*) FILTER (WHERE b.status = 'no_show') AS no_show
    FROM bookings b JOIN sched ON sched.id = b.schedule_id
    GROUP BY b.schedule_id
), waits AS (
    SELECT w.schedule_id,
           count(*) AS waitlist_joined,
           count(*) FILTER (WHERE w.offered_at IS NOT NULL) AS waitlist_offered,
           count(*) FILTER (WHERE w.state = 'taken') AS waitlist_taken,
           count(*) FILTER (WHERE w.state = 'lapsed') AS waitlist_lapsed
    FROM waitlist_entries w JOIN sched ON sched.id = w.schedule_id
    GROUP BY w.schedule_id
)
SELECT sched.id AS schedule_id, sched.department_id, sched.department_name,
       sched.visit_date, sched.release_at, sched.starts_at, sched.status,
       sched.capacity::bigint AS capacity, sold_out.sold_out_at,
       coalesce(first_hour.taken_first_hour, 0) AS taken_first_hour,
       coalesce(outcomes.booked, 0) AS booked,
       coalesce(outcomes.cancelled, 0) AS cancelled,
       coalesce(outcomes.rejected, 0) AS rejected,
       coalesce(outcomes.visited, 0) AS visited,
       coalesce(outcomes.no_show, 0) AS no_show,
       coalesce(waits.waitlist_joined, 0) AS waitlist_joined,
       coalesce(waits.waitlist_offered, 0) AS waitlist_offered,
       coalesce(waits.waitlist_taken, 0) AS waitlist_taken,
       coalesce(waits.waitlist_lapsed, 0) AS waitlist_lapsed
FROM sched
LEFT JOIN sold_out ON sold_out.schedule_id = sched.id
LEFT JOIN first_hour ON first_hour.schedule_id = sched.id
LEFT JOIN outcomes ON outcomes.schedule_id = sched.id
LEFT JOIN waits ON waits.schedule_id = sched.id
ORDER BY sched.department_id, sched.visit_date, sched.starts_at, sched.id;

-- name: list_cancellation_leads
-- Every cancelled booking of a hospital's schedules with a visit date from from_date to
-- to_date (inclusive): its department and how long before the session's start it was
-- cancelled, in seconds (negative: after the start, as a 停诊 may).
-- params: hospital_id, from_date, to_date
SELECT s.department_id,
       EXTRACT(EPOCH FROM (s.starts_at - b.cancelled_at))::double precision AS lead_s
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
WHERE s.hospital_id = $1 AND s.visit_date BETWEEN $2 AND $3 AND b.status = 'cancelled'
ORDER BY s.department_id, lead_s;

-- name: record_visit
-- A booking checked in (or the HIS reporting the visit): visited, with when and by whom
-- (kept from the first check-in) and the consultation's start and end when known. From
-- an open booking, a no-show (a late correction) or a visit already recorded (adds the
-- consultation times); no row otherwise (cancelled, rejected, unknown).
-- params: booking_id, checked_in_at, checked_in_by, consultation_started_at, consultation_ended_at
WITH before AS (
    SELECT id, status FROM bookings WHERE id = $1 FOR UPDATE
)
UPDATE bookings b
SET status = 'visited',
    checked_in_at = COALESCE(b.checked_in_at, $2),
    checked_in_by = COALESCE(b.checked_in_by, $3),
    consultation_started_at = COALESCE($4, b.consultation_started_at),
    consultation_ended_at = COALESCE($5, b.consultation_ended_at),
    updated_at = now()
FROM before
WHERE b.id = before.id
  AND before.status IN ('confirmed', 'submitted', 'his_confirmed', 'no_show', 'visited')
RETURNING b.id AS booking_id, before.status AS from_status, b.status, b.patient_id,
          b.checked_in_at, b.checked_in_by, b.consultation_started_at,
          b.consultation_ended_at;

-- name: record_no_show
-- An open booking whose patient never came: no_show (the no-show rule looks at it next).
-- No row unless the booking is open.
-- params: booking_id, no_show_at
WITH before AS (
    SELECT id, status FROM bookings WHERE id = $1 FOR UPDATE
)
UPDATE bookings b
SET status = 'no_show', no_show_at = $2, updated_at = now()
FROM before
WHERE b.id = before.id AND before.status IN ('confirmed', 'submitted', 'his_confirmed')
RETURNING b.id AS booking_id, before.status AS from_status, b.status, b.patient_id,
          b.no_show_at;

-- name: get_booking_visit
-- What checking a booking in needs: its status, patient, visit day and session end, and
-- its hospital's time zone and policy. No row if there is no such booking.
-- params: booking_id
SELECT b.id AS booking_id, b.status, b.patient_id, b.checked_in_at, b.checked_in_by,
       b.consultation_started_at, b.consultation_ended_at, b.no_show_at, s.visit_date,
       s.starts_at, s.ends_at, s.hospital_id, h.timezone AS hospital_timezone
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
JOIN hospitals h ON h.id = s.hospital_id
WHERE b.id = $1;

-- name: list_visit_bookings
-- The visit columns of some bookings (the HIS read-back compares them with the HIS's).
-- params: booking_ids
SELECT id AS booking_id, status, checked_in_at, consultation_started_at,
       consultation_ended_at
FROM bookings
WHERE id = ANY($1::text[]);

-- name: list_no_show_candidates
-- Bookings in one of the given statuses whose session (of an open schedule) ended more
-- than the hospital's no_show_grace_s ago (default_grace_s when its policy has none), in
-- the last max_age_days: the worker makes them no-shows.
-- params: statuses, default_grace_s, max_age_days, limit
SELECT b.id AS booking_id, b.status, s.hospital_id, s.ends_at
FROM schedules s
JOIN hospitals h ON h.id = s.hospital_id
JOIN bookings b ON b.schedule_id = s.id AND b.status = ANY($1::text[])
WHERE s.status = 'open'
  AND s.ends_at < now()
  AND s.ends_at > now() - make_interval(days => $3::integer)
  AND s.ends_at + make_interval(
        secs => COALESCE((h.policy ->> 'no_show_grace_s')::double precision, $2)) < now()
ORDER BY s.ends_at, b.id
LIMIT $4;

-- name: list_unchecked_no_shows
-- No-shows the no-show rule has not looked at yet, oldest first (a no-show written without
-- its time counts from its last change).
-- params: limit
SELECT b.id AS booking_id, b.patient_id, s.hospital_id,
       COALESCE(b.no_show_at, b.updated_at) AS no_show_at
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
WHERE b.status = 'no_show' AND b.ban_checked_at IS NULL
ORDER BY COALESCE(b.no_show_at, b.updated_at), b.id
LIMIT $1;

-- name: list_patient_no_shows
-- A patient's no-shows at a hospital recorded after since and up to until, oldest first
-- (what one decision of the no-show rule counts).
-- params: patient_id, hospital_id, since, until
SELECT b.id AS booking_id, COALESCE(b.no_show_at, b.updated_at) AS no_show_at
FROM bookings b
JOIN schedules s ON s.id = b.schedule_id
WHERE b.patient_id = $1 AND s.hospital_id = $2 AND b.status = 'no_show'
  AND COALESCE(b.no_show_at, b.updated_at) > $3
  AND COALESCE(b.no_show_at, b.updated_at) <= $4
ORDER BY 2, b.id;

-- name: mark_ban_checked
-- The no-show rule has looked at this no-show. No row if it had already.
-- params: booking_id
UPDATE bookings SET ban_checked_at = now()
WHERE id = $1 AND status = 'no_show' AND ban_checked_at IS NULL
RETURNING id AS booking_id, ban_checked_at;

-- name: last_ban_decision
-- When a patient was last banned or had a ban lifted at a hospital (no row: never).
-- params: patient_id, hospital_id
SELECT max(at) AS at
FROM patient_ban_history
WHERE patient_id = $1 AND hospital_id = $2
HAVING max(at) IS NOT NULL;

-- name: add_ban_history
-- One ban decision or lift; no row when the same decision was recorded already.
-- params: event_key, patient_id, hospital_id, action, banned_until, reason, decided_by, no_shows, at
INSERT INTO patient_ban_history (event_key, patient_id, hospital_id, action, banned_until,
                                 reason, decided_by, no_shows, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (event_key) DO NOTHING
RETURNING id, at;

-- name: list_patient_ban_history
-- A patient's ban decisions and lifts, newest first.
-- params: patient_id
SELECT hospital_id, action, banned_until, reason, decided_by, no_shows, at
FROM patient_ban_history
WHERE patient_id = $1
ORDER BY at DESC, id DESC;

-- name: add_patient_event
-- One event of a patient (not of one booking) for lifecycle_events, in the caller's
-- transaction; no row when recorded already.
-- params: event_key, type, patient_id, hospital_id, at, payload
INSERT INTO lifecycle_events (event_key, type, hospital_id, patient_id, at, payload)
VALUES ($1, $2, $4, $3, $5, $6)
ON CONFLICT (event_key) DO NOTHING
RETURNING id, type;


-- name: insert_room_release
-- A release's room as room_opened recorded it (a redelivery changes nothing).
-- params: release_id, tag, hospital_id, schedule_ids, t0, opens_at, seed_hash, factor, token_s, opened_at
INSERT INTO room_releases (release_id, tag, hospital_id, schedule_ids, t0, opens_at,
                           seed_hash, factor, token_s, opened_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (release_id) DO NOTHING;

-- name: set_room_drawn
-- The draw: the revealed seed and the number of tickets drawn.
-- params: release_id, seed, drawn, drawn_at
UPDATE room_releases SET seed = $2, drawn = $3, drawn_at = $4 WHERE release_id = $1;

-- name: set_room_seed_hash
-- A room restored before its draw commits a new seed (the first lived in Redis only):
-- its hash replaces the published one. A drawn room's restore keeps its seed.
-- params: release_id, seed_hash
UPDATE room_releases SET seed_hash = $2 WHERE release_id = $1 AND drawn_at IS NULL;

-- name: set_room_sold_out
-- params: release_id, sold_out_at
UPDATE room_releases SET sold_out_at = $2 WHERE release_id = $1;

-- name: insert_room_ticket
-- params: ticket_id, release_id, account_id, patient_id, joined_at, late_seq
INSERT INTO room_tickets (ticket_id, release_id, account_id, patient_id, joined_at, late_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (ticket_id) DO NOTHING;

-- name: admit_room_ticket
-- params: ticket_id, position, admitted_at, token_expires_at
UPDATE room_tickets
SET position = $2, admitted_at = $3, token_expires_at = $4, outcome = 'admitted'
WHERE ticket_id = $1 AND outcome = 'waiting';

-- name: use_room_ticket
-- The admission token served a reserve: the hold it made.
-- params: ticket_id, hold_id
UPDATE room_tickets SET outcome = 'reserved', hold_id = $2 WHERE ticket_id = $1;

-- name: lapse_room_ticket
-- params: ticket_id
UPDATE room_tickets SET outcome = 'expired' WHERE ticket_id = $1 AND outcome = 'admitted';

-- name: list_tag_live_rooms
-- A tag's releases not sold out: the waiting rooms a rebuild of the tag puts back.
-- params: tag
SELECT release_id, tag, hospital_id, schedule_ids, t0, opens_at, seed_hash, seed, factor,
       token_s, opened_at, drawn, drawn_at, sold_out_at
FROM room_releases
WHERE tag = $1 AND sold_out_at IS NULL
ORDER BY t0, release_id;

-- name: list_room_tickets
-- A release's tickets for an audit: admitted ones in queue order, then the others by
-- join time.
-- params: release_id
SELECT ticket_id, account_id, patient_id, joined_at, late_seq, position, admitted_at,
       token_expires_at, outcome, hold_id
FROM room_tickets
WHERE release_id = $1
ORDER BY position NULLS LAST, joined_at, ticket_id;
-- ===================================================================== accounts and login sessions

-- name: get_account_by_wechat_unionid
-- The account a WeChat unionid names, or no row.
-- params: unionid
SELECT id, wechat_openid FROM accounts WHERE wechat_unionid = $1;

-- name: touch_wechat_account
-- A WeChat login of an account found by its unionid: its openid is kept when it has one.
-- params: account_id, openid
UPDATE accounts SET wechat_openid = COALESCE(wechat_openid, $2), last_login_at = now()
WHERE id = $1
RETURNING id;

-- name: upsert_wechat_account
-- The account of an openid, made on its first login (a unionid given later is kept).
-- params: account_id, openid, unionid
INSERT INTO accounts (id, wechat_openid, wechat_unionid) VALUES ($1, $2, $3)
ON CONFLICT (wechat_openid) DO UPDATE
    SET last_login_at = now(),
        wechat_unionid = COALESCE(accounts.wechat_unionid, EXCLUDED.wechat_unionid)
RETURNING id, (xmax = 0) AS created;

-- name: upsert_phone_account
-- The account of a phone (by its blind index), made on its first login; the phone is
-- written encrypted for the new row's id only (an existing row keeps its own).
-- params: account_id, phone_index, key_id, phone_enc
INSERT INTO accounts (id, phone_index, key_id, phone_enc) VALUES ($1, $2, $3, $4)
ON CONFLICT (phone_index) DO UPDATE SET last_login_at = now()
RETURNING id, (xmax = 0) AS created;

-- name: insert_login_session
-- A new login of an account: the family its refresh tokens belong to, ending max_s
-- seconds from now however often it is refreshed.
-- params: session_id, account_id, method, max_s
INSERT INTO login_sessions (id, account_id, method, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4));

-- name: insert_refresh_token
-- A session's next refresh token, by its SHA-256: it lives ttl_s seconds, never past
-- its session's end; no row when there is no such session.
-- params: token_hash, session_id, ttl_s
INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
SELECT $1, s.id, LEAST(s.expires_at, now() + make_interval(secs => $3))
FROM login_sessions s
WHERE s.id = $2;

-- name: lock_refresh_token
-- A refresh token with its session, the token's row locked until the transaction ends
-- (two refreshes with one token are decided one after the other); no row when unknown.
-- params: token_hash
SELECT t.session_id, t.expires_at, t.used_at, s.account_id, s.method,
       s.expires_at AS session_expires_at, s.revoked_at, now() AS now
FROM refresh_tokens t
JOIN login_sessions s ON s.id = t.session_id
WHERE t.token_hash = $1
FOR UPDATE OF t;

-- name: use_refresh_token
-- A refresh token is exchanged: it never serves again.
-- params: token_hash
UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL;

-- name: revoke_login_session
-- End a session (logout, or a refresh token's reuse); a second revoke changes nothing.
-- params: session_id, reason
UPDATE login_sessions SET revoked_at = now(), revoked_reason = $2
WHERE id = $1 AND revoked_at IS NULL;

-- name: lock_accounts_to_reencrypt
-- Key rotation: the next batch of accounts whose phone is not under the current key, as
-- lock_patients_to_reencrypt does for patients.
-- params: current_key_id, after_id, batch
SELECT id, key_id, phone_enc
FROM accounts
WHERE key_id <> $1 AND id > $2
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: update_account_phone
-- Key rotation: store an account's re-encrypted phone and the key that encrypted it.
-- params: account_id, key_id, phone_enc
UPDATE accounts SET key_id = $2, phone_enc = $3 WHERE id = $1
RETURNING id, key_id;

-- name: count_accounts_by_key
-- Accounts with a phone per data key: a key may be retired when its count is 0 here and
-- for patients.
-- params:
SELECT key_id, count(*) AS accounts
FROM accounts
WHERE key_id IS NOT NULL
GROUP BY key_id
ORDER BY key_id;
-- ===================================================================== hospital merchants

-- name: get_hospital_merchant
-- A hospital's WeChat Pay sub-merchant (partner mode), or no row.
-- params: hospital_id
SELECT hospital_id, sub_mchid, sub_appid, updated_at
FROM hospital_merchants
WHERE hospital_id = $1;

-- name: upsert_hospital_merchant
-- Set a hospital's sub-merchant; "inserted" is true when it had none.
-- params: hospital_id, sub_mchid, sub_appid
INSERT INTO hospital_merchants (hospital_id, sub_mchid, sub_appid)
VALUES ($1, $2, $3)
ON CONFLICT (hospital_id) DO UPDATE
    SET sub_mchid = EXCLUDED.sub_mchid, sub_appid = EXCLUDED.sub_appid, updated_at = now()
RETURNING hospital_id, sub_mchid, sub_appid, updated_at, (xmax = 0) AS inserted;


-- ===================================================================== operators' desk reads

-- name: list_hospital_day_schedules
-- A hospital's schedules on a visit date, every department's, with the department's and
-- the doctor's names, the number of slots and their total capacity (the release-day view;
-- the live counts are Redis's).
-- params: hospital_id, visit_date
SELECT s.id, s.hospital_id, s.department_id, s.doctor_id, s.visit_date, s.session,
       s.starts_at, s.ends_at, s.release_at, s.cancel_deadline, s.fee_fen, s.location,
       s.status, dep.name AS department_name, d.name AS doctor_name,
       d.title AS doctor_title, c.slot_count, c.capacity
FROM schedules s
JOIN departments dep ON dep.id = s.department_id
JOIN doctors d ON d.id = s.doctor_id
CROSS JOIN LATERAL (
    SELECT count(*) AS slot_count, coalesce(sum(sl.capacity), 0) AS capacity
    FROM slots sl
    WHERE sl.schedule_id = s.id
) c
WHERE s.hospital_id = $1 AND s.visit_date = $2
ORDER BY dep.name, s.starts_at, d.name, s.id;

-- name: list_schedules_releases
-- The waiting rooms opened for any of these schedules of a hospital (as projected from
-- their events): a sold-out room is no longer named by its schedules in Redis.
-- params: hospital_id, schedule_ids
SELECT release_id, schedule_ids
FROM room_releases
WHERE hospital_id = $1 AND schedule_ids && $2::text[]
ORDER BY t0, release_id;

-- name: find_hospital_bookings
-- A hospital's bookings for the operators' desk, narrowed by whichever of booking id, the
-- HIS's appointment number, visit date and schedule are given (NULL: any), with the
-- patient's encrypted name and phone (shown masked), the payment (the paid one first),
-- its refund, and the HIS and visit bookkeeping. Earliest visit first.
-- params: hospital_id, booking_id, his_appointment_no, visit_date, schedule_id, limit
SELECT bd.*, b.his_appointment_id, b.his_attempts, b.his_last_error, b.his_cancelled_at,
       b.checked_in_at, b.checked_in_by, b.no_show_at,
       p.id AS patient_row_id, p.name_enc, p.phone_enc,
       pay.id AS payment_id, pay.status AS payment_status,
       pay.amount_fen AS payment_amount_fen, pay.paid_at,
       r.id AS refund_id, r.status AS refund_status, r.amount_fen AS refund_amount_fen,
       r.reason AS refund_reason, r.created_at AS refund_requested_at, r.succeeded_at
FROM booking_details bd
JOIN bookings b ON b.id = bd.booking_id
JOIN patients p ON p.id = bd.patient_id
LEFT JOIN LATERAL (
    SELECT id, status, amount_fen, paid_at
    FROM payments
    WHERE hold_id = bd.booking_id
    ORDER BY (status = 'paid') DESC, created_at DESC
    LIMIT 1
) pay ON true
LEFT JOIN LATERAL (
    SELECT id, status, amount_fen, reason, created_at, succeeded_at
    FROM refunds
    WHERE hold_id = bd.booking_id
    ORDER BY created_at DESC
    LIMIT 1
) r ON true
WHERE bd.hospital_id = $1
  AND ($2::text IS NULL OR bd.booking_id = $2::text)
  AND ($3::text IS NULL OR bd.his_appointment_no = $3::text)
  AND ($4::date IS NULL OR bd.visit_date = $4::date)
  AND ($5::text IS NULL OR bd.schedule_id = $5::text)
ORDER BY bd.slot_starts_at, bd.booking_id
LIMIT $6;

-- name: list_hospital_bans
-- The bans in force at a hospital (and those for every hospital, '*'), with the patient's
-- encrypted name and phone (shown masked) and the latest decision's reason, decider and
-- no-shows. Longest-running first.
-- params: hospital_id, limit
SELECT pb.patient_id, pb.hospital_id, pb.banned_until, pb.reason, pb.decided_at,
       p.id AS patient_row_id, p.name_enc, p.phone_enc,
       h.decided_by, h.no_shows
FROM patient_bans pb
JOIN patients p ON p.id = pb.patient_id
LEFT JOIN LATERAL (
    SELECT decided_by, no_shows
    FROM patient_ban_history
    WHERE patient_id = pb.patient_id AND hospital_id = pb.hospital_id AND action = 'banned'
    ORDER BY at DESC, id DESC
    LIMIT 1
) h ON true
WHERE pb.hospital_id IN ($1, '*') AND pb.banned_until > now()
ORDER BY pb.banned_until DESC, pb.patient_id
LIMIT $2;

-- ===================================================================== staff accounts

-- name: insert_staff_account
-- A new staff account; no row when the username is taken.
-- params: username, password_hash, platform, hospitals
INSERT INTO staff_accounts (username, password_hash, platform, hospitals)
VALUES ($1, $2, $3, $4::text[])
ON CONFLICT (username) DO NOTHING
RETURNING username;

-- name: get_staff_account
-- One staff account, or no row; locked says whether it is locked now (the database's clock).
-- params: username
SELECT username, password_hash, platform, hospitals, disabled, failed_attempts,
       locked_until, locked_until IS NOT NULL AND locked_until > now() AS locked,
       created_at, updated_at, last_login_at
FROM staff_accounts
WHERE username = $1;

-- name: list_staff_accounts
-- Every staff account, by username.
-- params:
SELECT username, platform, hospitals, disabled, failed_attempts, locked_until,
       created_at, updated_at, last_login_at
FROM staff_accounts
ORDER BY username;

-- name: set_staff_password
-- A new password hash; the wrong-password count and any lock are cleared. No row: unknown.
-- params: username, password_hash
UPDATE staff_accounts
SET password_hash = $2, failed_attempts = 0, locked_until = NULL, updated_at = now()
WHERE username = $1
RETURNING username;

-- name: disable_staff_account
-- Refuse the account's sign-ins from now on (tokens already handed out run out). No row:
-- unknown.
-- params: username
UPDATE staff_accounts SET disabled = true, updated_at = now()
WHERE username = $1
RETURNING username;

-- name: record_staff_login_failure
-- Count a wrong password in one statement (parallel tries cannot outrun the lock); the
-- try that reaches max_failures locks the account for lock_s and starts the count again.
-- params: username, max_failures, lock_s
UPDATE staff_accounts
SET failed_attempts = CASE WHEN failed_attempts + 1 >= $2 THEN 0 ELSE failed_attempts + 1 END,
    locked_until = CASE
        WHEN failed_attempts + 1 >= $2 THEN now() + make_interval(secs => $3::float8)
        ELSE locked_until
    END
WHERE username = $1
RETURNING failed_attempts, locked_until, locked_until IS NOT NULL AND locked_until > now() AS locked;

-- name: record_staff_login
-- A right password: the count and any lock are cleared, the sign-in's time kept, and the
-- hash replaced when the parameters have changed since it was made (NULL: kept).
-- params: username, password_hash
UPDATE staff_accounts
SET failed_attempts = 0, locked_until = NULL, last_login_at = now(),
    password_hash = coalesce($2, password_hash)
WHERE username = $1
RETURNING username;
