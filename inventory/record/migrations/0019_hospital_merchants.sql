-- WeChat Pay partner mode (服务商): the platform is the service provider (sp_mchid) and
-- each hospital a sub-merchant (sub_mchid) that collects its own fees and pays its own
-- refunds. A hospital without a row here takes no paid bookings in that mode.
CREATE TABLE hospital_merchants (
    hospital_id inv_id PRIMARY KEY REFERENCES hospitals (id),
    sub_mchid   text NOT NULL CHECK (sub_mchid ~ '^[0-9]{8,32}$'),
    -- The hospital's own mini-program, when payers pay inside it ('' : the platform's).
    sub_appid   text NOT NULL DEFAULT '' CHECK (sub_appid ~ '^([A-Za-z0-9_-]{1,32})?$'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The sub-merchant that collected a payment: its queries, close and refund go to the same
-- one even if the hospital's changes later (NULL: the service's own merchant).
ALTER TABLE payments ADD COLUMN sub_mchid text;
