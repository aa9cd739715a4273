-- Erasure of a user (`DELETE /stream/users/{user_id}`; crates/ingest-worker/src/erasure.rs).
--
-- One row per erased user: the latest erasure's moment of acceptance by the gateway.
-- Every write of the user received at or before `erased_through` is erased: the stored
-- ones by the erasure itself, the ones still on their way (in Kafka, in a replay, in a
-- redriven dead letter) by every worker batch, which drops them. Writes received later
-- stand. The row holds ids and times only, and is purged with the contact tombstones
-- after the tombstone horizon (replays from before it are refused by `ingestctl replay`).
CREATE TABLE user_erasures (
    project         text        NOT NULL,
    datasource      text        NOT NULL,
    user_id         text        NOT NULL,
    -- The `received_at` of the latest erasure message: writes received up to here are erased.
    erased_through  timestamptz NOT NULL,
    -- When a worker recorded it, and when it finished deleting what was stored
    -- (NULL while it runs; reset when a later erasure of the user is recorded).
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    -- Rows deleted by the erasures of this user so far.
    events_erased   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (project, datasource, user_id)
);

-- Worker batches look up the erasures that can concern them (erased at or after their
-- oldest write's receipt) without reading them all; the purge finds old ones.
CREATE INDEX user_erasures_by_erased_through ON user_erasures (erased_through);

-- The latest receipt of any copy of an event (NULL: only the stored copy's own). An
-- erasure deletes the user's events received up to it, except one whose retry was
-- received after it: that retry was accepted, deduplicated against the stored copy, and
-- must stay stored.
ALTER TABLE event_ids ADD COLUMN last_received_at timestamptz;

-- Erasure requests have their own requests-per-minute limit.
ALTER TABLE rate_limits DROP CONSTRAINT rate_limits_endpoint_check;
ALTER TABLE rate_limits ADD CONSTRAINT rate_limits_endpoint_check
    CHECK (endpoint IN ('stream', 'contacts', 'events', 'contacts_delete', 'specs', 'erasures'));
