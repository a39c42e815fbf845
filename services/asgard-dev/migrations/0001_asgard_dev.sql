-- The reference Asgard server's state: enrollments, sensors, tokens (as
-- SHA-256 digests, never in clear), the batches sensors uploaded, every
-- request body as received, and the intelligence it serves.

CREATE TABLE enrollments (
    token_hash  bytea PRIMARY KEY,
    sensor_id   text,
    hardware_id text,
    used_at     timestamptz
);

CREATE TABLE sensors (
    sensor_id     text PRIMARY KEY,
    hardware_id   text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tokens (
    token_hash bytea PRIMARY KEY,
    sensor_id  text NOT NULL REFERENCES sensors,
    kind       text NOT NULL CHECK (kind IN ('access', 'refresh')),
    expires_at timestamptz NOT NULL,
    revoked    boolean NOT NULL DEFAULT false,
    issued_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_sensor ON tokens (sensor_id);

-- One row per (sensor, kind, batch id): a retried batch is stored once.
CREATE TABLE batches (
    sensor_id   text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('signatures', 'alerts')),
    batch_id    text NOT NULL,
    items       integer NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, kind, batch_id)
);

-- Every request as it arrived, for tests and demos to inspect.
CREATE TABLE requests (
    seq       bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    method    text NOT NULL,
    path      text NOT NULL,
    status    integer NOT NULL,
    body      text NOT NULL
);

-- Intelligence items; `seq` grows on every change, so a cursor is the
-- highest seq a sensor has seen. Removed items stay as tombstones.
CREATE SEQUENCE intel_seq;
CREATE TABLE intel (
    kind    text NOT NULL CHECK (kind IN ('profile', 'signature', 'rule')),
    id      text NOT NULL,
    seq     bigint NOT NULL DEFAULT nextval('intel_seq'),
    body    jsonb NOT NULL,
    removed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (kind, id)
);
CREATE INDEX intel_seq_idx ON intel (seq);
