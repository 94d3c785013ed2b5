-- The schema registry (SPEC 7): every registered version of an event type, with its JSON
-- Schema and its upcaster rules from the version before, as JSON text. A Rust function
-- upcaster is not stored (`function` says there is one; the embedding code registers it
-- again at start).

CREATE TABLE tributary_schemas (
    event_type  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    schema      TEXT,
    rules       TEXT NOT NULL,
    function    BOOLEAN NOT NULL,
    PRIMARY KEY (event_type, version)
);
