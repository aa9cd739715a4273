-- What a datasource declares about its data. Validation checks custom attributes and
-- event parameters against these when declared; with no event types declared, any
-- event type is accepted.

CREATE TABLE attribute_specs (
    project     text    NOT NULL,
    datasource  text    NOT NULL,
    name        text    NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    data_type   text    NOT NULL CHECK (data_type IN ('string', 'number', 'boolean')),
    -- NULL: a single value; n: a multivalue attribute of at most n values.
    max_values  integer CHECK (max_values BETWEEN 1 AND 100),
    PRIMARY KEY (project, datasource, name),
    FOREIGN KEY (project, datasource) REFERENCES datasources (project, id) ON DELETE CASCADE
);

CREATE TABLE event_types (
    project     text NOT NULL,
    datasource  text NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    PRIMARY KEY (project, datasource, name),
    FOREIGN KEY (project, datasource) REFERENCES datasources (project, id) ON DELETE CASCADE
);

CREATE TABLE event_parameter_specs (
    project     text    NOT NULL,
    datasource  text    NOT NULL,
    event_type  text    NOT NULL,
    name        text    NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    data_type   text    NOT NULL CHECK (data_type IN ('string', 'number', 'boolean')),
    max_values  integer CHECK (max_values BETWEEN 1 AND 100),
    required    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (project, datasource, event_type, name),
    FOREIGN KEY (project, datasource, event_type)
        REFERENCES event_types (project, datasource, name) ON DELETE CASCADE
);

-- Changes announce the datasource (the gateway caches specs with its limits).
-- ingest_tenancy_key's last branch reads `project` and `datasource`, which these
-- tables have.
CREATE TRIGGER attribute_specs_notify AFTER INSERT OR UPDATE OR DELETE ON attribute_specs
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER event_types_notify AFTER INSERT OR UPDATE OR DELETE ON event_types
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER event_parameter_specs_notify AFTER INSERT OR UPDATE OR DELETE ON event_parameter_specs
    FOR EACH ROW EXECUTE FUNCTION ingest_notify_tenancy();
CREATE TRIGGER attribute_specs_reset AFTER TRUNCATE ON attribute_specs
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
CREATE TRIGGER event_types_reset AFTER TRUNCATE ON event_types
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
CREATE TRIGGER event_parameter_specs_reset AFTER TRUNCATE ON event_parameter_specs
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_notify_tenancy_reset();
