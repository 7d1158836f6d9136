-- The operator audit log: one row per operator action (every operator route that is not a
-- GET), append-only. The API writes the row before the action runs (no row, no action:
-- an audit that cannot be written refuses the action) and completes it with the
-- action's outcome once; a row left without an outcome belongs to a process that died
-- during the action. Nothing may delete a row or change a completed one.
CREATE TABLE operator_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor inv_id NOT NULL,
    role text NOT NULL CHECK (role IN ('platform', 'hospital')),
    -- The hospitals the operator's token names; NULL for the platform's operators.
    scope text[],
    -- The hospital acted on, once the route has checked it (NULL: none, or not reached).
    hospital_id text,
    method text NOT NULL,
    route text NOT NULL,
    -- The route's path parameters: which object.
    object jsonb NOT NULL,
    request_id text NOT NULL,
    status smallint,
    before jsonb,
    after jsonb,
    finished_at timestamptz
);

CREATE INDEX operator_audit_hospital_at ON operator_audit (hospital_id, at);
CREATE INDEX operator_audit_at ON operator_audit (at);

CREATE FUNCTION operator_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'operator_audit is append-only';
    END IF;
    -- The one change allowed: the outcome of a row that has none yet.
    IF OLD.status IS NOT NULL
       OR NEW.id IS DISTINCT FROM OLD.id OR NEW.at IS DISTINCT FROM OLD.at
       OR NEW.actor IS DISTINCT FROM OLD.actor OR NEW.role IS DISTINCT FROM OLD.role
       OR NEW.scope IS DISTINCT FROM OLD.scope OR NEW.method IS DISTINCT FROM OLD.method
       OR NEW.route IS DISTINCT FROM OLD.route OR NEW.object IS DISTINCT FROM OLD.object
       OR NEW.request_id IS DISTINCT FROM OLD.request_id
       OR NEW.status IS NULL THEN
        RAISE EXCEPTION 'operator_audit is append-only: only an unfinished row gets its outcome';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER operator_audit_no_update BEFORE UPDATE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION operator_audit_append_only();
CREATE TRIGGER operator_audit_no_delete BEFORE DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION operator_audit_append_only();
CREATE TRIGGER operator_audit_no_truncate BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION operator_audit_append_only();
