-- Baseline summaries waiting to be published (protobuf BaselineSummary):
-- written in the transaction that stores the version they summarise,
-- published on `sensor.<id>.baselines` from here and then deleted (an
-- outbox, like the alerts table's unpublished rows).
CREATE TABLE summaries (
    seq        bigserial PRIMARY KEY,
    sensor_id  text    NOT NULL,
    device_key text    NOT NULL,
    version    bigint  NOT NULL,
    body       bytea   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sensor_id, device_key, version)
);
