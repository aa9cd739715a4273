-- Tenancy: projects, datasources, per-endpoint rate limits, API tokens, and the shared
-- rate-limit windows that gateway instances draw quota from.

CREATE TABLE projects (
    id          text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE datasources (
    project     text        NOT NULL REFERENCES projects (id),
    id          text        NOT NULL CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, id)
);

-- Requests per minute per (datasource, endpoint). No row means the default (600).
CREATE TABLE rate_limits (
    project              text    NOT NULL,
    datasource           text    NOT NULL,
    endpoint             text    NOT NULL
        CHECK (endpoint IN ('stream', 'contacts', 'events', 'contacts_delete', 'specs')),
    requests_per_minute  integer NOT NULL CHECK (requests_per_minute > 0),
    PRIMARY KEY (project, datasource, endpoint),
    FOREIGN KEY (project, datasource) REFERENCES datasources (project, id) ON DELETE CASCADE
);

-- Tokens are stored only as the SHA-256 of the secret (a 256-bit random string, so a
-- fast hash is enough). `datasource` NULL means the token may write to every
-- datasource of its project.
CREATE TABLE api_tokens (
    id              text        PRIMARY KEY,
    project         text        NOT NULL REFERENCES projects (id),
    datasource      text,
    secret_hash     bytea       NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    display_prefix  text        NOT NULL,
    name            text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    FOREIGN KEY (project, datasource) REFERENCES datasources (project, id)
);
CREATE INDEX api_tokens_by_project ON api_tokens (project, datasource);

-- Quota requested by gateway instances per fixed one-minute window. An instance adds
-- the chunk it wants with one atomic upsert and reads back the new total; what it was
-- granted is min(chunk, limit - (total - chunk)), so the sum granted to all instances
-- never exceeds the limit, whatever they request concurrently.
CREATE TABLE rate_limit_windows (
    project       text        NOT NULL,
    datasource    text        NOT NULL,
    endpoint      text        NOT NULL,
    window_start  timestamptz NOT NULL,
    requested     bigint      NOT NULL,
    PRIMARY KEY (project, datasource, endpoint, window_start)
);

-- Every change that can alter an authentication or limit decision is announced on the
-- channel `ingest_tenancy`, whoever makes it (ingestctl or plain SQL), so gateways drop
-- what they cached within moments.
CREATE FUNCTION ingest_tenancy_key(tbl text, r record) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF tbl = 'api_tokens' THEN
        RETURN 'token:' || encode(r.secret_hash, 'hex');
    ELSIF tbl = 'datasources' THEN
        RETURN 'datasource:' || r.project || '/' || r.id;
    ELSE -- rate_limits
        RETURN 'datasource:' || r.project || '/' || r.datasource;
    END IF;
END $$;

CREATE FUNCTION ingest_notify_tenancy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_key text;
    new_key text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_key := ingest_tenancy_key(TG_TABLE_NAME, OLD);
        PERFORM pg_notify('ingest_tenancy', old_key);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_key := ingest_tenancy_key(TG_TABLE_NAME, NEW);
        -- An UPDATE that changed the key announces both the old and the new one.
        IF new_key IS DISTINCT FROM old_key THEN
            PERFORM pg_notify('ingest_tenancy', new_key);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- TRUNCATE fires no row triggers: tell gateways to drop everything.
CREATE FUNCTION ingest_notify_tenancy_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingest_tenancy', 'reset');
    RETURN NULL;
END $$;

CREATE TRIGGER api_tokens_notify AFTER INSERT OR UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER datasources_notify AFTER INSERT OR UPDATE OR DELETE ON datasources
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER rate_limits_notify AFTER INSERT OR UPDATE OR DELETE ON rate_limits
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER api_tokens_reset AFTER TRUNCATE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
CREATE TRIGGER datasources_reset AFTER TRUNCATE ON datasources
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
CREATE TRIGGER rate_limits_reset AFTER TRUNCATE ON rate_limits
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
