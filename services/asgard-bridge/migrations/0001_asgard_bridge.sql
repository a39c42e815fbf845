-- The bridge's offline queue and its small state.

-- Anonymized items waiting for Asgard, oldest first. A row leaves when
-- Asgard acknowledged the batch that held it, or when the queue's bounds
-- drop it (logged and counted).
CREATE TABLE outbox (
    seq        bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('signature', 'alert')),
    item       jsonb NOT NULL,
    bytes      integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_kind_seq ON outbox (kind, seq);

-- NATS messages already queued: a redelivered message is not queued twice.
CREATE TABLE consumed (
    msg_id text PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consumed_at ON consumed (at);

-- Intelligence cursor and ETag, and other small values.
CREATE TABLE state (
    key   text PRIMARY KEY,
    value text NOT NULL
);
