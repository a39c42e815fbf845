-- What each device is, as its last device event said (the anonymized
-- signature, nothing in clear): behaviour signatures made from baseline
-- summaries are completed with its type, vendor, model, OS and OUI.
CREATE TABLE devices (
    anon_device_id text PRIMARY KEY,
    signature      jsonb NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
