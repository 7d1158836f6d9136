-- The 候补 waitlist's entries, as their events record them (waitlist_joined, then
-- waitlist_offered and one of waitlist_taken, _lapsed, _declined, _refused, _left): the
-- record an audit reads, and what lists an account's entries. Redis keeps the live queue;
-- a row moves forward only (by the tag's seq of the event it reflects).
CREATE TABLE waitlist_entries (
    -- "<department_id>.<yyyymmdd>.<token>", like a hold id: names its tag.
    id            inv_hold_id PRIMARY KEY,
    tag           inv_tag NOT NULL,
    schedule_id   inv_id NOT NULL,
    account_id    inv_id NOT NULL,
    patient_id    inv_id NOT NULL,
    channel       text NOT NULL CHECK (channel ~ '^[a-z0-9_]{1,32}$'),
    join_seq      bigint NOT NULL CHECK (join_seq > 0),  -- the tag's join order
    state         text NOT NULL CHECK (state IN ('waiting', 'offered', 'taken', 'lapsed',
                                                 'declined', 'refused', 'left')),
    -- The hold the entry's offer takes (fixed at join; a holds row once offered).
    offer_hold_id inv_hold_id NOT NULL,
    slot_id       inv_id,
    joined_at     timestamptz NOT NULL,
    offered_at    timestamptz,
    ended_at      timestamptz,
    end_reason    text NOT NULL DEFAULT '',
    last_seq      bigint NOT NULL CHECK (last_seq > 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tag::text = split_part(id, '.', 1) || ':' || split_part(id, '.', 2)),
    CHECK ((state IN ('waiting', 'offered')) = (ended_at IS NULL))
);
-- An account's entries, newest first (list_account_waitlist).
CREATE INDEX waitlist_entries_account_idx ON waitlist_entries (account_id, joined_at DESC);
-- A schedule's waitlist, in join order (operators' views and audits).
CREATE INDEX waitlist_entries_schedule_idx ON waitlist_entries (schedule_id, join_seq);
