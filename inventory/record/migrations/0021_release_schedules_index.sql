-- A schedule's waiting room, found from the schedule (the catalogue's views name the
-- release a patient joins before its release instant): room_releases by schedule id.
CREATE INDEX room_releases_schedules ON room_releases USING gin (schedule_ids);
