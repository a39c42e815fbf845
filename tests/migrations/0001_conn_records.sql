-- The sink's own schema: one row per connection record, keyed on the
-- record's uid so a redelivered batch changes nothing.
CREATE TABLE conn_records (
    uid        TEXT PRIMARY KEY,
    batch_id   TEXT NOT NULL,
    sensor_id  TEXT NOT NULL,
    ts_us      BIGINT NOT NULL,
    orig_bytes BIGINT,
    resp_bytes BIGINT
);

-- Every delivery the sink handled, to see redeliveries after a crash.
CREATE TABLE deliveries (
    batch_id  TEXT NOT NULL,
    delivered BIGINT NOT NULL,
    records   INTEGER NOT NULL,
    at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
