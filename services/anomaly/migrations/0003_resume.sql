-- What each monitor learnt from records (its detectors' windows,
-- suppressions and incidents, and its profiles), saved at every checkpoint
-- in one transaction with how far each consumer had been applied then. A
-- restarted replica resumes the monitors and has the bus deliver again
-- every message after those positions, so a crash loses nothing it had
-- applied and applies nothing twice.
CREATE TABLE monitor_state (
    sensor_id text        NOT NULL,
    part      integer     NOT NULL,
    body      bytea       NOT NULL,
    saved_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, part)
);

CREATE TABLE consumer_positions (
    durable    text        PRIMARY KEY,
    stream_seq bigint      NOT NULL,
    saved_at   timestamptz NOT NULL DEFAULT now()
);
