-- The anomaly service's state: device profiles (baselines and the hour
-- being collected), every baseline version, alerts and incidents, the
-- intelligence in force, and rollback requests.

-- One row per device: its whole profile as JSON (DeviceProfile in
-- shared/detect/src/baseline.rs), written when its baseline gets a new
-- version and at every checkpoint. A restarted replica resumes from here.
CREATE TABLE profiles (
    sensor_id   text    NOT NULL,
    device_key  text    NOT NULL,
    part        integer NOT NULL,
    version     bigint  NOT NULL,
    confidence  double precision NOT NULL,
    device_type text    NOT NULL,
    body        jsonb   NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, device_key)
);
CREATE INDEX profiles_part ON profiles (sensor_id, part);

-- Every stored version of every baseline (Baseline as JSON): what a
-- rollback returns to. Old versions are pruned beyond the configured count.
CREATE TABLE baseline_versions (
    sensor_id  text    NOT NULL,
    device_key text    NOT NULL,
    version    bigint  NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    confidence double precision NOT NULL,
    reason     text    NOT NULL,
    baseline   jsonb   NOT NULL,
    PRIMARY KEY (sensor_id, device_key, version)
);

-- Alerts, written before the batch that raised them is acknowledged, and
-- published on NATS from here (a transactional outbox). alert_id is
-- deterministic (suppression key and time), so a redelivered batch adds
-- nothing.
CREATE TABLE alerts (
    seq         bigserial PRIMARY KEY,
    alert_id    text    NOT NULL UNIQUE,
    sensor_id   text    NOT NULL,
    device_id   text    NOT NULL,
    alert_type  text    NOT NULL,
    severity    integer NOT NULL,
    score       double precision NOT NULL,
    ts_us       bigint  NOT NULL,
    incident_id text    NOT NULL,
    description text    NOT NULL,
    body        bytea   NOT NULL,
    published   boolean NOT NULL DEFAULT false
);
CREATE INDEX alerts_unpublished ON alerts (seq) WHERE NOT published;
CREATE INDEX alerts_sensor_ts ON alerts (sensor_id, ts_us);

-- Incidents: related alerts of one device, kept up to date as alerts join.
CREATE TABLE incidents (
    incident_id text    PRIMARY KEY,
    sensor_id   text    NOT NULL,
    device_id   text    NOT NULL,
    opened_us   bigint  NOT NULL,
    updated_us  bigint  NOT NULL,
    severity    integer NOT NULL,
    alert_types text[]  NOT NULL,
    alert_count integer NOT NULL,
    summary     text    NOT NULL
);

-- Intelligence in force (protobuf ThreatSignature / GoldenProfile), so a
-- restarted replica applies it before it judges a record.
CREATE TABLE intel (
    kind text  NOT NULL,
    id   text  NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (kind, id)
);

-- Rollbacks asked for from the command line, applied by the replica that
-- holds the device (at once when running, else when it starts).
CREATE TABLE rollback_requests (
    sensor_id    text   NOT NULL,
    device_key   text   NOT NULL,
    version      bigint NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, device_key)
);

-- What the fingerprint service said about each device (its id and type by
-- MAC), so alerts name devices and golden profiles find them after a
-- restart.
CREATE TABLE devices (
    sensor_id   text  NOT NULL,
    mac         bytea NOT NULL,
    device_id   text  NOT NULL,
    device_type text  NOT NULL,
    PRIMARY KEY (sensor_id, mac)
);
