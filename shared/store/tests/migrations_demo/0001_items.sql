-- A table as a service would own it: unqualified, so it lands in the
-- service's schema.
CREATE TABLE items (
    uid  TEXT PRIMARY KEY,
    seen BIGINT NOT NULL
);
