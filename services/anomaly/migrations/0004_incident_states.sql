-- Incidents close by inactivity (an hour of record time without an alert
-- from their device) or by a person, and a person may acknowledge one.
-- state is the IncidentState number: 1 open, 2 acknowledged, 3 closed.
-- A change of state waits for the outbox until state_published; a close
-- by a person waits until the replica holding the device has made the
-- detectors forget the incident (detached), so its next alert opens a new
-- one.
ALTER TABLE incidents
    ADD COLUMN state           smallint NOT NULL DEFAULT 1,
    ADD COLUMN closed_us       bigint,
    ADD COLUMN changed_by       text,
    ADD COLUMN note            text,
    ADD COLUMN state_published boolean  NOT NULL DEFAULT true,
    ADD COLUMN detached        boolean  NOT NULL DEFAULT true;

CREATE INDEX incidents_unpublished ON incidents (updated_us) WHERE NOT state_published;
CREATE INDEX incidents_attached ON incidents (closed_us) WHERE NOT detached;
