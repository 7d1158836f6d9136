-- Hospital staff's sign-in to the staff console (docs/auth.md, "Staff sign-in").
--
-- A staff account signs in with a username and a password and gets an operator token:
-- the platform's (every hospital) or a hospital operator's (the hospitals listed). Only
-- the password's argon2id hash (PHC string, salt and parameters included) is stored.
-- Wrong passwords are counted; past the limit the account is locked until locked_until.
-- Accounts are managed with `inventory staff`; none is ever deleted (disabled instead),
-- so the audit log's account ids keep naming someone.
CREATE TABLE staff_accounts (
    -- The username is the tokens' "sub" and the audit log's account id.
    username        text PRIMARY KEY CHECK (username ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    -- A platform operator acts for every hospital; a hospital operator for those listed.
    platform        boolean NOT NULL,
    hospitals       text[] NOT NULL DEFAULT '{}',
    disabled        boolean NOT NULL DEFAULT false,
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz,
    CONSTRAINT staff_accounts_scope CHECK (
        platform = (cardinality(hospitals) = 0) AND cardinality(hospitals) <= 256
    )
);
