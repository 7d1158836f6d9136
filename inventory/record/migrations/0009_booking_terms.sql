-- What a booking's answer needs besides its rows: the hospital's time zone (every instant
-- of an answer is written in it) and the cancellation deadline as the cancel script
-- enforces it (the schedule's deadline, never after its session starts). Columns are
-- added at the end of the view, so CREATE OR REPLACE keeps the ones before.
CREATE OR REPLACE VIEW booking_details AS
SELECT b.id AS booking_id, b.id AS hold_id, b.tag, b.slot_id, b.schedule_id, b.account_id,
       b.patient_id, b.status, b.amount_fen, b.payment_ref, b.confirmed_at,
       b.his_appointment_no, b.visit_time, b.place, b.submitted_at, b.his_confirmed_at,
       b.cancelled_at, b.cancel_reason, b.updated_at,
       s.visit_date, s.session, s.location, sl.starts_at AS slot_starts_at,
       sl.ends_at AS slot_ends_at, s.doctor_id, d.name AS doctor_name,
       d.title AS doctor_title, s.department_id, dep.name AS department_name,
       s.hospital_id, h.name AS hospital_name,
       h.timezone AS hospital_timezone,
       LEAST(s.cancel_deadline, s.starts_at) AS cancel_deadline
FROM bookings b
JOIN slots sl ON sl.id = b.slot_id
JOIN schedules s ON s.id = b.schedule_id
JOIN doctors d ON d.id = s.doctor_id
JOIN departments dep ON dep.id = s.department_id
JOIN hospitals h ON h.id = s.hospital_id;
