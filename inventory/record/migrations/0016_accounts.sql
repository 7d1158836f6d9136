-- Patients' accounts and their login sessions (docs/auth.md).
--
-- An account is what a front end's user logs in as: by WeChat (keyed by the openid under
-- our mini-program's app id, and by the unionid when the platform gives one) or by an
-- SMS code (keyed by the phone). The phone is personal data: stored encrypted (AEAD bound
-- to accounts.phone_enc and the account id, as patients' fields are) and found again
-- through its keyed blind index, never in clear. Accounts minted by hand for tests and
-- operators (`inventory token`) have no row: nothing refers to this table but sessions.
CREATE TABLE accounts (
    id             inv_id PRIMARY KEY,
    wechat_openid  text CHECK (wechat_openid ~ '^[A-Za-z0-9_-]{1,128}$'),
    wechat_unionid text CHECK (wechat_unionid ~ '^[A-Za-z0-9_-]{1,128}$'),
    -- HMAC-SHA256 of "mobile:<11 digits>" under the blind-index key.
    phone_index    bytea CHECK (octet_length(phone_index) = 32),
    phone_enc      bytea,
    -- The field key that encrypted phone_enc (rotation re-encrypts row by row).
    key_id         text CHECK (key_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_wechat_openid_key UNIQUE (wechat_openid),
    CONSTRAINT accounts_wechat_unionid_key UNIQUE (wechat_unionid),
    CONSTRAINT accounts_phone_index_key UNIQUE (phone_index),
    CONSTRAINT accounts_has_a_login CHECK (wechat_openid IS NOT NULL OR phone_index IS NOT NULL),
    CONSTRAINT accounts_phone_whole CHECK (
        (phone_index IS NULL) = (phone_enc IS NULL) AND (phone_enc IS NULL) = (key_id IS NULL)
    )
);

-- One login: every refresh token it hands out belongs to it (a token "family"). Its id is
-- the access tokens' "sid". Revoked by logout, or when a refresh token already exchanged
-- comes back (reuse: someone holds a copy), which ends every token of the family.
CREATE TABLE login_sessions (
    id             inv_id PRIMARY KEY,
    account_id     inv_id NOT NULL REFERENCES accounts (id),
    method         text NOT NULL CHECK (method IN ('wechat', 'sms')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The session's end however often it is refreshed.
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'reuse')),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX login_sessions_account_idx ON login_sessions (account_id);

-- Refresh tokens, by the SHA-256 of the token (256 random bits: the token itself is never
-- stored). Each is exchanged once (used_at), for the next one of its session.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id inv_id NOT NULL REFERENCES login_sessions (id),
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
