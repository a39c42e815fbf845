-- The fingerprint service's device registry and its event outbox.

-- One row per device: the registry's whole state of it, as JSON (see
-- DeviceState in shared/fingerprint/src/registry.rs), plus the columns
-- people query by.
CREATE TABLE devices (
    sensor_id     text    NOT NULL,
    device_id     text    NOT NULL,
    revision      bigint  NOT NULL,
    vendor        text    NOT NULL,
    device_type   text    NOT NULL,
    model         text    NOT NULL,
    confidence    double precision NOT NULL,
    macs          text[]  NOT NULL,
    first_seen_us bigint  NOT NULL,
    last_seen_us  bigint  NOT NULL,
    state         jsonb   NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, device_id)
);
CREATE INDEX devices_macs ON devices USING gin (macs);

-- Device events, written in the same transaction as the device rows they
-- describe and published on NATS from here (a transactional outbox): an
-- event is never lost between the database and the bus, and never made
-- twice (event ids are deterministic: device id and revision).
CREATE TABLE device_events (
    seq        bigserial PRIMARY KEY,
    event_id   text   NOT NULL UNIQUE,
    sensor_id  text   NOT NULL,
    device_id  text   NOT NULL,
    kind       text   NOT NULL,
    ts_us      bigint NOT NULL,
    body       bytea  NOT NULL,
    published  boolean NOT NULL DEFAULT false
);
CREATE INDEX device_events_unpublished ON device_events (seq) WHERE NOT published;
