-- Patients (就诊人) and the accounts that book for them.
--
-- One resident ID number is one patient, whichever account registers it: the patient row is
-- unique by the blind index of the canonical ID number, and accounts link to it. Several
-- accounts may link the same patient (a child booked by either parent); each link is made by
-- an account that proved it knows the name and the full ID number (the API compares them
-- with the stored, decrypted values before linking).
--
-- No plaintext personal data is stored: name, phone and ID number are AEAD ciphertexts
-- (field-level envelope encryption, research/reliability.md §3.4) with associated data
-- (table, column, patient id, key_id), so a ciphertext cannot be moved to another row or
-- column. Only the API, which holds the keys, reads them.

CREATE TABLE patients (
    id              inv_id PRIMARY KEY,
    -- The account that first registered the patient (audit); who may book is in
    -- account_patients.
    account_id      inv_id NOT NULL,
    -- HMAC (SHA-256 or SM3) of the canonical ID number under the blind-index key: the only
    -- way to find a patient by ID number. Never an unkeyed hash: an 18-character ID with a
    -- check digit and a birth date is brute-forceable.
    blind_index     bytea NOT NULL CHECK (octet_length(blind_index) = 32),
    -- The data key (and cipher suite) that encrypted the *_enc columns. Rotation re-encrypts
    -- row by row; a key is retired when no row names it (patients_key_id_idx counts them).
    key_id          text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    name_enc        bytea NOT NULL,
    phone_enc       bytea,
    resident_id_enc bytea NOT NULL,
    -- Both follow from the ID number (GB 11643) and are kept in clear for the HIS and for
    -- age rules (paediatrics); neither identifies a person on its own.
    gender          text CHECK (gender IN ('male', 'female')),
    birth_date      date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- "One ID number = one patient": concurrent registrations of one ID resolve to one row.
    CONSTRAINT patients_blind_index_key UNIQUE (blind_index)
);
CREATE INDEX patients_key_id_idx ON patients (key_id);

CREATE TABLE account_patients (
    account_id  inv_id NOT NULL,
    patient_id  inv_id NOT NULL REFERENCES patients (id),
    -- How the account holder relates to the patient (本人, 子女, 父母, ...).
    relation    text NOT NULL DEFAULT 'self'
                CHECK (relation IN ('self', 'child', 'parent', 'spouse', 'other')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The primary key is the ownership check "may this account book for this patient"
    -- and lists an account's patients.
    PRIMARY KEY (account_id, patient_id)
);
-- Which accounts book for a patient (audit, unlinking on request).
CREATE INDEX account_patients_patient_idx ON account_patients (patient_id);

-- The hospital blacklists (三次爽约): the durable copy of what lua/patient_ban.lua keeps in
-- the patient tag. Keyed by its natural key, so a redelivered ban event is an idempotent
-- upsert; decided_at (the event's time) keeps a late redelivery from undoing a newer
-- decision. hospital_id is '*' for a ban at every hospital, hence no foreign key. A lifted
-- ban keeps its row with banned_until = the moment it was lifted.
CREATE TABLE patient_bans (
    patient_id   inv_id NOT NULL REFERENCES patients (id),
    hospital_id  text NOT NULL CHECK (hospital_id = '*' OR hospital_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    banned_until timestamptz NOT NULL,
    reason       text NOT NULL DEFAULT '',
    decided_at   timestamptz NOT NULL,
    PRIMARY KEY (patient_id, hospital_id)
);
