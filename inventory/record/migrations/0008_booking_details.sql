-- One booking with where and when the visit is: the joins the booking reads share
-- (get_booking, get_account_booking, list_account_bookings). A plain view: Postgres
-- inlines it, so the account index on bookings still serves the account queries.
CREATE VIEW booking_details AS
SELECT b.id AS booking_id, b.id AS hold_id, b.tag, b.slot_id, b.schedule_id, b.account_id,
       b.patient_id, b.status, b.amount_fen, b.payment_ref, b.confirmed_at,
       b.his_appointment_no, b.visit_time, b.place, b.submitted_at, b.his_confirmed_at,
       b.cancelled_at, b.cancel_reason, b.updated_at,
       s.visit_date, s.session, s.location, sl.starts_at AS slot_starts_at,
       sl.ends_at AS slot_ends_at, s.doctor_id, d.name AS doctor_name,
       d.title AS doctor_title, s.department_id, dep.name AS department_name,
       s.hospital_id, h.name AS hospital_name
FROM bookings b
JOIN slots sl ON sl.id = b.slot_id
JOIN schedules s ON s.id = b.schedule_id
JOIN doctors d ON d.id = s.doctor_id
JOIN departments dep ON dep.id = s.department_id
JOIN hospitals h ON h.id = s.hospital_id;
