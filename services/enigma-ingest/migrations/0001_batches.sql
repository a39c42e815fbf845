-- What the reference Enigma ingest server stored: one row per batch,
-- de-duplicated on (sensor_id, batch_id), with the decompressed log lines.
CREATE TABLE batches (
    sensor_id     text   NOT NULL,
    batch_id      text   NOT NULL,
    log_type      text   NOT NULL,
    format        text   NOT NULL,
    compression   text   NOT NULL,
    records       bigint NOT NULL,
    payload_bytes bigint NOT NULL,
    first_ts_us   bigint NOT NULL,
    last_ts_us    bigint NOT NULL,
    agent_version text   NOT NULL,
    created_us    bigint NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- The log lines, decompressed (Zeek JSON lines).
    body          bytea  NOT NULL,
    PRIMARY KEY (sensor_id, batch_id)
);
CREATE INDEX batches_received ON batches (received_at);

-- Every call, for tests and demos to see what the uploader did.
CREATE TABLE calls (
    seq       bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    method    text NOT NULL,
    sensor_id text NOT NULL,
    batch_id  text NOT NULL,
    outcome   text NOT NULL
);
