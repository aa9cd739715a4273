-- Data lifecycle: what an operator sets (`ingestctl retention set`) and what the
-- maintenance job (crates/ingest-worker/src/lifecycle.rs, run by every worker on a
-- schedule, one at a time) has done. One row each.

CREATE TABLE lifecycle_settings (
    singleton              boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Tombstones of deleted contacts older than this are purged. A replay from before
    -- the purge horizon is refused (it could resurrect a deleted contact).
    tombstone_horizon_days integer     NOT NULL DEFAULT 30
                                       CHECK (tombstone_horizon_days BETWEEN 1 AND 36500),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
INSERT INTO lifecycle_settings DEFAULT VALUES;

CREATE TABLE lifecycle_state (
    singleton                boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Every tombstone with deleted_at before this may be gone. Raised before the purge
    -- it announces, never lowered.
    tombstones_purged_before timestamptz NOT NULL DEFAULT '-infinity',
    last_run_started_at      timestamptz,
    last_run_finished_at     timestamptz,
    last_run_error           text
);
INSERT INTO lifecycle_state DEFAULT VALUES;

-- The purge finds old tombstones without reading them all.
CREATE INDEX contact_tombstones_by_deleted_at ON contact_tombstones (deleted_at);
