-- Versions for contact writes: the Kafka offset of the write (one key, one partition,
-- so offsets order a user's writes exactly as they were accepted). A redelivered or
-- replayed older write never overwrites a newer one.
ALTER TABLE contacts ADD COLUMN version bigint NOT NULL DEFAULT -1;

-- A deleted contact leaves its version here, so an older upsert delivered again after
-- the delete cannot bring it back.
CREATE TABLE contact_tombstones (
    project     text        NOT NULL,
    datasource  text        NOT NULL,
    user_id     text        NOT NULL,
    version     bigint      NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, datasource, user_id)
);
