-- Contacts: one row per (project, datasource, user). `attributes` holds every attribute
-- the user was sent (reserved `_email`, `_phone_mobile`, ... and custom ones); a null
-- sent for a key removes it, so no stored value is ever JSON null.
CREATE TABLE contacts (
    project     text        NOT NULL,
    datasource  text        NOT NULL,
    user_id     text        NOT NULL,
    attributes  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, datasource, user_id)
);

-- Events: immutable, append-only, stored once per (project, datasource, event_id).
CREATE TABLE events (
    project      text        NOT NULL,
    datasource   text        NOT NULL,
    event_id     text        NOT NULL,
    user_id      text        NOT NULL,
    event_type   text        NOT NULL,
    event_date   timestamptz NOT NULL,
    parameters   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- When the gateway received the request that carried the event.
    received_at  timestamptz NOT NULL,
    inserted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, datasource, event_id)
);

CREATE INDEX events_by_user ON events (project, datasource, user_id, event_date);
