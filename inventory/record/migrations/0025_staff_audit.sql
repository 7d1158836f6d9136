-- Staff routes (a kiosk's or the front desk's check-in) change bookings, so they are
-- audited like operator routes: their entries carry the role 'staff' (the token's
-- hospitals in scope, NULL when it names none).
ALTER TABLE operator_audit DROP CONSTRAINT operator_audit_role_check;
ALTER TABLE operator_audit
    ADD CONSTRAINT operator_audit_role_check CHECK (role IN ('platform', 'hospital', 'staff'));
