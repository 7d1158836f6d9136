-- Release day's waiting rooms, projected by the persister from their outbox events
-- (room_opened, room_joined, room_drawn, room_admitted, room_admission_used,
-- room_admission_lapsed, room_sold_out), so a release is audited from Postgres alone:
-- who joined when, the committed and revealed seed, who was admitted in which position,
-- which tokens were used by which hold and which lapsed. inventory_events keeps the
-- events themselves.
CREATE TABLE room_releases (
    release_id text PRIMARY KEY,
    tag text NOT NULL,
    hospital_id text NOT NULL,
    schedule_ids text[] NOT NULL,
    t0 timestamptz NOT NULL,
    opens_at timestamptz NOT NULL,
    -- SHA-256 of the seed, published from the opening; the seed once drawn.
    seed_hash text NOT NULL,
    seed text,
    factor numeric NOT NULL,
    token_s numeric NOT NULL,
    opened_at timestamptz NOT NULL,
    drawn integer,
    drawn_at timestamptz,
    sold_out_at timestamptz
);

CREATE TABLE room_tickets (
    ticket_id text PRIMARY KEY,
    release_id text NOT NULL,
    account_id text NOT NULL,
    patient_id text NOT NULL,
    joined_at timestamptz NOT NULL,
    -- 0: joined before T0 (drawn); else the arrival order after T0.
    late_seq integer NOT NULL,
    -- The place in the queue, recorded at admission (admission goes in queue order);
    -- the drawn places of tickets never admitted follow from the seed.
    position integer,
    admitted_at timestamptz,
    token_expires_at timestamptz,
    outcome text NOT NULL DEFAULT 'waiting'
        CHECK (outcome IN ('waiting', 'admitted', 'reserved', 'expired')),
    hold_id text,
    UNIQUE (release_id, account_id, patient_id)
);

CREATE INDEX room_tickets_release_position ON room_tickets (release_id, position);
