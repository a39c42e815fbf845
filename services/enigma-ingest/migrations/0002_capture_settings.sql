-- Capture settings an operator set for one sensor (`heimdall-enigma-ingest
-- set-capture-settings`). A sensor without a row gets the server's
-- HEIMDALL_INGEST_CAPTURE_* defaults.
CREATE TABLE capture_settings (
    sensor_id        text    PRIMARY KEY,
    interval_seconds integer NOT NULL,
    window_seconds   integer NOT NULL,
    bpf_filter       text    NOT NULL DEFAULT '',
    interfaces       text[]  NOT NULL DEFAULT '{}',
    snaplen          integer NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (interval_seconds > 0 AND window_seconds > 0 AND window_seconds <= interval_seconds),
    CHECK (snaplen >= 0)
);
