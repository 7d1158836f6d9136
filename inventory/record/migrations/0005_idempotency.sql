-- Idempotency-Key records of the API's mutating calls that do not go through a Lua step
-- (patient registration, payment start, operator calls). Reserve and confirm record their
-- keys inside the script, atomically with the change; their durable record is the hold.
--
-- Stripe's semantics (research/reliability.md §1.7): the first request claims the key with
-- INSERT ... ON CONFLICT DO NOTHING; a retry with the same fingerprint gets the stored
-- response; the same key with another fingerprint is idempotency_key_reused. Records are
-- kept at least 24 hours (prune_idempotency_keys never deletes younger ones).
CREATE TABLE idempotency_keys (
    account_id      inv_id NOT NULL,
    key             text NOT NULL CHECK (key ~ '^[!-~]{1,255}$'),   -- printable ASCII
    -- What the key was used for, e.g. "POST /v1/patients".
    operation       text NOT NULL CHECK (operation <> ''),
    -- Digest of the operation's parameters; a retry must match it.
    fingerprint     text NOT NULL CHECK (fingerprint <> ''),
    -- NULL while the first request is still running (a concurrent retry waits or gets 409).
    response_status integer CHECK (response_status BETWEEN 100 AND 599),
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    -- Keys are per account: two accounts may pick the same key.
    PRIMARY KEY (account_id, key),
    CHECK ((completed_at IS NULL) = (response_status IS NULL))
);
-- Pruning by age.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
