-- Catalogue: hospitals, their department tree, doctors, schedules (排班) and slots (号源).
-- Synced from the HIS (the system of record) and edited by operators; the API reads it to
-- show the patient's path and to load schedules into Redis (lua/load_schedule.lua).

-- Every id that ends up inside a Redis key name: ASCII letters, digits, "_" and "-", at
-- most 64 (inventory/store/keys.py ID_RE), so ":", "|", "." and "{}" stay free as separators.
CREATE DOMAIN inv_id AS text
    CHECK (VALUE ~ '^[A-Za-z0-9_-]{1,64}$');

-- A hold id names its tag: "<department_id>.<yyyymmdd>.<24 base32 chars>"
-- (inventory/store/keys.py hold_id_for). A booking keeps the id of its hold.
CREATE DOMAIN inv_hold_id AS text
    CHECK (VALUE ~ '^[A-Za-z0-9_-]{1,64}\.[0-9]{8}\.[a-z2-7]{24}$');

-- A tag: one department on one visit date, "<department_id>:<yyyymmdd>", or a patient tag
-- "p:<patient_id>" (rules that span department-day tags).
CREATE DOMAIN inv_tag AS text
    CHECK (VALUE ~ '^([A-Za-z0-9_-]{1,64}:[0-9]{8}|p:[A-Za-z0-9_-]{1,64})$');

CREATE TABLE hospitals (
    id          inv_id PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    -- IANA zone the hospital's wall-clock rules are written in (release time, cancellation
    -- deadline "previous_day_16:00"); validated by the API with zoneinfo.
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai' CHECK (timezone <> ''),
    -- The hospital's booking policy, read into inventory.domain.HospitalPolicy plus the
    -- wall-clock rules (docs/schema.md lists the keys). Absent keys take the defaults, so
    -- a new rule never needs a migration; its shape is checked in Python where the rule is.
    policy      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(policy) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE departments (
    -- Department ids are unique across hospitals: a tag is "<department_id>:<yyyymmdd>"
    -- and does not name the hospital.
    id          inv_id PRIMARY KEY,
    hospital_id inv_id NOT NULL REFERENCES hospitals (id),
    -- NULL for a top-level department; otherwise a department of the same hospital.
    parent_id   inv_id,
    name        text NOT NULL CHECK (name <> ''),
    sort_order  integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Target of the composite foreign keys below, which keep every reference inside one
    -- hospital (a doctor or a sub-department cannot hang under another hospital's ward).
    UNIQUE (hospital_id, id),
    CHECK (parent_id IS DISTINCT FROM id),
    -- Deferred so that a sync can write a subtree in any order inside one transaction.
    FOREIGN KEY (hospital_id, parent_id) REFERENCES departments (hospital_id, id)
        DEFERRABLE INITIALLY DEFERRED
);
-- The department tree of a hospital (list_department_tree) and the children of a parent.
CREATE INDEX departments_hospital_parent_idx ON departments (hospital_id, parent_id, sort_order);
CREATE INDEX departments_parent_idx ON departments (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE doctors (
    id            inv_id PRIMARY KEY,
    hospital_id   inv_id NOT NULL,
    department_id inv_id NOT NULL,
    name          text NOT NULL CHECK (name <> ''),
    title         text NOT NULL DEFAULT '',  -- 职称, e.g. 主任医师
    specialty     text NOT NULL DEFAULT '',  -- 擅长
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (hospital_id, id),
    FOREIGN KEY (hospital_id, department_id) REFERENCES departments (hospital_id, id)
        DEFERRABLE INITIALLY DEFERRED
);
-- Doctors of a department (list_department_doctors).
CREATE INDEX doctors_department_idx ON doctors (department_id, name);

CREATE TABLE schedules (
    id              inv_id PRIMARY KEY,
    hospital_id     inv_id NOT NULL,
    department_id   inv_id NOT NULL,
    doctor_id       inv_id NOT NULL,
    -- With department_id this is the schedule's tag; it never changes (trigger below).
    visit_date      date NOT NULL,
    session         text NOT NULL CHECK (session IN ('morning', 'afternoon', 'evening')),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    release_at      timestamptz NOT NULL,     -- 放号时间: first moment a slot may be reserved
    cancel_deadline timestamptz NOT NULL,     -- bookings may be cancelled until then
    fee_fen         bigint NOT NULL CHECK (fee_fen >= 0),
    location        text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A schedule is one doctor, one date, one session (DESIGN.md vocabulary).
    UNIQUE (doctor_id, visit_date, session),
    CHECK (starts_at < ends_at),
    -- Reserve refuses at or after the session start, so a later release sells nothing.
    CHECK (release_at <= starts_at),
    CHECK (cancel_deadline <= ends_at),
    FOREIGN KEY (hospital_id, department_id) REFERENCES departments (hospital_id, id)
        DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (hospital_id, doctor_id) REFERENCES doctors (hospital_id, id)
        DEFERRABLE INITIALLY DEFERRED
);
-- Schedules of a department on a date (list_department_schedules) are exactly the
-- schedules of one tag, which is also what a rebuild of that tag reads.
CREATE INDEX schedules_department_date_idx ON schedules (department_id, visit_date, starts_at);

CREATE TABLE slots (
    id          inv_id PRIMARY KEY,
    schedule_id inv_id NOT NULL REFERENCES schedules (id) DEFERRABLE INITIALLY DEFERRED,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    -- How many patients the window takes. Redis keeps remaining/held/booked/waiting; this
    -- is the capacity the operator or the HIS set (加号 moves it through adjust_capacity).
    capacity    integer NOT NULL CHECK (capacity >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (starts_at < ends_at),
    -- Target of holds' (slot_id, schedule_id) foreign key: a hold's slot is in its schedule.
    UNIQUE (id, schedule_id)
);
-- Slots of a schedule in time order (list_schedule_slots).
CREATE INDEX slots_schedule_idx ON slots (schedule_id, starts_at);

-- A schedule's tag (department, date) and a slot's schedule are fixed once written: Redis
-- keeps the schedule under that tag and refuses a slot that moves (slot_schedule_mismatch),
-- so a change here would split one schedule between two tags. Move by suspending the old
-- schedule and creating a new one.
CREATE FUNCTION inv_schedule_tag_fixed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.department_id IS DISTINCT FROM OLD.department_id
       OR NEW.visit_date IS DISTINCT FROM OLD.visit_date THEN
        RAISE EXCEPTION 'schedule % cannot move to another department or date', OLD.id
            USING ERRCODE = 'check_violation', HINT = 'Suspend it and create a new schedule.';
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION inv_slot_schedule_fixed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.schedule_id IS DISTINCT FROM OLD.schedule_id THEN
        RAISE EXCEPTION 'slot % cannot move to another schedule', OLD.id
            USING ERRCODE = 'check_violation', HINT = 'Create a new slot instead.';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER schedules_tag_fixed BEFORE UPDATE OF department_id, visit_date ON schedules
    FOR EACH ROW EXECUTE FUNCTION inv_schedule_tag_fixed();
CREATE TRIGGER slots_schedule_fixed BEFORE UPDATE OF schedule_id ON slots
    FOR EACH ROW EXECUTE FUNCTION inv_slot_schedule_fixed();
