-- The durable end of the outbox (DESIGN.md "Durability contract", research/reliability.md
-- §1.6): every Lua step appends one event to its tag's outbox stream, stamped with the tag's
-- next seq; the persister reads the streams (XREADGROUP), writes each batch here in one
-- transaction, and only then XACKs and trims.

-- Every event of every tag, once. Delivery is at-least-once (a persister can die after the
-- commit and before XACK, XAUTOCLAIM redelivers), so the write is
-- INSERT ... ON CONFLICT (tag, seq) DO NOTHING, and (tag, seq) is the idempotency key: a
-- business key minted by the script that made the change, not the stream id, which is tied
-- to one Redis history. It is only sound with the fence below: after Redis loses state its
-- seq would restart below ours and new events would collide with old ones, so such a tag
-- refuses changes until rebuilt from here, and the rebuild continues from last_seq.
-- record_event reports a conflict whose stored stream_id differs: that is such a collision.
CREATE TABLE inventory_events (
    tag         inv_tag NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    type        text NOT NULL CHECK (type ~ '^[a-z_]{1,40}$'),
    at          timestamptz NOT NULL,            -- the script's clock (the event's "at", ms)
    -- The remaining fields of the entry (ids, counts, ...); never personal data.
    payload     jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    stream_id   text NOT NULL CHECK (stream_id ~ '^[0-9]+-[0-9]+$'),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag, seq)
);
-- Retention and "what arrived when" scans are by time; BRIN stays tiny on append-only data.
CREATE INDEX inventory_events_received_brin ON inventory_events USING brin (received_at);

-- The highest seq Postgres has recorded per tag. The fence compares the tag's seq in Redis
-- (meta hash) with this on start-up and after a failover: Redis behind Postgres means Redis
-- lost acknowledged steps, and the tag refuses reserves until `inventory rebuild`.
-- Maintained by the trigger below in the same transaction as the events, so it can never
-- run ahead of or behind inventory_events, whoever writes them.
CREATE TABLE tag_sequences (
    tag        inv_tag PRIMARY KEY,
    last_seq   bigint NOT NULL CHECK (last_seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION inv_advance_tag_sequences() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- One row per tag per statement; tags in order, so that two writers whose batches
    -- share tags lock their tag_sequences rows in the same order.
    INSERT INTO tag_sequences AS t (tag, last_seq)
    SELECT tag, max(seq) FROM new_events GROUP BY tag ORDER BY tag
    ON CONFLICT (tag) DO UPDATE
        SET last_seq = EXCLUDED.last_seq, updated_at = now()
        WHERE t.last_seq < EXCLUDED.last_seq;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inventory_events_advance_tag_sequences
    AFTER INSERT ON inventory_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION inv_advance_tag_sequences();

-- Outbox entries the persister could not apply after its retries (malformed entry, a
-- constraint that refuses it). Writing the entry here is its commit: the stream can then be
-- acknowledged without losing it. An operator fixes the cause and replays, then sets
-- resolved_at. One row per entry; a repeated failure bumps attempts.
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream          text NOT NULL,
    entry_id        text NOT NULL CHECK (entry_id ~ '^[0-9]+-[0-9]+$'),
    -- From the entry when it had them; plain columns, as a bad entry may carry a bad tag.
    tag             text,
    seq             bigint,
    payload         jsonb NOT NULL,                 -- the entry's fields as received
    error           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    CONSTRAINT dead_letters_entry_key UNIQUE (stream, entry_id)
);
-- What still needs an operator (the dead-letter metric and alert).
CREATE INDEX dead_letters_open_idx ON dead_letters (last_failed_at) WHERE resolved_at IS NULL;
