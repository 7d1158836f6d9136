-- The operators' desk (the staff console) finds a hospital's bookings by the HIS's
-- appointment number (a patient at the window reads it from the slip) and lists a
-- hospital's schedules of a day, every department's: neither was indexed.
CREATE INDEX bookings_his_appointment_no_idx ON bookings (his_appointment_no)
    WHERE his_appointment_no IS NOT NULL;
CREATE INDEX schedules_hospital_date_idx ON schedules (hospital_id, visit_date);
