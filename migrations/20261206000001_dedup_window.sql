-- Deduplication at scale (crates/ingest-worker/src/persist/events.rs; README "Data
-- lifecycle"): ids in 16 bytes, and a deduplication window of its own.
--
-- The index of `event_ids` over random ids is the part of storing an event whose cost
-- grows with what is stored once it outgrows memory. Two things bound it now:
--
-- 1. Each id is kept as a `uuid`, 16 bytes instead of 37 of text:
--    - a UUID in canonical form (lowercase, hyphenated) whose version digit is not 8 is
--      itself: the 16 bytes it spells (UUIDv4 from Segment's SDKs, UUIDv7 from this
--      project's clients);
--    - any other id (other text, an uppercase UUID, a UUIDv8) is the first 16 bytes of a
--      SHA-256 of it, marked as a UUIDv8 (version 8, RFC 9562 variant). Such a key is
--      never the key of a UUID kept as itself (those never have version 8), and two ids
--      share a key only if SHA-256 truncated to 122 bits collides.
--    The worker computes the key in Rust; `ingest_event_key` computes the same in SQL (for
--    this migration, erasures and lookups by id), and a test holds the two equal.
-- 2. Ids are remembered for the deduplication window (`dedup_window_hours`, default 168:
--    seven days, Kafka's default retention, so every message a replay can still read is
--    deduplicated), no longer for the whole events retention. Generations are as wide as
--    the window (hours, no longer days): an id is looked up in its own generation and
--    the one before, and a generation is dropped an hour after the window has passed its
--    end.
--
-- Upgrade order: stop every worker, run this migration, start the new workers (an old
-- worker writes text ids). Gateways keep accepting meanwhile; Kafka holds the backlog.
-- Every id is copied once into the new table: minutes per hundred million ids.

CREATE FUNCTION ingest_event_key(event_id text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN event_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-79a-f][0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$'
            THEN event_id::uuid
        ELSE encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 128),
                             8, (get_byte(h, 8) & 63) | 128), 'hex')::uuid
    END
    FROM (SELECT substring(sha256(convert_to('ingest:event-id:' || event_id, 'UTF8'))
                           FROM 1 FOR 16) AS h) AS digest
$$;

ALTER TABLE lifecycle_settings
    ADD COLUMN dedup_window_hours integer NOT NULL DEFAULT 168
        CHECK (dedup_window_hours BETWEEN 1 AND 87600);
ALTER TABLE lifecycle_state
    -- Ids of events received before this may be forgotten (their generation dropped): a
    -- replay from before it would store them again. Never lowered.
    ADD COLUMN event_ids_dropped_before timestamptz NOT NULL DEFAULT '-infinity';

-- The text ids, kept aside while the new table is filled.
ALTER TABLE event_ids RENAME TO event_ids_text;
ALTER TABLE event_ids_default RENAME TO event_ids_text_default;
ALTER TABLE event_id_generations RENAME TO event_id_generations_days;
ALTER INDEX event_id_generations_pkey RENAME TO event_id_generations_days_pkey;
DROP FUNCTION ingest_ensure_event_id_generations(date);

CREATE TABLE event_id_generations (
    bucket     timestamptz PRIMARY KEY,
    ends       timestamptz NOT NULL CHECK (ends > bucket),
    -- The partition of `event_ids` holding its ids.
    part       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE event_ids (
    project          text        NOT NULL,
    datasource       text        NOT NULL,
    event_key        uuid        NOT NULL,
    -- The generation: its first instant.
    bucket           timestamptz NOT NULL,
    -- The latest receipt of any copy of the event (NULL: only the stored copy's own).
    last_received_at timestamptz,
    PRIMARY KEY (project, datasource, event_key, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE event_ids_default PARTITION OF event_ids DEFAULT;

-- A generation [lo, hi): its own partition of `event_ids`, all its rows with bucket = lo.
CREATE FUNCTION ingest_create_event_id_generation(lo timestamptz, hi timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    part text := 'event_ids_g' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE event_ids)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (bucket = %L)', part, part || '_bound', lo);
    EXECUTE format('ALTER TABLE event_ids ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, lo + interval '1 microsecond');
    INSERT INTO event_id_generations (bucket, ends, part) VALUES (lo, hi, part);
END $$;

-- Appends generations, each as wide as the window, until one ends after `through`. Rows
-- are never changed afterwards, so every reader's copy agrees.
CREATE FUNCTION ingest_ensure_event_id_generations(through timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    last_end timestamptz;
    width interval;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('ingest:event-id-generations', 0));
    SELECT make_interval(hours => dedup_window_hours) INTO width FROM lifecycle_settings;
    LOOP
        SELECT max(ends) INTO last_end FROM event_id_generations;
        EXIT WHEN last_end > through;
        PERFORM ingest_create_event_id_generation(last_end, last_end + width);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- The generations there were, as they were (the first from the beginning of time), and
-- their ids with their keys; then the text ids go.
DO $$
DECLARE
    g record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM event_ids_text) THEN
        -- No id yet (a new database): one generation from the beginning of time to a
        -- window from now, then the usual ones.
        PERFORM ingest_create_event_id_generation(
            '0001-01-01 00:00:00+00',
            date_trunc('hour', now()) + make_interval(hours => (SELECT dedup_window_hours
                                                                  FROM lifecycle_settings)));
        RETURN;
    END IF;
    FOR g IN SELECT bucket, ends FROM event_id_generations_days ORDER BY bucket LOOP
        PERFORM ingest_create_event_id_generation(g.bucket::timestamp AT TIME ZONE 'UTC',
                                                  g.ends::timestamp AT TIME ZONE 'UTC');
        INSERT INTO event_ids (project, datasource, event_key, bucket, last_received_at)
        SELECT project, datasource, ingest_event_key(event_id),
               g.bucket::timestamp AT TIME ZONE 'UTC', last_received_at
          FROM event_ids_text WHERE bucket = g.bucket;
    END LOOP;
    INSERT INTO event_ids (project, datasource, event_key, bucket, last_received_at)
    SELECT project, datasource, ingest_event_key(event_id),
           bucket::timestamp AT TIME ZONE 'UTC', last_received_at
      FROM event_ids_text_default;
END $$;
DROP TABLE event_ids_text;
DROP TABLE event_id_generations_days;
