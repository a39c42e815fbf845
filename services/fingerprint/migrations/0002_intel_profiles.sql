-- Golden profiles from Asgard in force (protobuf GoldenProfile), from the
-- intel stream: their vendor-specific destinations are device hints. A
-- restarted replica rebuilds its hints from here before it takes a message.
CREATE TABLE intel_profiles (
    profile_id text   PRIMARY KEY,
    version    bigint NOT NULL,
    body       bytea  NOT NULL
);
