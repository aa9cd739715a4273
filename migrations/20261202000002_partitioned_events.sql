-- Events partitioned by day of receipt, retention by dropping whole partitions, and
-- deduplication that survives the partitioning (crates/ingest-worker/src/persist.rs,
-- crates/ingest-worker/src/lifecycle.rs; README "Data lifecycle").
--
-- Upgrade order: stop every worker, run this migration, start the new workers. (An old
-- worker's `ON CONFLICT (project, datasource, event_id)` has no matching index any more.)
-- Gateways keep accepting meanwhile; Kafka holds the backlog.

ALTER TABLE lifecycle_settings
    ADD COLUMN events_retention_days integer NOT NULL DEFAULT 30
        CHECK (events_retention_days BETWEEN 1 AND 3650);
ALTER TABLE lifecycle_state
    -- Every events partition below this was dropped (retention); never lowered.
    ADD COLUMN events_dropped_before timestamptz NOT NULL DEFAULT '-infinity',
    -- The upper bound of events_legacy, the table this migration found, kept whole as
    -- the partition of everything received before it.
    ADD COLUMN legacy_until timestamptz;

-- The old table becomes the partition of everything received before tomorrow (UTC), as
-- it is: no row is copied. (On a new, empty database it is dropped instead.)
ALTER TABLE events RENAME TO events_legacy;
ALTER INDEX events_pkey RENAME TO events_legacy_pkey;
ALTER INDEX events_by_user RENAME TO events_legacy_by_user;

CREATE TABLE events (
    project      text        NOT NULL,
    datasource   text        NOT NULL,
    event_id     text        NOT NULL,
    user_id      text        NOT NULL,
    event_type   text        NOT NULL,
    event_date   timestamptz NOT NULL,
    parameters   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL,
    inserted_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);
CREATE INDEX events_by_user ON events (project, datasource, user_id, event_date);
-- Rows no other partition takes (a day not created yet): never refused. The maintenance
-- job moves them into their day's partition when it creates it.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- One partition per UTC day, created ahead by the maintenance job: a plain table with
-- the partition's bound as a CHECK (so ATTACH need not scan it), the day's rows that
-- landed in the default partition moved in, then attached. ATTACH takes only a SHARE
-- UPDATE EXCLUSIVE lock on `events`, which the workers' COPY does not wait for.
CREATE FUNCTION ingest_ensure_events_partition(day date) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    part text := 'events_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('ingest:events-partitions', 0));
    -- Exists already, or inside what events_legacy holds.
    IF to_regclass(part) IS NOT NULL
       OR lo < (SELECT legacy_until FROM lifecycle_state WHERE to_regclass('events_legacy') IS NOT NULL) THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (received_at >= %L AND received_at < %L)',
                   part, part || '_bound', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE received_at >= %L AND received_at < %L
                    RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN true;
END $$;

-- Deduplication. A unique index on a partitioned table must contain the partition key,
-- and a client's retry is received later, so no index on `events` can catch it. The ids
-- are kept in `event_ids`, in generations: consecutive ranges of receipt days, each as
-- wide as the events retention when it was created. An id goes into the generation of its
-- receipt day (the primary key catches a retry in the same generation) and is looked up
-- in the generations within the retention period either side (a retry in the next one).
-- A generation is dropped once its last day is past the retention: the ids of every
-- event still stored are remembered.
CREATE TABLE event_id_generations (
    bucket     date        PRIMARY KEY,
    ends       date        NOT NULL CHECK (ends > bucket),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The ids themselves, not a hash of them: a client's ids are often ordered (sequential,
-- UUIDv7), and then the index grows at its end, as the old primary key did; a hash
-- would scatter every insert over the whole index (2.4x slower measured here).
CREATE TABLE event_ids (
    project    text NOT NULL,
    datasource text NOT NULL,
    event_id   text NOT NULL,
    bucket     date NOT NULL,
    PRIMARY KEY (project, datasource, event_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE event_ids_default PARTITION OF event_ids DEFAULT;

-- Appends generations until one ends after `through`. Rows are never changed afterwards,
-- so every reader's copy agrees.
CREATE FUNCTION ingest_ensure_event_id_generations(through date) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    last_end date;
    width integer;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('ingest:event-id-generations', 0));
    SELECT events_retention_days INTO width FROM lifecycle_settings;
    LOOP
        SELECT max(ends) INTO last_end FROM event_id_generations;
        EXIT WHEN last_end > through;
        part := 'event_ids_g' || to_char(last_end, 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I (LIKE event_ids)', part);
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (bucket = %L)', part, part || '_bound', last_end);
        EXECUTE format('ALTER TABLE event_ids ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, last_end, last_end + 1);
        INSERT INTO event_id_generations (bucket, ends) VALUES (last_end, last_end + width);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    tomorrow date := today + 1;
    cutover timestamptz := tomorrow::timestamp AT TIME ZONE 'UTC';
    width integer;
    first_day date := tomorrow;
BEGIN
    IF EXISTS (SELECT 1 FROM events_legacy) THEN
        -- One sequential scan of the old table validates the bound (the workers are stopped).
        EXECUTE format('ALTER TABLE events_legacy ADD CONSTRAINT events_legacy_bound CHECK (received_at < %L)',
                       cutover);
        EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                       cutover);
        UPDATE lifecycle_state SET legacy_until = cutover;
    ELSE
        -- A new database: nothing to keep, days from today.
        DROP TABLE events_legacy;
        first_day := today;
    END IF;

    -- The first generation holds every id of the old table and of the retention period
    -- after it; later ones are appended as time goes on.
    SELECT events_retention_days INTO width FROM lifecycle_settings;
    CREATE TABLE event_ids_g00010101 (LIKE event_ids);
    ALTER TABLE event_ids_g00010101 ADD CONSTRAINT event_ids_g00010101_bound CHECK (bucket = '0001-01-01');
    ALTER TABLE event_ids ATTACH PARTITION event_ids_g00010101 FOR VALUES FROM ('0001-01-01') TO ('0001-01-02');
    INSERT INTO event_id_generations (bucket, ends) VALUES ('0001-01-01', first_day + width);
    IF to_regclass('events_legacy') IS NOT NULL THEN
        INSERT INTO event_ids (project, datasource, event_id, bucket)
        SELECT project, datasource, event_id, '0001-01-01' FROM events_legacy;
    END IF;

    FOR d IN 0..7 LOOP
        PERFORM ingest_ensure_events_partition(first_day + d);
    END LOOP;
    PERFORM ingest_ensure_event_id_generations(first_day + 7);
END $$;
